"""The pytest plugin: declared as an entry point, loaded once, and safe without pytest-asyncio.

Editable installs register entry points only when reinstalled, so these tests load the
plugin the way pytest does from a distribution of their own (a `.dist-info` on the path)
in a separate pytest run, instead of relying on the installed metadata.
"""

import ast
import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "pipecat_warm_transfer.testing.pytest_plugin"
FIXTURES = {"scripted_humans", "livekit_emulator", "offline_call"}


def entry_points() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return project["entry-points"]["pytest11"]


def fixture_names(path: Path) -> set[str]:
    """Functions decorated as fixtures (`@pytest.fixture`, `@x.fixture(...)`, `@_async_fixture`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                name = target.attr if isinstance(target, ast.Attribute) else target.id
                if name in ("fixture", "_async_fixture"):
                    names.add(node.name)
    return names


def run_pytest(
    tmp_path: Path, test_source: str, *args: str, path=()
) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(test_source, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, path), str(ROOT)])
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore"]
    command += args
    return subprocess.run(
        [*command, "test_probe.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def fake_distribution(tmp_path: Path) -> Path:
    """A distribution declaring the pyproject's pytest11 entry points, as pip would install."""
    site = tmp_path / "site"
    info = site / "wt_plugin_probe-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wt-plugin-probe\nVersion: 0\n")
    lines = [f"{name} = {value}" for name, value in entry_points().items()]
    (info / "entry_points.txt").write_text("[pytest11]\n" + "\n".join(lines) + "\n")
    return site


LOADED_ONCE = f"""
import pytest

def test_loaded_once_from_the_entry_point(request, scripted_humans):
    manager = request.config.pluginmanager
    plugin = manager.get_plugin("{PLUGIN}")
    assert plugin is not None and plugin.__name__ == "{PLUGIN}"
    assert [p for p in manager.get_plugins() if p is plugin] == [plugin]
    assert plugin in [p for p, _dist in manager.list_plugin_distinfo()]
    assert "+15550100" in scripted_humans
"""


def test_the_entry_point_is_declared_and_names_the_plugin_module():
    points = entry_points()
    assert points == {PLUGIN: PLUGIN}  # named as its module: `-p` and autoload agree
    module = importlib.import_module(points[PLUGIN])
    assert FIXTURES <= fixture_names(Path(module.__file__))


def test_the_plugins_fixtures_do_not_clash_with_the_suites():
    ours = set()
    for path in (ROOT / "tests").glob("*.py"):
        ours |= fixture_names(path)
    assert ours, "no fixture found: the scan is broken"
    assert not ours & FIXTURES


def test_pytest_loads_the_plugin_from_the_entry_point_once_even_with_p(tmp_path):
    site = fake_distribution(tmp_path)
    autoloaded = run_pytest(tmp_path, LOADED_ONCE, path=[site])
    assert autoloaded.returncode == 0, autoloaded.stdout + autoloaded.stderr
    both = run_pytest(tmp_path, LOADED_ONCE, "-p", PLUGIN, path=[site])
    assert both.returncode == 0, both.stdout + both.stderr


def test_without_pytest_asyncio_the_async_fixtures_say_what_is_missing(tmp_path):
    stub = tmp_path / "stub"
    (stub / "pytest_asyncio").mkdir(parents=True)
    (stub / "pytest_asyncio" / "__init__.py").write_text('raise ImportError("not installed")\n')
    source = """
def test_a_sync_fixture_works(scripted_humans):
    assert scripted_humans

def test_an_async_fixture_says_why(offline_call):
    pass
"""
    run = run_pytest(tmp_path, source, "-p", "no:asyncio", "-p", PLUGIN, path=[stub])
    output = run.stdout + run.stderr
    assert "1 passed" in output and "1 error" in output, output
    assert "'offline_call' fixture of pipecat-warm-transfer is async" in output, output
    assert "install pytest-asyncio" in output, output

"""The README's recipe runs as the pytest test a user would write, and its transfer connects.

The code block after the `readme-recipe` marker is written to a directory of its own and
run by pytest in a separate process, as in a user's project: no ini file (pytest-asyncio's
strict mode), the fixtures from the plugin. A `conftest.py` beside it records what the
`offline_call` fixture saw, so this test checks the outcome itself, not only that the
recipe's own assertions passed.
"""

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "pipecat_warm_transfer.testing.pytest_plugin"
MARKER = re.compile(r"<!-- readme-recipe: (\S+\.py)[^>]*-->\n```python\n(.*?)\n```", re.DOTALL)
#: The recipe's test must stay quick: a whole transfer is about 10 s of real time.
RECIPE_SECS = 30.0

OBSERVER = """
import json, os
import pytest

@pytest.fixture(autouse=True)
def _record_the_call(offline_call):
    yield
    with open(os.environ["RECIPE_CALL_JSON"], "w") as f:
        json.dump(
            {
                "outcomes": [r.outcome.value for r in offline_call.results],
                "events": [e["event"] for e in offline_call.events],
                "leaks": offline_call.leaks,
            },
            f,
        )
"""


def recipe() -> tuple[str, str]:
    found = MARKER.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(found) == 1, "README.md: expected one code block after a readme-recipe marker"
    return found[0]


def test_the_readme_recipe_passes_and_its_transfer_connects(tmp_path):
    name, code = recipe()
    (tmp_path / name).write_text(code + "\n", encoding="utf-8")
    (tmp_path / "conftest.py").write_text(OBSERVER, encoding="utf-8")
    seen, report = tmp_path / "call.json", tmp_path / "junit.xml"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["RECIPE_CALL_JSON"] = str(seen)
    run = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", PLUGIN, "-p", "no:cacheprovider"),
            *("-W", "ignore", f"--junitxml={report}", name),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "1 passed" in run.stdout, run.stdout

    call = json.loads(seen.read_text())
    assert call["outcomes"] == ["connected"], call
    assert "connected" in call["events"] and "teardown_done" in call["events"], call
    assert call["leaks"] is not None and not any(call["leaks"].values()), call

    case = ET.parse(report).getroot().find(".//testcase")
    assert float(case.get("time")) < RECIPE_SECS, case.attrib

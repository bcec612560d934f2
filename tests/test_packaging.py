"""What a published package carries agrees with itself: the LICENSE file with pyproject's
license, the CHANGELOG with its version, the README's tested-with line with the Pipecat
actually installed (so that line cannot go stale silently)."""

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

#: The first line of each license's canonical text, by SPDX id.
LICENSE_TITLES = {"BSD-2-Clause": "BSD 2-Clause License"}


def test_the_license_file_is_the_declared_license():
    assert "LICENSE" in PROJECT["license-files"]
    lines = (ROOT / "LICENSE").read_text(encoding="utf-8").splitlines()
    assert lines[0] == LICENSE_TITLES[PROJECT["license"]]
    assert "Copyright (c) 2026, pipecat-warm-transfer contributors" in lines


def test_the_changelog_has_a_section_for_this_version():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert PROJECT["version"] in headings


def test_the_readme_names_the_installed_pipecat():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    tested = re.search(r"^Tested with Pipecat (\S+) \(pipecat-ai\[livekit\]\)", text, re.MULTILINE)
    assert tested, "the README has no 'Tested with Pipecat X.Y.Z (pipecat-ai[livekit])' line"
    assert tested[1] == version("pipecat-ai")


def test_the_package_imports_pipecat_only_when_a_name_is_used():
    """The command sets up its logging before Pipecat is imported (and logs its banner)."""
    code = (
        "import sys, pipecat_warm_transfer as p, pipecat_warm_transfer.cli;"
        "print('pipecat' in sys.modules);"
        "missing = [n for n in p.__all__ if getattr(p, n, None) is None];"
        "print(missing, sorted(set(p.__all__) - {'__version__'}) == sorted(p._EXPORTS))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["False", "[] True"]

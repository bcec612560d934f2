"""Re-run the last report's survivors and timeouts against today's tests.

`python -m mutation.recheck` (about 2 min a mutant). After tests were added for the
survivors of `mutation/last-report.md`, this says which of them the tests now kill,
without drawing and running a new sample (a new sample of changed code is not a
before/after pair). Mutants the report counted killed stay killed: tests were only
added. It appends a "Re-check" section to the report with the score before and after.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python mutation/recheck.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mutation.common import (
    TOOL_BROKE,
    ToolError,
    baseline,
    git_describe,
    make_scratch,
    minutes,
    pytest_args,
    run_tests,
)
from mutation.run import REPORT, apply_spec

_SCORE = re.compile(r"\*\*Score: [^*]+\*\*: (\d+) killed / \(\d+ killed \+ (\d+) survived\)")
_SECTION = re.compile(r"^## (Survivors|Timeouts) \(\d+\)$", re.MULTILINE)
_SPEC = re.compile(r"--reproduce (\S+?)`")


def report_mutants(text: str) -> tuple[int, int, list[tuple[str, str]]]:
    """The report's killed and survived counts, and its (kind, spec) to re-run."""
    score = _SCORE.search(text)
    if score is None:
        raise ToolError("the report has no score line (was it made by mutation.run?)")
    sections = list(_SECTION.finditer(text))
    mutants = []
    for i, section in enumerate(sections):
        end = sections[i + 1].start() if i + 1 < len(sections) else len(text)
        body = text[section.end() : end].split("\n## ", 1)[0]
        kind = "survived" if section.group(1) == "Survivors" else "timeout"
        mutants += [(kind, spec) for spec in _SPEC.findall(body)]
    return int(score.group(1)), int(score.group(2)), mutants


def recheck(report: Path, factor: float) -> str:
    """Re-run each survivor and timeout; the section to append to the report."""
    killed, survived, mutants = report_mutants(report.read_text())
    commit, date = git_describe(), time.strftime("%Y-%m-%d %H:%M")
    started = time.monotonic()
    scratch = make_scratch("wt-recheck-")
    try:
        print("mutation: baseline run of the tests ...", flush=True)
        base = baseline(scratch, pytest_args())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    timeout = max(60.0, factor * base.secs)
    rows, now = [], {"killed": 0, "survived": 0, "timeout": 0}
    for i, (before, spec) in enumerate(mutants, 1):
        scratch = make_scratch("wt-recheck-")
        try:
            apply_spec(scratch, spec)
            run = run_tests(scratch, pytest_args(), timeout)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        kind = "survived" if run.passed else "timeout" if run.returncode is None else "killed"
        now[kind] += 1
        by = f" by `{run.first_failure()}`" if kind == "killed" else ""
        rows.append(f"- `{spec}`: {before} → **{kind}**{by}")
        print(f"[{i}/{len(mutants)}] {spec}: {before} -> {kind}{by}", flush=True)
    was_timeout = sum(kind == "timeout" for kind, _ in mutants)
    after_killed = killed + now["killed"]
    after_survived = survived - (len(mutants) - was_timeout) + now["survived"]
    lines = [
        "",
        f"## Re-check ({date}, commit {commit})",
        "",
        f"`python -m mutation.recheck`: the {len(mutants)} survivors and timeouts above, "
        f"against today's tests (baseline {base.secs:.0f} s, timeout {timeout:.0f} s, "
        f"{minutes(time.monotonic() - started)} in all).",
        "",
        f"**Score before: {killed / max(1, killed + survived):.0%}** ({killed} / "
        f"{killed + survived}); **after: {after_killed / max(1, after_killed + after_survived):.0%}** "
        f"({after_killed} / {after_killed + after_survived}; timeouts still apart: "
        f"{now['timeout']}).",
        "",
        *rows,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Re-check and append to the report; 2 if the tool broke."""
    parser = argparse.ArgumentParser(prog="python -m mutation.recheck", description=__doc__)
    parser.add_argument("--report", type=Path, default=REPORT, help="the report to re-check")
    parser.add_argument(
        "--timeout-factor", type=float, default=3.0, help="per-mutant timeout / baseline time"
    )
    args = parser.parse_args(argv)
    try:
        section = recheck(args.report, args.timeout_factor)
    except ToolError as e:
        print(f"mutation: {e}", file=sys.stderr)
        return TOOL_BROKE
    with args.report.open("a", encoding="utf-8") as f:
        f.write(section)
    print(f"\n{section}\nmutation: appended to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

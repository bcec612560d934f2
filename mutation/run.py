"""Sampled mutation testing of the core with cosmic-ray: `python -m mutation.run`.

cosmic-ray finds about 3,500 mutants in the core modules, and each needs whole-call
tests that run in real time (about a minute), so a full run would take days. This
makes cosmic-ray's session as usual, skips what its filters and ours rule out (as its
`cr-filter-*` tools do, by a SKIPPED result in the session), then keeps a seeded random
sample of N of the rest and marks the others skipped too; `cosmic-ray exec` runs the
sample. The score is a report, not a gate, unless `--min-score` is given.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import random
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python mutation/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mutation.common import (
    CORE_MODULES,
    DESELECTED,
    FAST_TESTS,
    FUZZ_RUNS,
    REPO,
    TOOL_BROKE,
    ToolError,
    baseline,
    command_line,
    git_describe,
    kill_group,
    make_scratch,
    minutes,
    pytest_args,
    scratch_env,
    tool_path,
)

try:
    from cosmic_ray.config import ConfigDict, serialize_config
    from cosmic_ray.mutating import apply_mutation
    from cosmic_ray.plugins import get_operator
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult
except ImportError:
    print("mutation: cosmic-ray is not installed: `make mutate` installs it", file=sys.stderr)
    sys.exit(TOOL_BROKE)

REPORT = REPO / "mutation" / "last-report.md"

#: Operators whose mutants are equivalent or repeat another's (cosmic-ray's
#: operators-filter; regular expressions matched at the start of the operator's name).
EXCLUDED_OPERATORS = (
    # `is None` -> `== None`, and `==` -> `is` on enum members and interned strings: the
    # same program (where `==` -> `is` does differ, `==` -> `!=` at the same spot covers it).
    r"core/ReplaceComparisonOperator_(Is_Eq|IsNot_NotEq|Eq_Is|NotEq_IsNot)$",
    # Each arithmetic operator becomes ten others: `**`, `%`, the shifts and the bitwise
    # ones say nothing that +, -, *, / and // at the same spot do not.
    r"core/ReplaceBinaryOperator_[A-Za-z]+_(Pow|Mod|LShift|RShift|BitOr|BitAnd|BitXor)$",
)

#: hold_music_mixer.py is mutated on its control path only (enable, disable, start after
#: speech, parking with the shared engine, waking, settings): these functions are its
#: sample arithmetic (ramps, fades, ducking, the steady-state slices), loading and value
#: checks, left with its module constants to the mixer's own tests and benchmarks.
MIXER = "pipecat_warm_transfer/audio/hold_music_mixer.py"
MIXER_DSP = frozenset(
    {
        "_validate_duck",
        "_validate_fade",
        "_ramp",
        "start",
        "_load",
        "_mix_steady",
        "_is_speech",
        "_advance",
        "_gain_ramp",
        "_mix_general",
    }
)

#: Bound on cosmic-ray's bookkeeping per mutant, beyond the tests' timeout.
OVERHEAD_SECS = 60.0
#: How often the session is read for progress.
POLL_SECS = 5.0


@dataclass
class Outcome:
    """One sampled mutant's result, as the report needs it."""

    module: str
    line: int
    operator: str
    occurrence: int
    kind: str  # killed, survived, timeout, incompetent, no-test
    diff: str

    @property
    def spec(self) -> str:
        """What `--reproduce` takes."""
        return f"{self.module}:{self.operator}:{self.occurrence}"

    def one_line_diff(self) -> str:
        """The changed lines as `old` -> `new`, on one line."""
        old, new = [], []
        for line in self.diff.splitlines():
            if line.startswith(("---", "+++")):
                continue
            if line.startswith("-"):
                old.append(line[1:].strip())
            elif line.startswith("+"):
                new.append(line[1:].strip())
        return f"`{_clip(' / '.join(old))}` → `{_clip(' / '.join(new))}`"


def _clip(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _kind(result) -> str:
    """killed, survived, timeout (cosmic-ray counts it killed), incompetent, no-test, skipped."""
    if result.worker_outcome == WorkerOutcome.SKIPPED:
        return "skipped"
    if result.worker_outcome == WorkerOutcome.NO_TEST:
        return "no-test"
    if result.test_outcome == TestOutcome.SURVIVED:
        return "survived"
    if result.test_outcome == TestOutcome.KILLED:
        return "timeout" if result.output == "timeout" else "killed"
    return "incompetent"


#
# The session: init, filters, sample
#


def _write_config(scratch: Path, timeout: float) -> Path:
    config = ConfigDict(
        {
            "module-path": list(CORE_MODULES),
            "timeout": float(round(timeout)),
            "excluded-modules": [],
            "test-command": command_line(pytest_args()),
            "distributor": {"name": "local"},
            "filters": {"operators-filter": {"exclude-operators": list(EXCLUDED_OPERATORS)}},
        }
    )
    path = scratch / ".mutation" / "cosmic-ray.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(serialize_config(config))
    return path


def _run_tool(scratch: Path, *args: str):
    proc = subprocess.run(args, cwd=scratch, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def _pending(session: Path) -> int:
    with use_db(str(session), WorkDB.Mode.open) as db:
        return len(db.pending_work_items)


def _out_of_scope(spec) -> bool:
    return str(spec.module_path) == MIXER and (
        spec.definition_name is None or spec.definition_name in MIXER_DSP
    )


def _equivalent_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where a mutant changes no behaviour: type annotations, and what is logged.

    Annotations are never evaluated (every core module has `from __future__ import
    annotations`); a `logger.*(...)` call's arguments only change a log line.
    """
    lines = source.splitlines()

    def pos(line: int, byte_col: int) -> tuple[int, int]:
        # ast counts UTF-8 bytes, cosmic-ray (parso) counts characters.
        text = lines[line - 1].encode()[:byte_col].decode(errors="ignore")
        return line, len(text)

    nodes = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
            nodes += [p.annotation for p in params if p is not None and p.annotation]
            nodes += [node.returns] if node.returns else []
        elif isinstance(node, ast.AnnAssign):
            nodes.append(node.annotation)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "logger"
        ):
            nodes += [*node.args, *(k.value for k in node.keywords)]
    return [
        (pos(n.lineno, n.col_offset), pos(n.end_lineno, n.end_col_offset))
        for n in nodes
        if n.end_lineno is not None
    ]


def _skip(db, job_ids: list[str], why: str):
    if job_ids:
        db.set_multiple_results(
            job_ids, WorkResult(output=f"Filtered {why}", worker_outcome=WorkerOutcome.SKIPPED)
        )


def _own_filters(scratch: Path, session: Path) -> tuple[int, int]:
    """Skip the mixer's DSP and the equivalent spots; (out of scope, equivalent) counts."""
    spans = {m: _equivalent_spans((scratch / m).read_text()) for m in CORE_MODULES}
    scope, equivalent = [], []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in db.pending_work_items:
            spec = item.mutations[0]
            if _out_of_scope(spec):
                scope.append(item.job_id)
            elif any(
                start <= spec.start_pos and spec.end_pos <= end
                for start, end in spans[str(spec.module_path)]
            ):
                equivalent.append(item.job_id)
        _skip(db, scope, "scope: mixer DSP")
        _skip(db, equivalent, "equivalent: annotation or log text")
    return len(scope), len(equivalent)


def _sample(session: Path, n: int, seed: int) -> int:
    """Keep a seeded sample of `n` pending work items, skip the rest; the sample's size.

    Sorted first (job ids are random uuids): the same code and seed draw the same mutants.
    """
    with use_db(str(session), WorkDB.Mode.open) as db:
        pending = sorted(
            db.pending_work_items,
            key=lambda w: (
                str(w.mutations[0].module_path),
                w.mutations[0].operator_name,
                w.mutations[0].occurrence,
            ),
        )
        chosen = {w.job_id for w in random.Random(seed).sample(pending, min(n, len(pending)))}
        _skip(db, [w.job_id for w in pending if w.job_id not in chosen], "sample")
    return len(chosen)


#
# Execution with progress
#


def _outcomes(session: Path) -> list[Outcome]:
    with use_db(str(session), WorkDB.Mode.open) as db:
        done = db.completed_work_items
    outcomes = []
    for item, result in done:
        kind = _kind(result)
        if kind == "skipped":
            continue
        spec = item.mutations[0]
        outcomes.append(
            Outcome(
                module=str(spec.module_path),
                line=spec.start_pos[0],
                operator=spec.operator_name,
                occurrence=spec.occurrence,
                kind=kind,
                diff=result.diff or "",
            )
        )
    return outcomes


def _execute(scratch: Path, config: Path, session: Path, n: int, timeout: float):
    """`cosmic-ray exec` the sample, printing progress; bounded by n x (timeout + overhead)."""
    log_path = scratch / ".mutation" / "exec.log"
    started = time.monotonic()
    bound = n * (timeout + OVERHEAD_SECS) + 120.0
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [tool_path("cosmic-ray"), "exec", str(config), str(session)],
            cwd=scratch,
            env=scratch_env(scratch),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            reported = 0
            while proc.poll() is None:
                time.sleep(POLL_SECS)
                if time.monotonic() - started > bound:
                    raise ToolError(f"cosmic-ray exec ran past its bound ({minutes(bound)})")
                try:
                    outcomes = _outcomes(session)
                except Exception:  # the session is being written: read it next time
                    continue
                if len(outcomes) != reported:
                    reported = len(outcomes)
                    _print_progress(outcomes, n, time.monotonic() - started)
        finally:
            if proc.poll() is None:
                kill_group(proc)
                proc.wait()
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise ToolError(f"cosmic-ray exec failed ({proc.returncode}):\n{tail}")


def _print_progress(outcomes: list[Outcome], n: int, elapsed: float):
    counts = Counter(o.kind for o in outcomes)
    done = len(outcomes)
    eta = elapsed / done * (n - done)
    extra = "".join(
        f", {counts[k]} {k}" for k in ("timeout", "incompetent", "no-test") if counts[k]
    )
    print(
        f"[{done}/{n}] killed {counts['killed']}, survived {counts['survived']}{extra}"
        f" ({minutes(elapsed)} elapsed, ETA {minutes(eta)})",
        flush=True,
    )


#
# The report
#


def _score(outcomes: list[Outcome]) -> float | None:
    killed = sum(o.kind == "killed" for o in outcomes)
    survived = sum(o.kind == "survived" for o in outcomes)
    return killed / (killed + survived) if killed + survived else None


def _report(outcomes: list[Outcome], facts: dict) -> str:
    counts = Counter(o.kind for o in outcomes)
    score = _score(outcomes)
    score_text = f"{score:.0%}" if score is not None else "n/a"
    lines = [
        "# Mutation testing: the last sampled run",
        "",
        f"Made by `python -m mutation.run --mutants {facts['n']} --seed {facts['seed']}` "
        f"on {facts['date']}, commit {facts['commit']}.",
        "",
        f"**Score: {score_text}**: {counts['killed']} killed / "
        f"({counts['killed']} killed + {counts['survived']} survived), "
        f"of {len(outcomes)} sampled mutants.",
        "",
        f"- Timeouts: {counts['timeout']}, not in the score. A mutant whose tests run past "
        f"{facts['timeout']:.0f} s (3x the unmutated {facts['baseline']:.0f} s) is stopped; "
        "cosmic-ray counts it killed. It is usually a hang the mutant caused, but on a busy "
        "machine it can be a slow pass, so timeouts are listed apart.",
    ]
    if counts["incompetent"] or counts["no-test"]:
        lines.append(
            f"- Not run: {counts['incompetent']} incompetent (cosmic-ray could not apply or "
            f"test the mutant), {counts['no-test']} no-test."
        )
    lines += [
        f"- Population: {facts['total']} cosmic-ray mutants in {len(CORE_MODULES)} modules; "
        f"filters skipped {facts['pragma']} (`# pragma: no mutate`), {facts['operators']} "
        f"(operators), {facts['scope']} (mixer DSP), {facts['equivalent']} (annotations, "
        f"log text); the sample ({facts['sampled']}, seed {facts['seed']}) is drawn from the "
        f"remaining {facts['eligible']}.",
        f"- Tests per mutant: mutation.common.FAST_TESTS ({len(FAST_TESTS)} entries, "
        f"{len(DESELECTED)} deselected, {FUZZ_RUNS} fault-suite seeds), `-x -n 2`.",
        f"- Wall time: {minutes(facts['wall'])}.",
        "",
        "## Per module",
        "",
        "| module | sampled | killed | survived | timeout | other | score |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_module = defaultdict(list)
    for o in outcomes:
        by_module[o.module].append(o)
    for module in CORE_MODULES:
        mine = by_module.get(module, [])
        c = Counter(o.kind for o in mine)
        s = _score(mine)
        lines.append(
            f"| {module.removeprefix('pipecat_warm_transfer/')} | {len(mine)} | {c['killed']} "
            f"| {c['survived']} | {c['timeout']} | {c['incompetent'] + c['no-test']} "
            f"| {f'{s:.0%}' if s is not None else '-'} |"
        )
    for kind, title in (("survived", "Survivors"), ("timeout", "Timeouts")):
        picked = sorted((o for o in outcomes if o.kind == kind), key=lambda o: (o.module, o.line))
        lines += ["", f"## {title} ({len(picked)})", ""]
        lines += [
            f"- `{o.module.removeprefix('pipecat_warm_transfer/')}:{o.line}` {o.operator}: "
            f"{o.one_line_diff()}  \n  reproduce: `python -m mutation.run --reproduce {o.spec}`"
            for o in picked
        ] or ["None."]
    return "\n".join(lines) + "\n"


#
# Entry points
#


def run(n: int, seed: int, factor: float, keep: bool) -> tuple[list[Outcome], str]:
    """Baseline, session, filters, sample, exec; the outcomes and the report."""
    started = time.monotonic()
    # What is copied, not what the working tree is by the end.
    commit, date = git_describe(), time.strftime("%Y-%m-%d %H:%M")
    scratch = make_scratch("wt-mutation-")
    print(f"mutation: scratch copy in {scratch}", flush=True)
    broke = True
    try:
        print("mutation: baseline run of the tests ...", flush=True)
        base = baseline(scratch, pytest_args())
        timeout = max(60.0, factor * base.secs)
        print(f"  passed in {base.secs:.0f} s; timeout per mutant {timeout:.0f} s", flush=True)

        config = _write_config(scratch, timeout)
        session = config.with_name("session.sqlite")
        _run_tool(scratch, tool_path("cosmic-ray"), "init", str(config), str(session))
        total = _pending(session)
        _run_tool(scratch, tool_path("cr-filter-pragma"), str(session))
        after_pragma = _pending(session)
        _run_tool(scratch, tool_path("cr-filter-operators"), str(session), str(config))
        after_operators = _pending(session)
        scope, equivalent = _own_filters(scratch, session)
        eligible = _pending(session)
        sampled = _sample(session, n, seed)
        print(
            f"mutation: {total} mutants, {eligible} after filters; running {sampled} "
            f"(seed {seed}), at most {minutes(timeout)} each",
            flush=True,
        )
        _execute(scratch, config, session, sampled, timeout)
        outcomes = _outcomes(session)
        facts = {
            "n": n,
            "seed": seed,
            "date": date,
            "commit": commit,
            "timeout": timeout,
            "baseline": base.secs,
            "total": total,
            "pragma": total - after_pragma,
            "operators": after_pragma - after_operators,
            "scope": scope,
            "equivalent": equivalent,
            "eligible": eligible,
            "sampled": sampled,
            "wall": time.monotonic() - started,
        }
        broke = False
        return outcomes, _report(outcomes, facts)
    finally:
        if keep or broke:
            print(f"mutation: scratch copy kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def apply_spec(scratch: Path, spec: str) -> tuple[str, str]:
    """Apply one mutant (`module:operator:occurrence`) to a scratch copy.

    Returns:
        The module's text before and after.
    """
    try:
        module, operator, occurrence = spec.rsplit(":", 2)
        op = get_operator(operator)()
        occurrence_n = int(occurrence)
    except (ValueError, KeyError) as e:
        raise ToolError(f"{spec}: expected module:operator:occurrence ({e})") from e
    original, mutated = apply_mutation(scratch / module, op, occurrence_n)
    if mutated is None:
        raise ToolError(f"{spec}: no such mutation (the code has changed since the report?)")
    return original, mutated


def reproduce(spec: str) -> int:
    """Apply one mutant (`module:operator:occurrence`) in a new scratch copy, and say how to test it."""
    scratch = make_scratch("wt-mutant-")
    original, mutated = apply_spec(scratch, spec)
    module = spec.rsplit(":", 2)[0]
    diff = difflib.unified_diff(
        original.splitlines(), mutated.splitlines(), f"a/{module}", f"b/{module}", lineterm=""
    )
    print("\n".join(diff))
    print(
        f"\nThe mutant is applied in {scratch} (delete it when done). Its tests:\n"
        f"cd {scratch} && PYTHONPATH={scratch} PYTHONDONTWRITEBYTECODE=1 "
        f"WT_FUZZ_RUNS={FUZZ_RUNS} {command_line(pytest_args())}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run and report; 0 whatever the score, 1 below --min-score, 2 if the tool broke."""
    parser = argparse.ArgumentParser(prog="python -m mutation.run", description=__doc__)
    parser.add_argument("--mutants", type=int, default=60, help="sample size (default 60)")
    parser.add_argument("--seed", type=int, default=1, help="sample seed (default 1)")
    parser.add_argument(
        "--timeout-factor", type=float, default=3.0, help="per-mutant timeout / baseline time"
    )
    parser.add_argument("--min-score", type=float, help="exit 1 below this score (0 to 1)")
    parser.add_argument("--report", type=Path, default=REPORT, help="where to write the report")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    parser.add_argument(
        "--reproduce",
        metavar="MODULE:OPERATOR:OCCURRENCE",
        help="apply one mutant of a report in a scratch copy and print how to test it",
    )
    args = parser.parse_args(argv)
    try:
        if args.reproduce:
            return reproduce(args.reproduce)
        if args.mutants < 1:
            parser.error("--mutants must be at least 1")
        outcomes, report = run(args.mutants, args.seed, args.timeout_factor, args.keep)
    except ToolError as e:
        print(f"mutation: {e}", file=sys.stderr)
        return TOOL_BROKE
    args.report.write_text(report)
    print(f"\n{report}\nmutation: report written to {args.report}")
    score = _score(outcomes)
    if args.min_score is not None and (score is None or score < args.min_score):
        print(f"mutation: score below --min-score {args.min_score:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

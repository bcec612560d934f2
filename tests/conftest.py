"""The fault suite's totals, and the demo runs made while the other tests run.

Each run of `test_fault_injection.py` leaves its summary in the test report's
`user_properties` (they cross pytest-xdist's workers); the totals are printed at the end
and, with `WT_FUZZ_SUMMARY=path`, written as JSON (`make soak` keeps them).

The demo tests read runs of the demo made once per session (`demo_runs`): one worker
starts them as the session starts, in a thread, and waits for them before it ends; those
tests are sent last, so nobody waits for the runs.
"""

import json
import os

from pipecat_warm_transfer.testing.drivers.fault_injection import summarize

# The fixtures users get from the installed entry point (`offline_call`, ...), for this
# suite whether or not the package was reinstalled since the entry point was added.
pytest_plugins = ["pipecat_warm_transfer.testing.pytest_plugin"]


def pytest_terminal_summary(terminalreporter):
    summaries = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "fault_run"
    ]
    if not summaries:
        return
    totals = summarize(summaries)
    terminalreporter.section("fault suite")
    for key, value in totals.items():
        terminalreporter.write_line(f"{key}: {value}")
    path = os.environ.get("WT_FUZZ_SUMMARY")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(totals, f, indent=2)


def _reads_demo_runs(item) -> bool:
    from demo_runs import MODULE_SETS

    return item.path.name in MODULE_SETS and bool({"runs", "run"} & set(item.fixturenames))


def pytest_collection_modifyitems(items):
    """The tests that read demo runs go last: by then the runs (started with the session,
    in the background) are made, and no worker waits for them."""
    try:
        items.sort(key=_reads_demo_runs)
    except ImportError:
        pass


def pytest_collection_finish(session):
    """Start the demo runs the selected tests will read (one worker of the session does)."""
    if session.config.option.collectonly:
        return
    try:
        from demo_runs import MODULE_SETS, shared_base, start_in_background
    except ImportError:  # the demo's extras are not installed: its tests skip
        return
    keys = {MODULE_SETS[item.path.name] for item in session.items if _reads_demo_runs(item)}
    if keys:
        base = shared_base(session.config._tmp_path_factory)
        session.config._demo_runs = start_in_background(base, keys)


def pytest_sessionfinish(session):
    """Wait for the demo runs this worker makes (other workers may be reading them)."""
    thread = getattr(session.config, "_demo_runs", None)
    if thread is not None:
        thread.join(timeout=600)

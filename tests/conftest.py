"""The fault suite's totals: which hard paths its runs reached, what was listened for.

Each run of `test_fault_injection.py` leaves its summary in the test report's
`user_properties` (they cross pytest-xdist's workers); the totals are printed at the end
and, with `WT_FUZZ_SUMMARY=path`, written as JSON (`make soak` keeps them).
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

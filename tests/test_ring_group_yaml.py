"""Ring groups and the nobody-free policy declared in YAML."""

import pytest

from pipecat_warm_transfer.cli import main
from pipecat_warm_transfer.config import load_config
from pipecat_warm_transfer.config.settings import transfer_settings
from pipecat_warm_transfer.ring_group import RingGroup
from pipecat_warm_transfer.types import FailureReason

HEAD = """\
version: 1
bot: {name: desk}
services:
  stt: {provider: scripted}
  llm: {provider: scripted}
  tts: {provider: scripted}
transfer:
"""

GROUP = """\
  targets:
    - {number: "+15550101", display_name: Alice, ring_timeout: 15s}
    - {number: "+15550102", display_name: Bob}
  strategy: simultaneous
  first_to: accept
  on_decline: stop
  nobody_free: callback
  nobody_free_by_reason: {after_hours: end_call}
  messages:
    caller:
      callback_offer: Shall a colleague call you back?
      failure:
        hold_timeout: Sorry, nobody was free in time.
"""


def write(tmp_path, body: str):
    path = tmp_path / "bot.yaml"
    path.write_text(HEAD + body, encoding="utf-8")
    return path


def test_a_group_becomes_a_ring_group_with_its_policy(tmp_path):
    settings = transfer_settings(load_config(write(tmp_path, GROUP)).config)
    group = settings.target
    assert isinstance(group, RingGroup)
    assert group.strategy == "simultaneous" and group.on_decline == "stop"
    assert group.first_to == "accept"
    assert [(t.display_name, t.ring_timeout) for t in group.targets] == [
        ("Alice", 15.0),
        ("Bob", None),
    ]
    params = settings.params
    assert params.next_step(FailureReason.NO_ANSWER) == "callback"
    assert params.next_step(FailureReason.AFTER_HOURS) == "end_call"
    assert params.next_step(FailureReason.DIAL_FAILED) == "return"  # a fault, not nobody free
    assert params.callback_offer_message == "Shall a colleague call you back?"
    assert params.failure_message(FailureReason.HOLD_TIMEOUT) == "Sorry, nobody was free in time."


@pytest.mark.parametrize(
    "body, field",
    [
        ('  target: {number: "+15550100"}\n' + GROUP, "transfer:"),
        ("  strategy: sequential\n", "transfer:"),
        (GROUP.replace("simultaneous", "round_robin"), "transfer.strategy"),
        (GROUP.replace("nobody_free: callback", "nobody_free: hang_up"), "transfer.nobody_free"),
        (GROUP.replace("after_hours: end_call", "dial_failed: end_call"), "nobody_free_by_reason"),
        (GROUP.replace("ring_timeout: 15s", "ring_timeout: 0s"), "targets[0].ring_timeout"),
        (GROUP.replace('"+15550102"', "15550102"), "targets[1].number"),
    ],
)
def test_group_mistakes_are_one_line_each(tmp_path, capsys, body, field):
    assert main(["validate", str(write(tmp_path, body))]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], lines

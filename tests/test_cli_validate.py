"""`pipecat-warm-transfer validate | schema | run`: exit codes, one line per problem
(`FILE:LINE: field.path: problem`), no traceback, secrets never printed."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipecat_warm_transfer.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROOT = EXAMPLES.parent
PROBLEM = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+): (?P<field>[^:\s]+): (?P<message>.+)$")
SECRET = "lk-secret-do-not-print-9f8e7d"
ENV = {
    "LIVEKIT_URL": "wss://acme.livekit.cloud",
    "LIVEKIT_API_KEY": "APIexample",
    "LIVEKIT_API_SECRET": SECRET,
    "LIVEKIT_SIP_OUTBOUND_TRUNK": "ST_example",
    "LIVEKIT_SIP_NUMBER": "+15557654321",
    "DEEPGRAM_API_KEY": "dg-example",
    "OPENAI_API_KEY": "sk-example",
    "CARTESIA_API_KEY": "ca-example",
    "ELEVENLABS_API_KEY": "el-example",
}

BAD = """\
livekit:
  url: ${LIVEKIT_URL}
  api_key: ${LIVEKIT_API_KEY}
  api_secret: ${LIVEKIT_API_SECRET}
bot:
  greting: Hello
services:
  stt: {provider: deepgran}
  llm: {provider: openai}
  tts: {provider: cartesia}
transfer:
  target:
    number: "5551234"
    headers:
      Reason: x
  ring_timeout: -3s
  hold_music:
    level_dbfs: 2
    source: gone.ogg
"""

EXPECTED = [
    (6, "bot.greting", "unknown field (did you mean 'greeting'?)"),
    (8, "services.stt.provider", "unknown STT provider 'deepgran'"),
    (13, "transfer.target.number", "'5551234' is not an E.164 number"),
    (15, "transfer.target.headers.Reason", "header names must be X- tokens"),
    (16, "transfer.ring_timeout", "-3.0 s is out of range"),
    (18, "transfer.hold_music.level_dbfs", "2.0 is out of range (-90 to 0 dBFS)"),
    (19, "transfer.hold_music.source", "file not found"),
]


@pytest.fixture
def env(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def test_validate_ok_is_one_line_and_exit_0(env, capsys):
    code = main(["validate", str(EXAMPLES / "bot.yaml"), str(EXAMPLES / "flow_bot.yaml")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(out) == 2
    assert out[0].startswith(f"{EXAMPLES / 'bot.yaml'}: OK (bot 'acme-support'")
    assert "flow with 5 nodes" in out[1]
    assert SECRET not in "\n".join(out)


def test_validate_prints_one_line_per_problem_and_exits_2(env, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert code == 2
    assert len(lines) == len(EXPECTED), lines
    for line, (number, field, message) in zip(lines, EXPECTED, strict=True):
        match = PROBLEM.match(line)
        assert match, line
        assert (match["file"], int(match["line"]), match["field"]) == (str(path), number, field)
        assert message in match["message"], line
    assert "Traceback" not in captured.out + captured.err


def test_an_unset_variable_is_named_with_its_field(tmp_path, capsys, monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    code = main(["validate", str(EXAMPLES / "flow_bot.yaml")])
    lines = capsys.readouterr().out.splitlines()
    assert code == 2
    text = (EXAMPLES / "flow_bot.yaml").read_text().splitlines()
    secret_line = next(i for i, line in enumerate(text, 1) if "api_secret:" in line)
    assert (
        f"{EXAMPLES / 'flow_bot.yaml'}:{secret_line}: livekit.api_secret: "
        "environment variable LIVEKIT_API_SECRET is not set"
    ) in lines
    assert all(PROBLEM.match(line) for line in lines), lines


def test_the_example_needs_no_caller_id(env, monkeypatch, capsys):
    monkeypatch.delenv("LIVEKIT_SIP_NUMBER")
    code = main(["validate", str(EXAMPLES / "bot.yaml")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    assert len(out) == 1
    assert out[0].startswith(f"{EXAMPLES / 'bot.yaml'}: OK (bot 'acme-support'")


def test_the_example_still_needs_its_livekit_url(env, monkeypatch, capsys):
    monkeypatch.delenv("LIVEKIT_SIP_NUMBER")
    monkeypatch.delenv("LIVEKIT_URL")
    code = main(["validate", str(EXAMPLES / "bot.yaml")])
    text = (EXAMPLES / "bot.yaml").read_text().splitlines()
    url_line = next(i for i, line in enumerate(text, 1) if "url: ${LIVEKIT_URL}" in line)
    assert code == 2
    assert capsys.readouterr().out.splitlines() == [
        f"{EXAMPLES / 'bot.yaml'}:{url_line}: livekit.url: "
        "environment variable LIVEKIT_URL is not set"
    ]


def test_a_missing_file_is_one_line_too(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["validate", str(missing)]) == 2
    assert capsys.readouterr().out.splitlines() == [
        f"{missing}:1: (document): file not found: {missing}"
    ]


def test_the_command_never_shows_a_traceback_nor_a_secret(tmp_path):
    """The installed command, as a user runs it: exit 2, problems only, secret masked."""
    path = tmp_path / "bad.yaml"
    path.write_text(BAD.replace('number: "5551234"', "number: ${LIVEKIT_API_SECRET}"))
    result = subprocess.run(
        [sys.executable, "-m", "pipecat_warm_transfer", "validate", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(PROBLEM.match(line) for line in lines), lines
    assert f"{path}:13: transfer.target.number: '***' is not an E.164 number" in result.stdout


def test_the_command_prints_only_its_findings():
    """One line per file: Pipecat's start-up banner (logged when Pipecat is imported) is no
    finding. Without LIVEKIT_SIP_NUMBER too, as the example allows."""
    files = ["examples/bot.yaml", "examples/flow_bot.yaml"]
    env = {**os.environ, **ENV}
    for name in ("LIVEKIT_SIP_NUMBER", "LOGURU_LEVEL"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "pipecat_warm_transfer", "validate", *files],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Pipecat 1." not in output
    assert result.stderr == ""
    assert [line.partition(": OK (")[0] for line in output.splitlines()] == files


def test_schema_prints_the_json_schema(tmp_path, capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"services", "transfer", "flow", "livekit"} <= set(schema["properties"])
    out = tmp_path / "bot.schema.json"
    assert main(["schema", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == schema


def test_run_refuses_an_invalid_file_before_connecting(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    assert main(["run", str(path), "--room", "r1"]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(PROBLEM.match(line) for line in lines)


def test_run_needs_the_livekit_access(tmp_path, capsys, monkeypatch):
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "bot.yaml"
    path.write_text(
        "services:\n  stt: {provider: scripted}\n  llm: {provider: scripted}\n"
        "  tts: {provider: scripted}\ntransfer:\n  target: {number: '+15551234567'}\n"
    )
    assert main(["run", str(path), "--room", "r1"]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{path}:1: livekit.url: not set here nor in LIVEKIT_URL",
        f"{path}:1: livekit.api_key: not set here nor in LIVEKIT_API_KEY",
        f"{path}:1: livekit.api_secret: not set here nor in LIVEKIT_API_SECRET",
    ]


def test_the_demo_command_is_unchanged(capsys):
    assert main(["demo", "--list"]) == 0
    assert "success" in capsys.readouterr().out


def test_the_bots_join_token_grants_that_one_room_only():
    from livekit import api

    from pipecat_warm_transfer.runner.livekit_serving import LiveKitAccess

    access = LiveKitAccess("https://acme.livekit.cloud", "APIkey", "s" * 32)
    assert access.rtc_url == "wss://acme.livekit.cloud"
    claims = api.TokenVerifier("APIkey", "s" * 32).verify(access.join_token("r1", "bot"))
    assert claims.identity == "bot"
    assert claims.video.room == "r1" and claims.video.room_join
    assert not claims.video.room_admin and not claims.video.room_create
    assert not claims.video.room_list
    assert "s" * 32 not in repr(access)


def test_bot_runner_still_exports_the_runners_public_names():
    from pipecat_warm_transfer import bot_runner
    from pipecat_warm_transfer.runner import builder, livekit_serving

    # The public names of bot_runner.py before it was split (issue 15), but polling.
    built = ["BotCall", "build_bot", "hold_mixer", "transport_params", "run_call"]
    built += ["CALLER_LEFT_GRACE_SECS", "LIVEKIT_OUTPUT_QUEUE_MS"]
    # The polling helpers (waiting_sip_rooms, CONSULT_ROOM_PREFIX) are gone (issue 16).
    served = ["LiveKitAccess", "livekit_call", "run_livekit", "SHUTDOWN_SECS"]
    assert sorted(bot_runner.__all__) == sorted(built + served)
    for module, names in ((builder, built), (livekit_serving, served)):
        for name in names:
            assert getattr(bot_runner, name) is getattr(module, name), name

"""The bot YAML: schema, `${ENV}`, durations, every validation error (exact field and
line), the mapping onto the library's settings, services by provider name, JSON Schema."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from pipecat_warm_transfer.config import (
    ConfigError,
    ServiceBuildError,
    bot_config_schema,
    build_service,
    check_service,
    known_providers,
    load_config,
    load_yaml,
    parse_duration,
    resolve_provider,
    transfer_settings,
)
from pipecat_warm_transfer.consult_leg import TransferTarget
from pipecat_warm_transfer.params import (
    DEFAULT_FAILURE_MESSAGES,
    BriefingParams,
    WarmTransferParams,
)
from pipecat_warm_transfer.types import ConnectMode, FailureReason

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: What the examples read from the environment.
EXAMPLE_ENV = {
    "LIVEKIT_URL": "wss://acme.livekit.cloud",
    "LIVEKIT_API_KEY": "APIexample",
    "LIVEKIT_API_SECRET": "example-secret-never-printed",
    "LIVEKIT_SIP_OUTBOUND_TRUNK": "ST_example",
    "LIVEKIT_SIP_NUMBER": "+15557654321",
    "DEEPGRAM_API_KEY": "dg-example",
    "OPENAI_API_KEY": "sk-example",
    "CARTESIA_API_KEY": "ca-example",
    "ELEVENLABS_API_KEY": "el-example",
}

MINIMAL = """\
services:
  stt: {provider: scripted}
  llm: {provider: scripted}
  tts: {provider: scripted}
transfer:
  target:
    number: "+15551234567"
"""

FULL = """\
version: 1
livekit:
  url: ${LIVEKIT_URL}
  api_key: ${LIVEKIT_API_KEY}
  api_secret: ${LIVEKIT_API_SECRET}
bot:
  name: test-bot
  prompt: You help.
  greeting: Hello.
services:
  stt: {provider: deepgram, options: {api_key: "${DEEPGRAM_API_KEY}"}}
  llm: {provider: openai, options: {api_key: "${OPENAI_API_KEY}"}, settings: {model: m}}
  tts: {provider: cartesia, options: {api_key: "${CARTESIA_API_KEY}"}}
transfer:
  target:
    number: sip:desk@pbx.example.com
    caller_id: "+15557654321"
    headers:
      X-Reason: billing
    dtmf: ww12
  connect_mode: bridge
  ring_timeout: 25s
  briefing_timeout: 2m
  summary_timeout: 1500ms
  max_transfers: 2
  hold_music:
    level_dbfs: -30
    fade: 0.5s
    shared_engine: false
    reminder: Still trying.
    reminder_every: 20s
  messages:
    caller:
      hold: Hold on.
      connected: Connecting.
      failure:
        busy: Busy, sorry.
    human:
      connecting: Go ahead.
      caller_left: They hung up.
  briefing:
    mode: dtmf
    accept_digit: "5"
    decline_digit: "#"
    summary_max_words: 30
"""


def write(tmp_path: Path, text: str, name: str = "bot.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, environ: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=EXAMPLE_ENV if environ is None else environ)
    lines = str(info.value).splitlines()
    assert lines == [str(p) for p in info.value.problems]
    return lines


def line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the text")


def with_lines(base: str, old: str, new: str) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


#
# Loading, defaults and the mapping onto the library
#


def test_a_minimal_file_takes_every_default_from_the_library(tmp_path):
    loaded = load_config(write(tmp_path, MINIMAL), environ={})
    settings = loaded.transfer_settings()
    assert settings.params == WarmTransferParams()
    assert settings.target == TransferTarget("+15551234567")
    assert settings.hold_music.source is None
    assert settings.hold_music.mixer().shared_engine is True
    briefing = settings.briefing(tts=lambda: None)
    defaults = BriefingParams(tts=briefing.tts, stt=briefing.stt, llm=briefing.llm)
    assert briefing.model_dump(exclude={"tts", "stt", "llm"}) == defaults.model_dump(
        exclude={"tts", "stt", "llm"}
    )


def test_every_setting_maps_onto_the_library_objects(tmp_path):
    loaded = load_config(write(tmp_path, FULL), environ=EXAMPLE_ENV)
    config = loaded.config
    assert config.livekit.api_secret.get_secret_value() == EXAMPLE_ENV["LIVEKIT_API_SECRET"]
    assert "example-secret" not in repr(config)
    settings = transfer_settings(config, base_dir=tmp_path)
    assert settings.target == TransferTarget(
        "sip:desk@pbx.example.com",
        caller_id="+15557654321",
        headers={"X-Reason": "billing"},
        dtmf="ww12",
    )
    params = settings.params
    assert params.connect_mode == ConnectMode.BRIDGE
    assert (params.ring_timeout, params.briefing_timeout, params.summary_timeout) == (
        25.0,
        120.0,
        1.5,
    )
    assert params.max_transfers == 2
    assert params.hold_message == "Hold on." and params.connected_message == "Connecting."
    assert params.hold_reminder == "Still trying." and params.hold_reminder_every == 20.0
    assert params.hold_music_level_dbfs == -30.0
    assert params.caller_left_message == "They hung up."
    assert params.failure_message(FailureReason.BUSY) == "Busy, sorry."
    no_answer = DEFAULT_FAILURE_MESSAGES[FailureReason.NO_ANSWER]
    assert params.failure_message(FailureReason.NO_ANSWER) == no_answer
    assert settings.briefing_mode == "dtmf"
    briefing = settings.briefing(tts=lambda: "tts", stt=lambda: "stt", llm=lambda: "llm")
    assert briefing.stt is None and briefing.llm is None  # dtmf: the human presses keys
    assert (briefing.accept_digit, briefing.decline_digit) == ("5", "#")
    assert briefing.summary_max_words == 30 and briefing.connecting_message == "Go ahead."
    assert settings.hold_music.level_dbfs == -30.0 and settings.hold_music.fade_ms == 500.0
    mixer = settings.hold_music.mixer()
    assert mixer.level_dbfs == -30.0
    assert params.shared_hold_engine is False and mixer.shared_engine is False


def test_a_music_file_resolves_next_to_the_yaml_file(tmp_path):
    (tmp_path / "music").mkdir()
    t = np.arange(8000) / 8000
    sf.write(tmp_path / "music" / "loop.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 8000)
    text = MINIMAL + "  hold_music:\n    source: music/loop.wav\n"
    loaded = load_config(write(tmp_path, text), environ={})
    settings = loaded.transfer_settings()
    assert settings.hold_music.source == tmp_path / "music" / "loop.wav"


@pytest.mark.parametrize("name", ["bot.yaml", "flow_bot.yaml"])
def test_the_examples_are_valid(name):
    loaded = load_config(EXAMPLES / name, environ=EXAMPLE_ENV)
    settings = loaded.transfer_settings()
    assert settings.params.ring_timeout in (30.0, 25.0)
    if name == "flow_bot.yaml":
        assert loaded.config.flow.initial_node == "billing"
        assert loaded.flow().node("billing")["functions"][0].name == "transfer_to_human"


def test_the_examples_name_the_variables_they_miss():
    problems = problems_of(EXAMPLES / "bot.yaml", environ={})
    text = (EXAMPLES / "bot.yaml").read_text()
    secret = f"examples/bot.yaml:{line_of(text, 'api_secret:')}: livekit.api_secret: "
    assert any(
        p.endswith(secret + "environment variable LIVEKIT_API_SECRET is not set") for p in problems
    )
    assert not any("SUPPORT_DESK_NUMBER" in p for p in problems)  # it has a default


#
# ${ENV} interpolation
#


def test_env_references_defaults_literals_and_embedded(tmp_path):
    text = with_lines(MINIMAL, 'number: "+15551234567"', 'number: "sip:${EXT}@${HOST:-pbx.local}"')
    text += "bot:\n  prompt: Costs $${PRICE} today, ${DAY}.\n"
    loaded = load_config(write(tmp_path, text), environ={"EXT": "204", "DAY": "Monday"})
    assert loaded.config.transfer.target.number == "sip:204@pbx.local"
    assert loaded.config.bot.prompt == "Costs ${PRICE} today, Monday."


def test_an_unset_variable_names_the_variable_the_field_and_the_line(tmp_path):
    text = MINIMAL + "livekit:\n  url: ${LK_URL}\n  api_secret: ${LK_SECRET}\n"
    path = write(tmp_path, text)
    problems = problems_of(path, environ={"LK_URL": "wss://x.example"})
    assert problems == [
        f"{path}:{line_of(text, 'api_secret')}: livekit.api_secret: "
        "environment variable LK_SECRET is not set"
    ]


OPTIONAL_CALLER_ID = MINIMAL + "    caller_id: ${CALLER_ID:-}\n    dtmf: ww${EXT:-}\n"


@pytest.mark.parametrize("environ", [{}, {"CALLER_ID": ""}], ids=["unset", "empty"])
def test_an_unset_optional_variable_leaves_its_key_out(tmp_path, environ):
    path = write(tmp_path, OPTIONAL_CALLER_ID)
    loaded = load_config(path, environ=environ)
    assert loaded.config.transfer.target.caller_id is None
    assert "caller_id" not in load_yaml(path, environ=environ).data["transfer"]["target"]
    assert loaded.config.transfer.target.dtmf == "ww"  # inside a longer value: ""


def test_a_set_optional_variable_is_used(tmp_path):
    environ = {"CALLER_ID": "+15557654321", "EXT": "12"}
    loaded = load_config(write(tmp_path, OPTIONAL_CALLER_ID), environ=environ)
    assert loaded.config.transfer.target.caller_id == "+15557654321"
    assert loaded.config.transfer.target.dtmf == "ww12"


def test_an_unset_optional_variable_on_a_required_field_is_a_missing_field(tmp_path):
    text = with_lines(MINIMAL, 'number: "+15551234567"', "number: ${DESK:-}")
    path = write(tmp_path, text)
    assert problems_of(path, environ={}) == [
        f"{path}:{line_of(text, 'number:')}: transfer.target.number: required field is missing"
    ]


def test_a_key_left_out_still_counts_for_duplicates(tmp_path):
    text = MINIMAL + "    caller_id: ${CALLER_ID:-}\n    caller_id: '+15557654321'\n"
    path = write(tmp_path, text)
    assert problems_of(path, environ={}) == [
        f"{path}:{len(text.splitlines())}: transfer.target.caller_id: "
        "duplicate key (it is already set above)"
    ]


def test_secret_values_are_never_echoed(tmp_path):
    secret = "sk-live-0123456789abcdef"
    text = MINIMAL.replace('"+15551234567"', "${OPENAI_API_KEY}")
    text = text.replace(
        "llm: {provider: scripted}",
        "llm: {provider: scripted, options: {api_key: '${OPENAI_API_KEY}'}}",
    )
    text += "livekit:\n  api_secret: ${LIVEKIT_API_SECRET}\n  url: nope://${LIVEKIT_API_SECRET}\n"
    env = {"OPENAI_API_KEY": secret, "LIVEKIT_API_SECRET": "hush-hush-hush"}
    problems = problems_of(write(tmp_path, text), environ=env)
    joined = "\n".join(problems)
    assert "transfer.target.number: '***' is not an E.164 number" in joined
    assert "livekit.url: must start with wss://" in joined
    assert secret not in joined and "hush-hush-hush" not in joined


#
# Durations
#


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("2m", 120.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("1h", 3600.0),
        (45, 45.0),
        (2.5, 2.5),
        (" 3 s ", 3.0),
        ("90", 90.0),
        ("1min", 60.0),
    ],
)
def test_durations(text, seconds):
    assert math.isclose(parse_duration(text), seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-5s", "-5.0 s is out of range (more than 0 to 3600 s)"),
        ("0s", "0.0 s is out of range (more than 0 to 3600 s)"),
        ("2h", "7200.0 s is out of range (more than 0 to 3600 s)"),
        ("2 weeks", "'2 weeks' is not a duration (e.g. 30s, 2m, 1.5s, 250ms)"),
        ("true", "expected a duration (e.g. 30s, 2m, 1.5s, 250ms), not true/false"),
        (".nan", "expected a finite duration"),
    ],
)
def test_negative_absurd_and_malformed_durations(tmp_path, value, message):
    text = MINIMAL + f"  ring_timeout: {value}\n"
    path = write(tmp_path, text)
    assert problems_of(path) == [
        f"{path}:{line_of(text, 'ring_timeout')}: transfer.ring_timeout: {message}"
    ]


#
# Every validation error: the exact field path and line
#

#: (what to replace in MINIMAL_PLUS, with what, the field path, the message)
ERRORS = [
    ("bot:\n", "bot:\n  greting: Hi\n", "bot.greting", "unknown field (did you mean 'greeting'?)"),
    ("version: 1\n", "version: 1\nvoice: x\n", "voice", "unknown field"),
    (
        "    dtmf: '1'\n",
        "    dtmf: '1'\n    extension: 12\n",
        "transfer.target.extension",
        "unknown field",
    ),
    (
        "  max_transfers: 2\n",
        "  max_transfers: many\n",
        "transfer.max_transfers",
        "expected a valid integer, unable to parse string as an integer",
    ),
    ("  greeting: Hi.\n", "  greeting: [Hi]\n", "bot.greeting", "expected a valid string"),
    (
        "  connect_mode: auto\n",
        "  connect_mode: teleport\n",
        "transfer.connect_mode",
        "expected 'auto', 'move', 'bridge' or 'refer'",
    ),
    (
        "    number: '+15551234567'\n",
        "    number: 555-1234\n",
        "transfer.target.number",
        "'555-1234' is not an E.164 number (+15551234567) or a sip:/tel: URI",
    ),
    (
        "    number: '+15551234567'\n",
        "    number: 'sip:desk @pbx'\n",
        "transfer.target.number",
        "'sip:desk @pbx' is not an E.164 number (+15551234567) or a sip:/tel: URI",
    ),
    (
        "    number: '+15551234567'\n",
        "    number: 'http://pbx/desk'\n",
        "transfer.target.number",
        "'http://pbx/desk' is not an E.164 number (+15551234567) or a sip:/tel: URI",
    ),
    (
        "    number: '+15551234567'\n",
        "    number: ''\n",
        "transfer.target.number",
        "a phone number or SIP URI is required",
    ),
    (
        "    number: '+15551234567'\n",
        "    number: +15551234567\n",
        "transfer.target.number",
        "YAML reads 15551234567 as a number (and drops a leading +): quote it",
    ),
    (
        "    caller_id: '+15557654321'\n",
        "    caller_id: '12'\n",
        "transfer.target.caller_id",
        "'12' is not an E.164 number (+15551234567) or a sip:/tel: URI",
    ),
    (
        "      X-Reason: billing\n",
        "      Reason: billing\n",
        "transfer.target.headers.Reason",
        "header names must be X- tokens (e.g. X-Reason)",
    ),
    (
        "      X-Reason: billing\n",
        '      X-Reason: "billing\\r\\nX-Evil: 1"\n',
        "transfer.target.headers.X-Reason",
        "the value must be one line of text",
    ),
    (
        "      X-Reason: billing\n",
        '      "X-Bad\\nName": x\n',
        "transfer.target.headers.X-Bad\\nName",
        "header names must be X- tokens (e.g. X-Reason)",
    ),
    (
        "    dtmf: '1'\n",
        "    dtmf: 12a\n",
        "transfer.target.dtmf",
        "only 0-9, *, # and w (pause) are allowed",
    ),
    (
        "    level_dbfs: -24\n",
        "    level_dbfs: 3\n",
        "transfer.hold_music.level_dbfs",
        "3.0 is out of range (-90 to 0 dBFS)",
    ),
    (
        "    fade: 250ms\n",
        "    fade: 30s\n",
        "transfer.hold_music.fade",
        "30 s is out of range (0 to 10 s)",
    ),
    (
        "    reminder_every: 30s\n",
        "    reminder_every: -1s\n",
        "transfer.hold_music.reminder_every",
        "-1.0 s is out of range (more than 0 to 3600 s)",
    ),
    (
        "    source: builtin\n",
        "    source: nowhere.ogg\n",
        "transfer.hold_music.source",
        "file not found: {dir}/nowhere.ogg",
    ),
    (
        "    source: builtin\n",
        "    source: junk.ogg\n",
        "transfer.hold_music.source",
        "cannot decode {dir}/junk.ogg",
    ),
    (
        "  stt: {provider: scripted}\n",
        "  stt: {provider: deepgran}\n",
        "services.stt.provider",
        "unknown STT provider 'deepgran' (did you mean 'deepgram'",
    ),
    (
        "  tts: {provider: scripted}\n",
        "  tts: {provider: acme-voices}\n",
        "services.tts.provider",
        "unknown TTS provider 'acme-voices' (e.g. ",
    ),
    (
        "  llm: {provider: scripted}\n",
        "  llm: {options: {}}\n",
        "services.llm.provider",
        "required field is missing",
    ),
    (
        "    accept_digit: '1'\n",
        "    accept_digit: '10'\n",
        "transfer.briefing.accept_digit",
        "'10' is not one DTMF key (0-9, *, #)",
    ),
    (
        "    decline_digit: '2'\n",
        "    decline_digit: 1\n",
        "transfer.briefing.decline_digit",
        "'1' is also the accept_digit; the two keys must differ",
    ),
    (
        "    summary_max_words: 60\n",
        "    summary_max_words: 1000\n",
        "transfer.briefing.summary_max_words",
        "1000 is out of range (5 to 500)",
    ),
    (
        "    greeting_timeout: 3s\n",
        "    greeting_timeout: 2h\n",
        "transfer.briefing.greeting_timeout",
        "7200.0 s is out of range (0 to 3600 s)",
    ),
    (
        "    mode: voice\n",
        "    mode: fax\n",
        "transfer.briefing.mode",
        "expected 'voice' or 'dtmf'",
    ),
]

MINIMAL_PLUS = """\
version: 1
bot:
  greeting: Hi.
services:
  stt: {provider: scripted}
  llm: {provider: scripted}
  tts: {provider: scripted}
transfer:
  target:
    number: '+15551234567'
    caller_id: '+15557654321'
    headers:
      X-Reason: billing
    dtmf: '1'
  connect_mode: auto
  ring_timeout: 30s
  max_transfers: 2
  hold_music:
    source: builtin
    level_dbfs: -24
    fade: 250ms
    reminder_every: 30s
  briefing:
    mode: voice
    greeting_timeout: 3s
    accept_digit: '1'
    decline_digit: '2'
    summary_max_words: 60
"""


def test_the_base_of_the_error_table_is_valid(tmp_path):
    load_config(write(tmp_path, MINIMAL_PLUS), environ={})


@pytest.mark.parametrize(("old", "new", "field", "message"), ERRORS, ids=[e[2] for e in ERRORS])
def test_each_problem_names_its_field_and_line(tmp_path, old, new, field, message):
    (tmp_path / "junk.ogg").write_bytes(b"this is not audio at all" * 10)
    text = with_lines(MINIMAL_PLUS, old, new)
    path = write(tmp_path, text)
    problems = problems_of(path, environ={})
    line = line_of(text, new.splitlines()[-1])
    expected = f"{path}:{line}: {field}: {message.format(dir=tmp_path)}"
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), (problems[0], expected)


def test_every_problem_is_reported_in_one_pass_in_file_order(tmp_path):
    text = MINIMAL_PLUS
    for old, new in [
        ("  ring_timeout: 30s\n", "  ring_timeout: -1s\n"),
        ("    level_dbfs: -24\n", "    level_dbfs: 6\n"),
        ("  greeting: Hi.\n", "  greeting: Hi.\n  colour: blue\n"),
        ("      X-Reason: billing\n", "      Reason: billing\n"),
    ]:
        text = with_lines(text, old, new)
    problems = problems_of(write(tmp_path, text), environ={})
    paths = [p.split(": ")[1] for p in problems]
    assert paths == [
        "bot.colour",
        "transfer.target.headers.Reason",
        "transfer.ring_timeout",
        "transfer.hold_music.level_dbfs",
    ]
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == sorted(lines)


def test_yaml_syntax_errors_duplicate_keys_and_bad_top_levels(tmp_path):
    text = MINIMAL + "  ring_timeout: 30s\n  ring_timeout: 40s\n"
    path = write(tmp_path, text)
    assert problems_of(path) == [
        f"{path}:{len(text.splitlines())}: transfer.ring_timeout: "
        "duplicate key (it is already set above)"
    ]
    bad = write(tmp_path, "services:\n  stt: [unclosed\n", "syntax.yaml")
    assert problems_of(bad)[0].startswith(f"{bad}:3: yaml: ")
    listed = write(tmp_path, "- a\n- b\n", "list.yaml")
    assert problems_of(listed) == [
        f"{listed}:1: (document): the top level must be a mapping of sections"
    ]
    empty = write(tmp_path, "# nothing\n", "empty.yaml")
    assert problems_of(empty) == [f"{empty}:1: (document): the file is empty"]
    missing = tmp_path / "missing.yaml"
    assert problems_of(missing) == [f"{missing}:1: (document): file not found: {missing}"]


#
# Flows
#

FLOW_BOT = MINIMAL + "flow: !include flow.yaml\n"

FLOW = """\
initial_node: help
nodes:
  help:
    task_messages:
      - role: developer
        content: Help.
    functions:
      - name: transfer_to_human
        transition_to:
          field: status
          cases:
            connected: done
            busy: help
          default: help
  done:
    task_messages:
      - role: developer
        content: Done.
"""


def flow_problems(tmp_path, flow: str, bot: str = FLOW_BOT) -> tuple[list[str], Path]:
    write(tmp_path, flow, "flow.yaml")
    return problems_of(write(tmp_path, bot), environ={}), tmp_path / "flow.yaml"


def test_an_included_flow_is_validated_by_flow_config(tmp_path):
    write(tmp_path, FLOW, "flow.yaml")
    loaded = load_config(write(tmp_path, FLOW_BOT), environ={})
    assert set(loaded.config.flow.nodes) == {"help", "done"}


def test_a_flow_graph_error_points_at_the_transition(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flow = with_lines(FLOW, "connected: done", "connected: finished")
    problems, _ = flow_problems(tmp_path, flow)
    assert problems == [
        f"flow.yaml:{line_of(flow, 'connected: finished')}: "
        "flow.nodes.help.functions[0].transition_to.cases.connected: "
        "node 'help' function 'transfer_to_human' transitions to unknown node 'finished'"
    ]


def test_flow_errors_in_the_included_file_name_that_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = [
        (
            with_lines(FLOW, "initial_node: help", "initial_node: start"),
            "initial_node: start",
            "flow.initial_node",
            "initial_node 'start' is not a defined node",
        ),
        (
            with_lines(FLOW, "      - name: transfer_to_human", "      - name: lookup_bill"),
            "name: lookup_bill",
            "flow.nodes.help.functions[0].name",
            "node 'help' references tool 'lookup_bill', which is not in the handlers",
        ),
        (
            with_lines(
                FLOW,
                "    task_messages:\n      - role: developer\n        content: Help.",
                "    task_messages:\n      - role: developer\n        content: Help.\n"
                "    pre_actions:\n      - type: page_the_manager",
            ),
            "type: page_the_manager",
            "flow.nodes.help.pre_actions[0].type",
            "action type 'page_the_manager' has no handler",
        ),
        (
            with_lines(FLOW, "  done:\n", "  done:\n    respond: later\n"),
            "respond: later",
            "flow.nodes.done.respond",
            "unknown field (did you mean 'respond_immediately'?)",
        ),
        (
            with_lines(
                FLOW,
                "        content: Done.\n",
                "        content: Done.\n    pre_actions:\n      - type: warm_transfer\n"
                "        transition_to: nowhere\n",
            ),
            "transition_to: nowhere",
            "flow.nodes.done.pre_actions[0].transition_to",
            "warm_transfer action transitions to unknown node 'nowhere'",
        ),
    ]
    for flow, needle, field, message in cases:
        write(tmp_path, flow, "flow.yaml")
        problems = problems_of(write(tmp_path, FLOW_BOT), environ={})
        assert len(problems) == 1, problems
        assert problems[0].startswith(f"flow.yaml:{line_of(flow, needle)}: {field}: {message}"), (
            problems[0]
        )


def test_flow_handlers_modules_provide_the_flows_other_tools(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "acme_flow_tools.py").write_text(
        "async def lookup_bill(flow_manager, account: str):\n"
        '    """Look a bill up.\n\n    Args:\n        account: The account number.\n    """\n'
        "    return {'due': 12}, None\n"
    )
    flow = with_lines(
        FLOW,
        "      - name: transfer_to_human",
        "      - name: lookup_bill\n      - name: transfer_to_human",
    )
    write(tmp_path, flow, "flow.yaml")
    bot = FLOW_BOT + "flow_handlers: [acme_flow_tools]\n"
    loaded = load_config(write(tmp_path, bot), environ={})
    names = [f.name for f in loaded.flow().node("help")["functions"]]
    assert names == ["lookup_bill", "transfer_to_human"]
    missing = bot.replace("[acme_flow_tools]", "[acme_missing_tools]")
    problems = problems_of(write(tmp_path, missing), environ={})
    assert problems == [
        f"{tmp_path / 'bot.yaml'}:{line_of(missing, 'flow_handlers')}: flow_handlers[0]: "
        "cannot import acme_missing_tools: No module named 'acme_missing_tools'"
    ]


def test_a_missing_include_is_a_problem_of_the_including_field(tmp_path):
    path = write(tmp_path, FLOW_BOT)
    assert problems_of(path, environ={}) == [
        f"{path}:{line_of(FLOW_BOT, 'flow:')}: flow: !include flow.yaml: file not found"
    ]


def test_an_inline_flow_works_too(tmp_path):
    inline = MINIMAL + "flow:\n" + "".join(f"  {line}\n" for line in FLOW.splitlines())
    loaded = load_config(write(tmp_path, inline), environ={})
    assert loaded.config.flow.initial_node == "help"


#
# Services by provider name
#


@pytest.mark.parametrize(
    ("kind", "provider", "module", "class_name"),
    [
        ("stt", "deepgram", "pipecat.services.deepgram.stt", "DeepgramSTTService"),
        ("stt", "openai", "pipecat.services.openai.stt", "OpenAISTTService"),
        ("stt", "google", "pipecat.services.google.stt", "GoogleSTTService"),
        ("llm", "openai", "pipecat.services.openai.llm", "OpenAILLMService"),
        ("llm", "google", "pipecat.services.google.llm", "GoogleLLMService"),
        ("llm", "anthropic", "pipecat.services.anthropic.llm", "AnthropicLLMService"),
        ("tts", "cartesia", "pipecat.services.cartesia.tts", "CartesiaTTSService"),
        ("tts", "elevenlabs", "pipecat.services.elevenlabs.tts", "ElevenLabsTTSService"),
        ("tts", "deepgram_tts", "pipecat.services.deepgram.tts", "DeepgramTTSService"),
    ],
)
def test_providers_map_to_pipecat_service_classes(kind, provider, module, class_name):
    spec = resolve_provider(kind, provider)
    assert (spec.module, spec.class_name) == (module, class_name)
    assert spec.kind == kind and spec.name == provider


def test_the_provider_names_come_from_pipecats_registry():
    assert {"deepgram", "openai", "google", "scripted"} <= set(known_providers("stt"))
    assert {"openai", "anthropic", "google", "groq"} <= set(known_providers("llm"))
    assert {"cartesia", "elevenlabs", "openai", "deepgram"} <= set(known_providers("tts"))
    assert resolve_provider("tts", "mypkg.voices:MyTTS").class_name == "MyTTS"


def test_a_service_is_built_with_pipecats_own_class_options_and_settings():
    from pipecat.services.openai.llm import OpenAILLMService

    llm = build_service(
        "llm", "openai", {"api_key": "sk-test"}, {"model": "gpt-4.1-mini"}, system_instruction="Hi"
    )
    assert isinstance(llm, OpenAILLMService)
    assert llm._settings.model == "gpt-4.1-mini" and llm._settings.system_instruction == "Hi"


def test_a_service_is_checked_without_being_built():
    check_service("llm", "openai", {"api_key": "x"}, {"model": "m"})
    with pytest.raises(ServiceBuildError) as info:  # a class without **kwargs: names checked
        check_service("tts", "pipecat_warm_transfer.audio:HoldMusicMixer", {"colour": "blue"})
    assert info.value.path == ("options", "colour")
    with pytest.raises(ServiceBuildError) as info:
        check_service("stt", "deepgram", {})
    assert info.value.path == ("provider",)
    assert "pip install pipecat-ai[deepgram]" in info.value.message


def test_service_build_errors_name_the_field():
    with pytest.raises(ServiceBuildError) as info:
        build_service("llm", "openai", {"api_key": "x"}, {"colour": "blue"})
    assert info.value.path == ("settings",) and "'colour'" in info.value.message
    with pytest.raises(ServiceBuildError) as info:
        build_service("tts", "cartesia", {})
    assert info.value.path == ("options",) and "api_key" in info.value.message
    with pytest.raises(ServiceBuildError) as info:
        build_service("stt", "acme voices:Nope", {})
    assert info.value.path == ("provider",)
    assert "not an import path" in info.value.message


def test_scripted_services_for_offline_runs():
    stt = build_service("stt", "scripted", {"lines": ["hello"]})
    llm = build_service("llm", "scripted", {"replies": [{"say": "Hi", "when": "hello"}]})
    tts = build_service("tts", "scripted", {"pitch_hz": 300}, sample_rate=8000)
    assert type(stt).__name__ == "ScriptedSTTService"
    assert type(llm).__name__ == "ScriptedLLMService"
    assert type(tts).__name__ == "ScriptedToneTTSService"
    with pytest.raises(ServiceBuildError) as info:
        build_service("llm", "scripted", {"replies": [{"shout": "x"}]})
    assert info.value.path == ("options", "replies", 0)


#
# JSON Schema
#


def test_the_json_schema_round_trips_and_lists_the_sections():
    schema = bot_config_schema()
    again = json.loads(json.dumps(schema))
    assert again == schema
    assert set(schema["properties"]) == {
        "version",
        "livekit",
        "bot",
        "services",
        "transfer",
        "flow",
        "flow_handlers",
    }
    assert schema["required"] == ["services", "transfer"]
    assert schema["additionalProperties"] is False
    transfer = schema["$defs"]["TransferSection"]["properties"]
    assert transfer["ring_timeout"]["default"] == 30.0
    assert "How long the human's phone may ring" in transfer["ring_timeout"]["description"]
    assert schema["$defs"]["LiveKitSection"]["properties"]["api_secret"]["anyOf"][0]["writeOnly"]


@pytest.mark.parametrize("name", ["bot.yaml", "flow_bot.yaml"])
def test_the_json_schema_accepts_the_examples(name):
    jsonschema = pytest.importorskip("jsonschema")
    from pipecat_warm_transfer.config import load_yaml

    document = load_yaml(EXAMPLES / name, environ=EXAMPLE_ENV)
    assert not document.problems
    jsonschema.validate(document.data, bot_config_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**document.data, "colour": "blue"}, bot_config_schema())


def test_without_jsonschema_the_examples_use_only_schema_fields():
    schema = bot_config_schema()
    for name in ("bot.yaml", "flow_bot.yaml"):
        data = yaml.load((EXAMPLES / name).read_text(), Loader=_IncludeAsText)
        assert set(data) <= set(schema["properties"]), name
        for section, value in data.items():
            ref = schema["properties"][section].get("$ref", "")
            definition = schema["$defs"].get(ref.rsplit("/", 1)[-1], {})
            if isinstance(value, dict) and "properties" in definition:
                assert set(value) <= set(definition["properties"]), (name, section)


class _IncludeAsText(yaml.SafeLoader):
    pass


_IncludeAsText.add_constructor("!include", lambda loader, node: loader.construct_scalar(node))

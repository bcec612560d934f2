#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A picture of one call: what the caller and the human heard, and when the transfer moved.

`draw_timeline()` reads the two recordings (mono int16 WAVs, sample 0 = t 0) and the JSON
lines of timeline events (`{"t": 3.21, "event": "connected", "mode": "move", ...}`) and draws:

- a lane per recording ("Caller hears", "Human hears") with its waveform envelope,
- a "Hold music" lane (from `hold_started` until the caller leaves hold),
- coloured background bands for the transfer states (holding, briefing, connecting,
  connected, returning), derived from the events — or taken from `state` events
  (`{"t": ..., "event": "state", "state": "connecting"}`) when the log has them,
- a dashed marker per event with a short label; labels are staggered so none overlap,
- a lane per named human (a ring group's colleagues: `dialing` events with a `name`),
  with their ringing, their briefing, their time with the caller and how it ended
  (`human_lanes()`),
- in `refer` mode, LiveKit's marks of the REFER (`refer`: the carrier took it,
  `refer_notify`: the human's phone answered the caller's call), and the caller's call
  leaving LiveKit (the `caller_hung_up` that follows a `connected` by REFER).

Run as a script: `python -m pipecat_warm_transfer.demo.timeline caller.wav human.wav
events.jsonl out.png`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

FIGSIZE = (14.0, 6.0)
DPI = 120

#: Background colour of each transfer state.
STATE_COLORS = {
    "holding": "#f6c244",
    "briefing": "#a98be0",
    "connecting": "#5aa9e6",
    "connected": "#5cc08a",
    "returning": "#ef7a6d",
}

_GOOD, _BAD, _NEUTRAL, _FLOW = "#1e8449", "#c0392b", "#7f8c8d", "#34495e"
#: Marker colour per event (others: `_FLOW`).
EVENT_COLORS = {
    "connected": _GOOD,
    "human_answered": _GOOD,
    "transfer_failed": _BAD,
    "caller_hung_up": _BAD,
    "caller_referred": _NEUTRAL,  # not a failure: the call goes on, outside LiveKit
    "human_hung_up": _BAD,
    "returned_to_caller": "#d35400",
    "teardown_done": _NEUTRAL,
    "target_failed": "#d35400",
    "others_stopped": _NEUTRAL,
    "callback_requested": "#16a085",
    "refer": "#16a085",
    "refer_notify": _GOOD,
}

_LANE_COLORS = {"caller": "#2c6fbb", "human": "#8e44ad", "music": "#e3a21a"}
#: Colours of a human's lane: ringing, being briefed, with the caller.
_RINGING, _BRIEFED, _JOINED = "#b8c2cc", "#c9b3e6", "#8fd3ac"
#: Extra figure height per human lane (inches).
HUMAN_LANE_INCHES = 0.5
#: Events that end the hold (the music stops when the caller leaves holding/briefing).
_HOLD_ENDS = {
    "hold_stopped",
    "connected",
    "transfer_failed",
    "returned_to_caller",
    "caller_hung_up",
    "caller_referred",
    "teardown_done",
}
_STATE_EVENTS = {"state", "state_changed"}
_ENVELOPE_BINS = 1400


@dataclass
class _Band:
    state: str
    start: float
    end: float


@dataclass
class HumanLane:
    """One named human tried, as the events tell it (seconds from sample 0).

    Parameters:
        name: The human's display name.
        dialed: When their phone was dialed.
        answered: When they answered (None: never).
        ended: When their part ended: a failure, the decision that joined them, or
            the end of the recording.
        outcome: `accepted`, a failure reason (`busy`, `declined`, ...), `stopped`, or
            None when the log ends first.
        sip_status: The SIP status of a failed dial.
        joined: (start, end) of their time with the caller, when they took the call.
        transfer: The transfer (of the call) that dialed them.
    """

    name: str
    dialed: float
    answered: float | None = None
    ended: float | None = None
    outcome: str | None = None
    sip_status: int | None = None
    joined: tuple[float, float] | None = None
    transfer: int | None = None

    @property
    def ring_end(self) -> float | None:
        """When the ringing stopped: the answer, or the end when nobody answered."""
        return self.answered if self.answered is not None else self.ended

    def describe(self) -> str:
        """How it ended, in a few words ("busy · SIP 486", "accepted")."""
        text = (self.outcome or "…").replace("_", " ")
        if self.sip_status is not None:
            text += f" · SIP {self.sip_status}"
        return text


def human_lanes(events: list[dict], end: float) -> list[HumanLane]:
    """The named humans tried, in the order they were dialed, from the timeline events.

    A lane opens at a `dialing` event with a `name` and is settled by `human_answered`,
    `target_failed`, `others_stopped` (a simultaneous group's other phones),
    `transfer_failed` (the last human of a group), or `connected` (the human who
    accepted, then with the caller until someone hangs up or the recording ends).
    Unnamed dials (a single number) get no lane.
    """
    lanes: dict[tuple, HumanLane] = {}
    joined: HumanLane | None = None

    def of_transfer(event: dict) -> list[HumanLane]:
        return [lane for lane in lanes.values() if lane.transfer == event.get("transfer")]

    def settle(lane: HumanLane, t: float, outcome: str, sip_status=None):
        if lane.outcome is None:
            lane.ended, lane.outcome, lane.sip_status = t, outcome, sip_status

    for e in events:
        name, t = e["event"], float(e["t"])
        key = (e.get("transfer"), e.get("target"))
        if name == "dialing" and e.get("name"):
            lanes[key] = HumanLane(str(e["name"]), t, transfer=e.get("transfer"))
        elif name == "human_answered" and key in lanes:
            lanes[key].answered = t
        elif name == "target_failed" and key in lanes:
            settle(lanes[key], t, str(e.get("reason")), e.get("sip_status"))
        elif name == "others_stopped":
            for lane in of_transfer(e):
                if lane.answered is None:
                    settle(lane, t, "stopped")
        elif name == "transfer_failed":
            for lane in of_transfer(e):
                settle(lane, t, str(e.get("reason")), e.get("sip_status"))
        elif name == "connected":
            for lane in of_transfer(e):
                if lane.answered is not None and lane.outcome is None:
                    settle(lane, t, "accepted")
                    lane.joined = (t, end)
                    joined = lane
        elif name in ("caller_hung_up", "caller_referred", "human_hung_up") and joined is not None:
            joined.joined = (joined.joined[0], t)
            joined = None
    for lane in lanes.values():
        if lane.ended is None:
            lane.ended = end
    return sorted(lanes.values(), key=lambda lane: lane.dialed)


def _read_mono(path: str | Path | None) -> tuple[np.ndarray, int]:
    """Samples as float in [-1, 1] (empty when the file is missing or has no frames)."""
    if path is None or not Path(path).exists() or Path(path).stat().st_size == 0:
        return np.zeros(0, dtype=np.float32), 16000
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), int(rate)


def _read_events(path: str | Path | None) -> list[dict]:
    if path is None or not Path(path).exists():
        return []
    events = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        event = json.loads(line)
        if "t" in event and "event" in event:
            events.append(event)
    return sorted(events, key=lambda e: float(e["t"]))


def _envelope(audio: np.ndarray, rate: int) -> tuple[np.ndarray, ...]:
    """(times, peak, rms) per bin — a little over a thousand points, not every sample."""
    bins = max(1, min(_ENVELOPE_BINS, len(audio)))
    edges = np.linspace(0, len(audio), bins + 1).astype(int)
    peak = np.zeros(bins)
    rms = np.zeros(bins)
    for i in range(bins):
        chunk = audio[edges[i] : edges[i + 1]]
        if len(chunk):
            peak[i] = float(np.max(np.abs(chunk)))
            rms[i] = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)))
    times = (edges[:-1] + edges[1:]) / 2 / rate
    return times, peak, rms


def _state_bands(events: list[dict], end: float) -> list[_Band]:
    """Transfer-state intervals: from `state` events if logged, else inferred from events."""
    bands: list[_Band] = []
    current: list = [None, 0.0]  # state, since

    def enter(state: str | None, t: float):
        if current[0] == state:
            return
        if current[0] is not None and t > current[1]:
            bands.append(_Band(current[0], current[1], t))
        current[0], current[1] = state, t

    explicit = [e for e in events if e["event"] in _STATE_EVENTS and "state" in e]
    if explicit:
        for e in explicit:
            state = str(e["state"])
            enter(state if state in STATE_COLORS else None, float(e["t"]))
    else:
        for e in events:
            name, t = e["event"], float(e["t"])
            state = current[0]
            if name == "transfer_requested":
                enter("holding", t)
            elif name == "human_answered" or (name == "briefing_started" and state == "holding"):
                enter("briefing", t)
            elif name == "target_failed":
                enter("holding", t)  # a ring group moves on: held while the next one rings
            elif name == "connecting":
                enter("connecting", t)
            elif name == "connected":
                enter("connected", t)
            elif name == "transfer_failed":
                enter("returning", t)
            elif name == "human_hung_up" and state == "connected":
                enter("returning", t)
            elif name in ("returned_to_caller", "caller_hung_up", "caller_referred"):
                enter(None, t)
    enter(None, end)
    return bands


def _hold_spans(events: list[dict], end: float) -> list[tuple[float, float]]:
    spans = []
    start = None
    for e in events:
        name, t = e["event"], float(e["t"])
        if name == "hold_started" and start is None:
            start = t
        elif start is not None and (
            name in _HOLD_ENDS
            or (name in _STATE_EVENTS and e.get("state") not in ("holding", "briefing"))
        ):
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, end))
    return spans


def _label(event: dict, multiple: bool, names: dict | None = None) -> str:
    """An event's marker text."""
    name = event["event"]
    text = name.replace("_", " ")
    if name == "refer":
        return f"REFER to {event.get('to', '?')} ({event.get('sip_status')})"
    if name == "refer_notify":
        return f"{event.get('to', '?')} answered (NOTIFY {event.get('sip_status')})"
    if name == "caller_referred":
        return "caller's call left LiveKit"
    detail = event.get("mode") if name == "connected" else event.get("reason")
    if name in ("connected", "transfer_failed") and detail:
        text += f" ({str(detail).replace('_', ' ')})"
    if multiple and event.get("transfer") is not None and name == "transfer_requested":
        text += f" #{event['transfer']}"
    who = (names or {}).get((event.get("transfer"), event.get("target")))
    if who and name == "dialing":
        text = f"dialing {who}"
    elif who and name == "human_answered":
        text = f"{who} answered"
    elif who and name == "target_failed":
        text = f"{who}: {str(event.get('reason')).replace('_', ' ')}"
    elif name == "callback_requested" and event.get("preferred_time"):
        text += f" ({event['preferred_time']})"
    return text


def event_labels(events: list[dict]) -> list[tuple[float, str, str]]:
    """Each event's marker as drawn: (t, label, colour), state events left out.

    Labels read the events before them: a colleague's name from their `dialing`.
    """
    multiple = len({e.get("transfer") for e in events if e.get("transfer") is not None}) > 1
    names = {
        (e.get("transfer"), e.get("target")): e["name"]
        for e in events
        if e["event"] == "dialing" and e.get("name")
    }
    return [
        (float(e["t"]), _label(e, multiple, names), EVENT_COLORS.get(e["event"], _FLOW))
        for e in events
        if e["event"] not in _STATE_EVENTS
    ]


def _draw_human_lane(ax, lane: HumanLane, duration: float):
    """A human's ringing, briefing and time with the caller, and how it ended."""
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel(
        lane.name, rotation=0, ha="right", va="center", fontsize=10.5, fontweight="bold",
        color=_LANE_COLORS["human"],
    )  # fmt: skip
    spans = [(lane.dialed, lane.ring_end, _RINGING, "ringing")]
    if lane.answered is not None:
        spans.append((lane.answered, lane.ended, _BRIEFED, "briefing"))
    if lane.joined is not None:
        spans.append((lane.joined[0], lane.joined[1], _JOINED, "with the caller"))
    for start, end, color, text in spans:
        if start is None or end is None or end <= start:
            continue
        ax.broken_barh([(start, end - start)], (0.22, 0.56), color=color, zorder=2)
        if (end - start) / duration > 0.06:
            ax.text(
                (start + end) / 2, 0.5, text, ha="center", va="center", fontsize=8,
                color="#333333", zorder=3,
            )  # fmt: skip
    if lane.answered is not None:
        ax.plot([lane.answered], [0.5], marker="o", ms=4, color=_GOOD, zorder=4)
    # How it ended: after the lane's last bar, or before its first when the call ends there.
    last = lane.joined[1] if lane.joined is not None else lane.ended
    pad = duration * 0.004
    at, ha = (last + pad, "left") if last < duration * 0.85 else (lane.dialed - pad, "right")
    ax.text(
        at, 0.5, lane.describe(), ha=ha, va="center", fontsize=8.5, fontweight="bold",
        color=_GOOD if lane.outcome == "accepted" else _BAD, zorder=5,
        bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.8},
    )  # fmt: skip


def _draw_lane(ax, audio, rate, duration, color, title, silent="silent"):
    ax.set_ylim(-1.15, 1.15)
    ax.set_yticks([])
    ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=11, fontweight="bold")
    ax.axhline(0, color="#bbbbbb", lw=0.6, zorder=1)
    if len(audio) == 0:
        ax.text(
            duration / 2, 0.3, "no audio", ha="center", va="center", color="#888888", fontsize=10
        )
        return
    times, peak, rms = _envelope(audio, rate)
    top = max(float(peak.max()), 10 ** (-30 / 20))  # quieter than -30 dBFS stays small
    peak, rms = peak / top, rms / top
    ax.fill_between(times, -peak, peak, color=color, alpha=0.35, lw=0, zorder=2)
    ax.fill_between(times, -rms, rms, color=color, alpha=0.9, lw=0, zorder=3)
    if float(np.max(np.abs(audio))) < 10 ** (-50 / 20):
        ax.text(duration / 2, 0.4, silent, ha="center", va="center", color="#888888")


def _place_labels(fig, ax, items: list[tuple[float, str, str]], duration: float) -> int:
    """Draw event labels on the fewest rows with no overlap; returns the number of rows."""
    renderer = fig.canvas.get_renderer()
    to_data = ax.transData.inverted()
    pad = duration * 0.006
    row_ends: list[float] = []
    placed = []
    for t, text, color in items:
        artist = ax.text(
            t, 0, " " + text, fontsize=8.5, color=color, va="center", ha="left", zorder=4,
            bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.8},
        )  # fmt: skip
        box = artist.get_window_extent(renderer)
        width = to_data.transform((box.x1, 0))[0] - to_data.transform((box.x0, 0))[0]
        left, ha = t, "left"
        if t + width > duration:  # would run off the right edge: hang it to the left
            left, ha = t - width, "right"
            artist.set_text(text + " ")
        row = next((i for i, end in enumerate(row_ends) if left > end + pad), None)
        if row is None:  # no free row: open a new one below
            row = len(row_ends)
            row_ends.append(-np.inf)
        row_ends[row] = left + width
        placed.append((artist, row, ha))
    rows = max(1, len(row_ends))
    for artist, row, ha in placed:
        artist.set_y(rows - row - 0.5)
        artist.set_ha(ha)
        t = artist.get_position()[0]
        ax.plot([t, t], [0, rows - row - 0.5], color=artist.get_color(), lw=0.8, ls=":", zorder=1)
        ax.plot([t], [rows - row - 0.5], marker="o", ms=3.5, color=artist.get_color(), zorder=5)
    ax.set_ylim(0, rows)
    return rows


def draw_timeline(
    caller_wav: str | Path | None,
    human_wav: str | Path | None,
    events_jsonl: str | Path | None,
    out_png: str | Path,
    *,
    title: str | None = None,
    event_lags: list[float] | None = None,
) -> Path:
    """Draw a call's timeline to a PNG (14 x 6 inches at 120 dpi: 1680 x 720 pixels).

    Each named human tried (a ring group's colleagues) adds a lane of
    `HUMAN_LANE_INCHES` under "Human hears" (60 pixels each).

    Args:
        caller_wav: What the caller heard (mono int16 WAV; missing or empty is fine).
        human_wav: What the human heard (missing, empty or silent is fine).
        events_jsonl: Timeline events, one JSON object a line with `t` (seconds from the
            recordings' first sample) and `event`; a few events are enough.
        out_png: Where to write the PNG (parent directories are created).
        title: Figure title (default: the PNG's file name).
        event_lags: For each event, how much later the caller heard that moment (on
            LiveKit's output, Pipecat reports speech written before it is heard): the
            hold-music lane is drawn where the caller heard the music.

    Returns:
        The PNG's path.
    """
    caller, caller_rate = _read_mono(caller_wav)
    human, human_rate = _read_mono(human_wav)
    events = _read_events(events_jsonl)
    last_event = max((float(e["t"]) for e in events), default=0.0)
    duration = max(len(caller) / caller_rate, len(human) / human_rate, last_event * 1.03, 1.0)
    people = human_lanes(events, duration)

    # The lanes of the humans add height; the margins stay the same in inches.
    width, height = FIGSIZE
    height += HUMAN_LANE_INCHES * len(people)
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    grid = fig.add_gridspec(
        4 + len(people), 1, height_ratios=[1.35, 1.25, 1.25, *[0.42] * len(people), 0.42],
        hspace=0.12, left=0.095, right=0.985, top=1 - 0.6 / height, bottom=0.9 / height,
    )  # fmt: skip
    ax_events = fig.add_subplot(grid[0])
    ax_caller = fig.add_subplot(grid[1], sharex=ax_events)
    ax_human = fig.add_subplot(grid[2], sharex=ax_events)
    ax_people = [fig.add_subplot(grid[3 + i], sharex=ax_events) for i in range(len(people))]
    ax_hold = fig.add_subplot(grid[-1], sharex=ax_events)
    lanes = [ax_caller, ax_human, *ax_people, ax_hold]
    ax_events.set_xlim(0, duration)

    bands = _state_bands(events, duration)
    for ax in [ax_events, *lanes]:
        for band in bands:
            ax.axvspan(
                band.start, band.end, color=STATE_COLORS[band.state], alpha=0.22, lw=0, zorder=0
            )
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        ax.spines["bottom"].set_color("#999999")
        ax.tick_params(axis="x", labelbottom=False, length=0)
    ax_events.spines["bottom"].set_visible(False)
    ax_events.set_yticks([])
    ax_events.set_ylabel(
        "Events", rotation=0, ha="right", va="center", fontsize=11, color="#555555"
    )

    # State names, centred in their band along the top of the figure.
    for band in bands:
        if (band.end - band.start) / duration > 0.045:
            ax_events.annotate(
                band.state,
                ((band.start + band.end) / 2, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=9,
                color="#555555",
                fontstyle="italic",
            )

    _draw_lane(ax_caller, caller, caller_rate, duration, _LANE_COLORS["caller"], "Caller hears")
    dialed = any(e["event"] == "dialing" for e in events)
    _draw_lane(
        ax_human, human, human_rate, duration, _LANE_COLORS["human"],
        "Humans hear" if len(people) > 1 else "Human hears",
        silent="silent" if dialed or not events else "nobody was dialed",
    )  # fmt: skip
    for ax, lane in zip(ax_people, people, strict=True):
        _draw_human_lane(ax, lane, duration)

    ax_hold.set_ylim(0, 1)
    ax_hold.set_yticks([])
    ax_hold.set_ylabel(
        "Hold music", rotation=0, ha="right", va="center", fontsize=11, fontweight="bold"
    )
    heard = events
    if event_lags is not None and len(event_lags) == len(events):
        heard = [{**e, "t": float(e["t"]) + lag} for e, lag in zip(events, event_lags, strict=True)]
    for start, end in _hold_spans(heard, duration):
        ax_hold.broken_barh(
            [(start, end - start)], (0.2, 0.6), color=_LANE_COLORS["music"], zorder=2
        )
        if (end - start) / duration > 0.05:
            ax_hold.text(
                (start + end) / 2, 0.5, "♪ music", ha="center", va="center", fontsize=8.5,
                color="white", fontweight="bold", zorder=3,
            )  # fmt: skip

    items = event_labels(events)
    for t, _, color in items:
        for ax in lanes:
            ax.axvline(t, color=color, lw=0.9, ls="--", alpha=0.7, zorder=4)
    _place_labels(fig, ax_events, items, duration)
    if not items:
        ax_events.text(duration / 2, 0.5, "no events", ha="center", va="center", color="#888888")

    ax_hold.tick_params(axis="x", labelbottom=True, length=3)
    ax_hold.set_xlabel("time (s)", fontsize=10)
    ax_hold.xaxis.set_major_locator(MaxNLocator(nbins=24, steps=[1, 2, 2.5, 5, 10]))
    for ax in lanes:
        ax.grid(axis="x", color="#dddddd", lw=0.5, zorder=0)

    present = {band.state for band in bands}
    handles = [
        Patch(color=STATE_COLORS[s], alpha=0.45, label=s) for s in STATE_COLORS if s in present
    ] + [
        Patch(color=_LANE_COLORS["caller"], label="caller audio"),
        Patch(color=_LANE_COLORS["human"], label="human audio"),
        Patch(color=_LANE_COLORS["music"], label="hold music"),
        *([Patch(color=_RINGING, label="ringing")] if people else []),
        Line2D([], [], color=_GOOD, ls="--", label="answered / connected"),
        Line2D([], [], color=_BAD, ls="--", label="failed / hung up"),
        Line2D([], [], color=_FLOW, ls="--", label="other event"),
    ]  # fmt: skip
    fig.legend(
        handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8.5,
        bbox_to_anchor=(0.54, 0.0), handlelength=1.6, columnspacing=1.2,
    )  # fmt: skip
    fig.suptitle(title or Path(out_png).stem.replace("_", " "), fontsize=13, fontweight="bold")

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: `caller.wav human.wav events.jsonl out.png [title]`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (4, 5):
        print(
            "usage: python -m pipecat_warm_transfer.demo.timeline "
            "caller.wav human.wav events.jsonl out.png [title]",
            file=sys.stderr,
        )
        return 2
    out = draw_timeline(*args[:4], title=args[4] if len(args) == 5 else None)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

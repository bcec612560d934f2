#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""How LiveKit's server writes its answers on the wire: Twirp errors, SIP failures, auth refusals.

Each function here reproduces one piece of the real server's output byte for byte where the
source makes it knowable; `livekit_emulator.FIDELITY` cites the source of each.

- A Twirp error is JSON `{"code", "msg"[, "meta"]}` with `Content-Type: application/json`
  exactly (twirp v8.1.3 `writeError`); `meta` is left out when empty.
- An error that crossed LiveKit's internal RPC (psrpc) carries a gRPC status, so the server's
  `xtwirp.ToError` prefixes its message with `twirp error unknown: ` (`psrpc_error`).
- A SIP call the carrier refused carries `sip_status_code`, `sip_status` and `error_details`
  meta and a code derived from the SIP status (`sip_status_error`).
- The auth middleware answers before Twirp, with a `text/plain` 401 (`AuthRefusal`).
"""

from __future__ import annotations

import base64
import json
from http import HTTPStatus
from typing import Any

from aiohttp import web
from livekit.protocol import sip

#: HTTP status of each Twirp error code (twirp `ServerHTTPStatusFromErrorCode`).
TWIRP_HTTP_STATUS = {
    "canceled": 408,
    "unknown": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
}

#: The Twirp code a bare HTTP status stands for (for `fail_next(method, 503)`).
HTTP_TWIRP_CODE = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    408: "deadline_exceeded",
    409: "aborted",
    412: "failed_precondition",
    429: "resource_exhausted",
    500: "internal",
    501: "unimplemented",
    502: "unavailable",
    503: "unavailable",
    504: "deadline_exceeded",
}

# gRPC's numeric code of each Twirp code (google.rpc.Code), for `error_details`.
_GRPC_CODE = {
    "canceled": 1,
    "unknown": 2,
    "invalid_argument": 3,
    "deadline_exceeded": 4,
    "not_found": 5,
    "already_exists": 6,
    "permission_denied": 7,
    "resource_exhausted": 8,
    "failed_precondition": 9,
    "aborted": 10,
    "out_of_range": 11,
    "unimplemented": 12,
    "internal": 13,
    "unavailable": 14,
    "data_loss": 15,
    "unauthenticated": 16,
}

#: SIP reason phrases (RFC 3261 and friends), as a carrier sends them.
SIP_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}

# SIP status -> Twirp code, for the statuses LiveKit lists (livekit/protocol livekit/sip.go
# `sipCodeToGRPCCode`, gRPC codes spelled as Twirp codes); others fall back by class.
_SIP_CODE = {
    301: "not_found",
    302: "not_found",
    401: "permission_denied",
    402: "permission_denied",
    403: "permission_denied",
    404: "not_found",
    407: "unauthenticated",
    408: "deadline_exceeded",
    409: "failed_precondition",
    410: "not_found",
    412: "failed_precondition",
    416: "out_of_range",
    428: "unauthenticated",
    433: "permission_denied",
    436: "unauthenticated",
    437: "unauthenticated",
    438: "unauthenticated",
    440: "resource_exhausted",
    470: "permission_denied",
    480: "resource_exhausted",
    481: "not_found",
    482: "failed_precondition",
    483: "failed_precondition",
    486: "resource_exhausted",
    487: "aborted",
    491: "aborted",
    494: "unauthenticated",
    500: "failed_precondition",
    501: "failed_precondition",
    502: "failed_precondition",
    503: "failed_precondition",
    504: "deadline_exceeded",
    600: "resource_exhausted",
    603: "permission_denied",
    604: "not_found",
    607: "permission_denied",
    608: "permission_denied",
}

# Final statuses livekit/sip reports as "INVITE failed: ..." (the rest are "unexpected
# status from INVITE response: ...", pkg/sip/outbound.go `sipOutbound.Invite`).
_INVITE_FAILED = frozenset({400, 404, 480, 486, 488})

#: The prefix LiveKit's `xtwirp.ToError` puts before the message of an error that carries
#: a gRPC status (every psrpc error and every SIP status error).
PSRPC_PREFIX = "twirp error unknown: "


def sip_twirp_code(status: int) -> str:
    """The Twirp code LiveKit answers a SIP call that failed with `status`.

    Args:
        status: The SIP final status.

    Returns:
        The Twirp code (e.g. `resource_exhausted` for 486 Busy Here).
    """
    code = _SIP_CODE.get(status)
    if code is not None:
        return code
    if status < 200:
        return "unknown"
    if 500 <= status < 600:
        return "failed_precondition"
    return "invalid_argument"


class TwirpError(Exception):
    """A Twirp error answer (raised inside a handler, written as Twirp JSON).

    Parameters:
        code: The Twirp error code (`not_found`, `unauthenticated`, ...).
        msg: The message exactly as it goes on the wire (never a token or a secret).
        meta: String metadata (`sip_status_code`, `argument`, ...).
        http_status: The HTTP status (default: the code's, per twirp).
    """

    def __init__(
        self,
        code: str,
        msg: str,
        meta: dict[str, str] | None = None,
        http_status: int | None = None,
    ):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.meta = dict(meta or {})
        self.http_status = http_status or TWIRP_HTTP_STATUS.get(code, 500)

    @classmethod
    def psrpc(cls, code: str, message: str, meta: dict[str, str] | None = None) -> TwirpError:
        """An error that crossed LiveKit's internal RPC: its message gets `PSRPC_PREFIX`."""
        return cls(code, PSRPC_PREFIX + message, meta)

    @classmethod
    def sip(cls, status: int, reason: str | None = None) -> TwirpError:
        """The error of a SIP call the carrier ended with `status`, as LiveKit reports it."""
        return sip_status_error(status, reason)

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer (`meta` only when there is some)."""
        body: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.meta:
            body["meta"] = dict(sorted(self.meta.items()))
        return body

    def response(self) -> web.Response:
        """The HTTP answer, as twirp's `writeError` writes it."""
        return web.Response(
            status=self.http_status,
            reason=_reason(self.http_status),
            body=go_json(self.body()),
            headers={"Content-Type": "application/json"},
        )


def sip_status_error(
    status: int, reason: str | None = None, *, lead: str | None = None
) -> TwirpError:
    """The Twirp error of a SIP request the carrier answered with a final `status`.

    The message is livekit/sip's (`INVITE failed: sip status: 486: Busy Here`) behind the
    psrpc prefix; meta carries the status, its phrase and `error_details` (a base64
    `google.rpc.Status` holding a `livekit.SIPStatus`), as `xtwirp.WithDetailsFromStatus`
    writes them.

    Args:
        status: The SIP final status (3xx-6xx).
        reason: The carrier's reason phrase (default: the standard one).
        lead: What livekit/sip wrapped the status in (None: an INVITE's `INVITE failed`
            or `unexpected status from INVITE response`; `""`: the bare status, as a
            refused REFER; `call transfer failed` for a failed NOTIFY).

    Returns:
        The error.
    """
    phrase = reason if reason is not None else SIP_REASONS.get(status, "")
    detail = sip.SIPStatus(code=status, status=phrase)
    status_text = (
        f"sip status: {status}: {phrase}" if phrase else f"sip status: {status} ({_short(status)})"
    )
    if lead is None:
        lead = (
            "INVITE failed"
            if status in _INVITE_FAILED
            else "unexpected status from INVITE response"
        )
    message = f"{lead}: {status_text}" if lead else status_text
    code = sip_twirp_code(status)
    meta = {
        "sip_status_code": str(status),
        "sip_status": phrase or _enum_name(status),
        "error_details": _status_details(code, message, detail),
    }
    return TwirpError.psrpc(code, message, meta)


class AuthRefusal(Exception):
    """A refusal by LiveKit's auth middleware: a `text/plain` 401, before any Twirp routing.

    Parameters:
        text: The body, exactly as `HandleError` writes it.
    """

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def response(self) -> web.Response:
        """The HTTP answer (net/http sniffs the body as `text/plain; charset=utf-8`)."""
        return web.Response(
            status=401,
            body=self.text.encode(),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )


def not_found_page() -> web.Response:
    """Go's `http.NotFound`, for a path no Twirp service is registered at."""
    return web.Response(
        status=404,
        body=b"404 page not found\n",
        headers={"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
    )


def go_json(value: Any) -> bytes:
    """JSON as Go's `encoding/json` writes it: compact, with `<`, `>` and `&` escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def go_quote(text: str) -> str:
    """Go's `%q` of a string (close enough for the ASCII the routes carry)."""
    return json.dumps(text, ensure_ascii=True)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _short(status: int) -> str:
    name = _enum_name(status)
    return name.removeprefix("SIP_STATUS_")


def _enum_name(status: int) -> str:
    try:
        return sip.SIPStatusCode.Name(status)
    except ValueError:
        return f"SIP_STATUS_{status}"


def _status_details(code: str, message: str, detail: sip.SIPStatus) -> str:
    """Base64 of `google.rpc.Status{code, message, details: [Any(detail)]}` (hand-encoded)."""
    any_body = _field(1, b"type.googleapis.com/livekit.SIPStatus") + _field(
        2, detail.SerializeToString()
    )
    body = _varint_field(1, _GRPC_CODE.get(code, 2)) + _field(2, message.encode())
    body += _field(3, any_body)
    return base64.b64encode(body).decode()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload

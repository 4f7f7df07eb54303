"""openami's meter wire format: topics, authenticated frames, uplink SenML packs, down-link commands. Pure.

Meters (the simulator) encode with it and the head-end decodes with it; docs/protocol.md specifies the same
format for third-party meter makers. A `Frame` is transport independent: MQTT 5 carries `counter` and `mac` as
user properties, the in-process transport carries the object itself.

MAC = HMAC-SHA256(key, topic UTF-8 || 0x00 || counter as 8-byte big-endian || payload), lowercase hex.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from openami.common.clock import ensure_aware
from openami.common.errors import FrameRejected, ValidationError
from openami.headend.senml import REQUEST_ID, UplinkContent, pack_uplink
from openami.headend.senml_decode import unpack_uplink

__all__ = [
    "COMMAND_ARGS",
    "DATA",
    "MAX_COUNTER",
    "MAX_LOAD_LIMIT_W",
    "REPLY",
    "Command",
    "Frame",
    "Topic",
    "UplinkContent",
    "command_topic",
    "decode_command",
    "decode_uplink",
    "encode_command",
    "encode_uplink",
    "format_utc",
    "load_limit_command",
    "parse_load_limit",
    "parse_topic",
    "parse_utc",
    "reread_command",
    "sign",
    "uplink_topic",
    "verify",
]

DATA = "data"  # periodic push
REPLY = "reply"  # answer to a command
CMD = "cmd"
UP = "up"
DOWN = "down"
KEY_BYTES = 32
MAX_COUNTER = 2**63 - 1  # the wire field is 64-bit; the top bit stays clear so counters fit a signed BIGINT
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")  # site codes and serials, safe in topics and URNs
_MAC_HEX = re.compile(r"[0-9a-f]{64}")

# Command name -> the argument names it takes (all values are strings; instants are ISO-8601 UTC).
COMMAND_ARGS: dict[str, tuple[str, ...]] = {
    "reread": ("start", "end"),  # send the load profile for intervals starting in [start, end) as a reply
    "disconnect": (),  # open the relay
    "connect": (),  # close the relay
    "set_clock": ("time",),  # set the meter's clock to `time` on receipt
    "set_load_limit": ("limit_w",),  # trip the relay above `limit_w` W of import (decimal integer, "0": none)
}
# The largest load limit a command carries: far above any metered service (a 3-phase 400 A supply is ~280 kW),
# small enough that a typo of a few digits is refused rather than silently meaning "no limit".
MAX_LOAD_LIMIT_W = 1_000_000
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,9}")
_INSTANT_ARGS = frozenset({"start", "end", "time"})


@dataclass(frozen=True, slots=True)
class Frame:
    """One authenticated message, independent of the transport that carries it."""

    topic: str
    payload: bytes  # SenML JSON (uplink) or a command object (down-link)
    counter: int  # per-meter, per-direction, strictly increasing, 1 .. 2**63 - 1
    mac: str  # lowercase hex HMAC-SHA256, see the module docstring


@dataclass(frozen=True, slots=True)
class Topic:
    root: str  # e.g. "openami/v1"
    site_code: str
    direction: str  # "up" or "down"
    serial: str
    kind: str  # "data" or "reply" (up), "cmd" (down)


@dataclass(frozen=True, slots=True)
class Command:
    """A down-link command. `args` are strings; see COMMAND_ARGS for the names each command takes."""

    name: str
    request_id: str
    args: dict[str, str]


# --- topics ---------------------------------------------------------------------------------------


def uplink_topic(topic_root: str, site_code: str, serial: str, kind: str = DATA) -> str:
    if kind not in (DATA, REPLY):
        raise ValidationError(f"uplink kind must be {DATA!r} or {REPLY!r}, got {kind!r}", "kind")
    return f"{_root(topic_root)}/{_ident(site_code, 'site_code')}/{UP}/{_ident(serial, 'serial')}/{kind}"


def command_topic(topic_root: str, site_code: str, serial: str) -> str:
    return f"{_root(topic_root)}/{_ident(site_code, 'site_code')}/{DOWN}/{_ident(serial, 'serial')}/{CMD}"


def _root(topic_root: str) -> str:
    parts = topic_root.split("/")
    if not topic_root or any(not p or p in ("+", "#") or "\x00" in p for p in parts):
        raise ValidationError(
            f"topic root {topic_root!r} must be non-empty levels without wildcards", "topic_root"
        )
    return topic_root


def _ident(value: str, name: str) -> str:
    if not IDENTIFIER.fullmatch(value):
        raise ValidationError(f"{value!r} must match {IDENTIFIER.pattern}", name)
    return value


def parse_topic(topic: str) -> Topic:
    """Split `{root}/{site_code}/{up|down}/{serial}/{kind}`; FrameRejected("malformed") names any problem."""
    parts = topic.split("/")
    if len(parts) < 5 or not all(parts[:-4]):
        raise FrameRejected(
            "malformed", f"topic {topic!r} is not {{root}}/{{site}}/{{up|down}}/{{serial}}/{{kind}}"
        )
    site_code, direction, serial, kind = parts[-4:]
    if direction not in (UP, DOWN) or kind not in ({DATA, REPLY} if direction == UP else {CMD}):
        raise FrameRejected(
            "malformed", f"topic {topic!r}: {direction}/…/{kind} is not a known direction and kind"
        )
    for value, name in ((site_code, "site code"), (serial, "serial")):
        if not IDENTIFIER.fullmatch(value):
            raise FrameRejected(
                "malformed", f"topic {topic!r}: {name} {value!r} must match {IDENTIFIER.pattern}"
            )
    return Topic("/".join(parts[:-4]), site_code, direction, serial, kind)


# --- MAC ------------------------------------------------------------------------------------------


def mac_input(topic: str, counter: int, payload: bytes) -> bytes:
    """The bytes the MAC covers. MQTT forbids NUL in topics, so the 0x00 separator is unambiguous."""
    return topic.encode("utf-8") + b"\x00" + counter.to_bytes(8, "big") + payload


def sign(topic: str, counter: int, payload: bytes, key: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of a frame."""
    if len(key) != KEY_BYTES:
        raise ValidationError(f"an authentication key has {KEY_BYTES} bytes, got {len(key)}", "key")
    if not 1 <= counter <= MAX_COUNTER:
        raise ValidationError(f"counter {counter} outside 1..{MAX_COUNTER}", "counter")
    return hmac.new(key, mac_input(topic, counter, payload), hashlib.sha256).hexdigest()


def verify(frame: Frame, key: bytes) -> None:
    """Raise FrameRejected("bad_signature") unless `frame.mac` is the MAC of the frame under `key`."""
    if len(key) != KEY_BYTES:
        raise ValidationError(f"an authentication key has {KEY_BYTES} bytes, got {len(key)}", "key")
    mac = frame.mac.lower() if isinstance(frame.mac, str) else ""
    if not _MAC_HEX.fullmatch(mac):
        raise FrameRejected("bad_signature", "mac is not 64 hexadecimal digits")
    if not 0 <= frame.counter < 2**64:
        raise FrameRejected("bad_signature", f"counter {frame.counter} does not fit 64 bits")
    expected = hmac.new(key, mac_input(frame.topic, frame.counter, frame.payload), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, mac):
        raise FrameRejected("bad_signature", "mac does not match the meter's key")


def check_counter(counter: int) -> None:
    """Raise FrameRejected("malformed") for a counter outside 1..2**63 - 1 (0 marks a missing counter)."""
    if isinstance(counter, bool) or not isinstance(counter, int) or not 1 <= counter <= MAX_COUNTER:
        raise FrameRejected("malformed", f"counter {counter!r} missing or outside 1..{MAX_COUNTER}")


# --- uplink ---------------------------------------------------------------------------------------


def encode_uplink(
    content: UplinkContent, *, key: bytes, counter: int, topic_root: str, site_code: str, kind: str = DATA
) -> Frame:
    """The signed frame a meter publishes. `kind` is "data" (periodic push) or "reply" (to a command)."""
    if content.request_id is not None and kind != REPLY:
        raise ValidationError("only replies carry a request id", "request_id")
    topic = uplink_topic(topic_root, site_code, content.serial, kind)
    payload = pack_uplink(content)
    return Frame(topic, payload, counter, sign(topic, counter, payload, key))


def decode_uplink(frame: Frame) -> tuple[str, str, UplinkContent]:
    """(site_code, kind, content) of an uplink frame. Checks the format only; the MAC is `verify`'s job.

    Raises FrameRejected: "malformed" for anything not following docs/protocol.md, "impossible_value" for
    NaN or infinite numbers, "time_out_of_range" for times that cannot be represented.
    """
    topic = parse_topic(frame.topic)
    if topic.direction != UP:
        raise FrameRejected("malformed", f"topic {frame.topic!r} is not an uplink topic")
    check_counter(frame.counter)
    content = unpack_uplink(frame.payload, topic.serial, allow_request_id=topic.kind == REPLY)
    return topic.site_code, topic.kind, content


# --- commands -------------------------------------------------------------------------------------


def format_utc(instant: datetime) -> str:
    """ISO-8601 in UTC with a "Z", as commands carry instants."""
    return ensure_aware(instant).astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_utc(value: str) -> datetime:
    """An ISO-8601 instant with an offset ("Z" or "+hh:mm") as aware UTC; ValueError for naive or bad text."""
    instant = datetime.fromisoformat(value)
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return instant.astimezone(UTC)


def reread_command(request_id: str, start: datetime, end: datetime) -> Command:
    """Ask a meter for its load profile of intervals starting in [start, end)."""
    return Command("reread", request_id, {"start": format_utc(start), "end": format_utc(end)})


def load_limit_command(request_id: str, limit_w: int) -> Command:
    """Ask a meter to trip its relay when import power stays above `limit_w` W (0: remove the limit)."""
    if isinstance(limit_w, bool) or not isinstance(limit_w, int) or not 0 <= limit_w <= MAX_LOAD_LIMIT_W:
        raise ValidationError(
            f"a load limit is a whole number of W in 0..{MAX_LOAD_LIMIT_W} (0: no limit), got {limit_w!r}",
            "limit_w",
        )
    return Command("set_load_limit", request_id, {"limit_w": str(limit_w)})


def parse_load_limit(value: str) -> int:
    """The W of a `limit_w` argument: a plain decimal integer 0..MAX_LOAD_LIMIT_W, no sign, no leading zero (so
    one limit has one spelling); ValueError saying what is wrong otherwise."""
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value) or int(value) > MAX_LOAD_LIMIT_W:
        raise ValueError(
            f"limit_w must be a whole number of W 0..{MAX_LOAD_LIMIT_W} written in plain digits, got {value!r}"
        )
    return int(value)


def _command_problem(name: Any, request_id: Any, args: Any) -> str | None:
    if not isinstance(name, str) or name not in COMMAND_ARGS:
        return f"unknown command {name!r} (known: {', '.join(COMMAND_ARGS)})"
    if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
        return f"request_id must match {REQUEST_ID.pattern}, got {request_id!r}"
    if not isinstance(args, dict) or set(args) != set(COMMAND_ARGS[name]):
        got = sorted(args) if isinstance(args, dict) else args
        return f"{name} takes arguments {list(COMMAND_ARGS[name])}, got {got!r}"
    instants: dict[str, datetime] = {}
    for arg, value in args.items():
        if not isinstance(value, str):
            return f"argument {arg} must be a string, got {value!r}"
        if arg in _INSTANT_ARGS:
            try:
                instants[arg] = parse_utc(value)
            except ValueError as exc:
                return f"argument {arg}: {exc}"
        elif arg == "limit_w":
            try:
                parse_load_limit(value)
            except ValueError as exc:
                return f"{name}: {exc}"
    if "start" in instants and instants["end"] <= instants["start"]:
        return f"reread end {args['end']} is not after start {args['start']}"
    return None


def encode_command(
    cmd: Command, *, key: bytes, counter: int, topic_root: str, site_code: str, serial: str
) -> Frame:
    """The signed down-link frame carrying `cmd` to meter `serial`."""
    problem = _command_problem(cmd.name, cmd.request_id, cmd.args)
    if problem:
        raise ValidationError(problem, "command")
    topic = command_topic(topic_root, site_code, serial)
    body = {"name": cmd.name, "request_id": cmd.request_id, "args": dict(cmd.args)}
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return Frame(topic, payload, counter, sign(topic, counter, payload, key))


def decode_command(frame: Frame, key: bytes) -> Command:
    """The command in a down-link frame, after checking its MAC (meters authenticate the head-end too).

    Anti-replay is the meter's job: it accepts a command only if `frame.counter` is above the last accepted.
    """
    topic = parse_topic(frame.topic)
    if topic.direction != DOWN:
        raise FrameRejected("malformed", f"topic {frame.topic!r} is not a command topic")
    check_counter(frame.counter)
    verify(frame, key)
    try:
        body = json.loads(frame.payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameRejected("malformed", f"command payload is not UTF-8 JSON: {exc}") from None
    if not isinstance(body, dict) or set(body) != {"name", "request_id", "args"}:
        raise FrameRejected(
            "malformed", "command payload must be an object with exactly name, request_id and args"
        )
    problem = _command_problem(body["name"], body["request_id"], body["args"])
    if problem:
        raise FrameRejected("malformed", problem)
    return Command(body["name"], body["request_id"], dict(body["args"]))

"""The uplink payload: a SenML pack (RFC 8428, JSON) with records named by OBIS code. Pure: no I/O, no clock.

`pack_uplink` turns what a meter sends into payload bytes; `senml_decode.unpack_uplink` turns payload bytes
back into values, refusing anything that does not follow docs/protocol.md.
Instants travel as Unix seconds with millisecond resolution: `bt` is the meter's own clock when it built the
frame, record times `t` are relative to it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from openami.common.clock import ensure_aware
from openami.common.errors import ValidationError
from openami.common.obis import QUANTITIES, Kind, Quantity
from openami.readings.interfaces import InstantValue, IntervalValue, MeterEvent, RegisterValue

BASE_NAME_PREFIX = "urn:dev:serial:"
EVENT_LOG = "0-0:99.98.0"  # OBIS "standard event log": one record per event-log entry
PROFILE_INTERVALS_S = (300, 600, 900, 1800, 3600)
MAX_PAYLOAD_BYTES = 1 << 20  # a 31-day re-read at 5 min is ~9 000 interval records, ~600 kB
MAX_RECORDS = 50_000
MAX_STATUS = 2**31 - 1  # interval status bits are stored in a signed 32-bit column
MAX_SEQUENCE = 2**63 - 1
MAX_DETAIL_CHARS = 500
# SenML resolves times below 2**28 relative to "now"; openami needs absolute meter time, so `bt` is above.
MIN_ABSOLUTE_TIME_S = 2**28
EVENT_CODE = re.compile(r"[a-z][a-z0-9_]{0,39}")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

# Fields ending in "_" are must-understand (RFC 8428 section 4.4): a receiver that does not know one rejects
# the whole pack.
INTERVAL_LENGTH = "il_"  # interval length in seconds, required on interval records
INTERVAL_STATUS = "st_"  # the meter's status bits for the interval, optional (default 0)
EVENT_SEQUENCE = "seq_"  # event-log sequence number, required on event records
EVENT_DETAIL = "det_"  # event detail text, optional
REQUEST = "rid_"  # in a reply: the request id of the command it answers (first record only)
EXTENSIONS = frozenset({INTERVAL_LENGTH, INTERVAL_STATUS, EVENT_SEQUENCE, EVENT_DETAIL, REQUEST})
BASE_FIELDS = frozenset({"bn", "bt", "bu", "bv", "bs", "bver"})
VALUE_FIELDS = ("v", "vs", "vb", "vd")

UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
# The instants a datetime can hold, as Unix milliseconds.
MIN_UNIX_MS = (datetime.min.replace(tzinfo=UTC) - UNIX_EPOCH) // ONE_MS
MAX_UNIX_MS = (datetime.max.replace(tzinfo=UTC) - UNIX_EPOCH) // ONE_MS


@dataclass(slots=True)
class UplinkContent:
    """What a meter sends in one frame. Instants: aware UTC by the meter's clock; values: readings' types."""

    serial: str
    meter_time: datetime  # the meter's own clock when it built the frame
    intervals: list[IntervalValue] = field(default_factory=list)
    registers: list[RegisterValue] = field(default_factory=list)
    instants: list[InstantValue] = field(default_factory=list)
    events: list[MeterEvent] = field(default_factory=list)
    request_id: str | None = None  # in a reply: the command it answers

    def is_empty(self) -> bool:
        return not (self.intervals or self.registers or self.instants or self.events)


def base_name(serial: str) -> str:
    return f"{BASE_NAME_PREFIX}{serial}:"


def epoch_ms(instant: datetime) -> int:
    """Unix time of `instant` in whole milliseconds (rounded half up; the wire has millisecond resolution)."""
    if instant.tzinfo is not UTC:
        ensure_aware(instant)  # raises for naive instants; other zones subtract correctly as they are
    delta = instant - UNIX_EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + (delta.microseconds + 500) // 1000


# json.dumps(records, separators=(",", ":"), ensure_ascii=False, allow_nan=False), built once
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_MAX_TEXT_ENERGY_WH = 2**63  # larger interval energy is left to the encoder (and its limit on digits)


def _seconds_json(ms: int) -> int | float:
    # A float of at most three decimals prints back as exactly those decimals (repr is the shortest round
    # trip), and the decoder reads numbers as Decimal, so the milliseconds survive exactly.
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


# --- encode ---------------------------------------------------------------------------------------


def pack_uplink(content: UplinkContent) -> bytes:
    """The SenML JSON of `content` (compact, UTF-8). Raises ValidationError naming the bad value."""
    if content.is_empty():
        raise ValidationError("a frame must carry at least one record", "uplink content")
    bt_ms = epoch_ms(content.meter_time)
    intervals = _interval_records(content.intervals, bt_ms)

    def rel(instant: datetime) -> int | float:
        return _seconds_json(epoch_ms(instant) - bt_ms)

    records: list[dict[str, Any]] = []
    for i, rv in enumerate(content.registers):
        _expect_kind(rv.obis, Kind.REGISTER, f"registers[{i}]")
        records.append({"n": rv.obis, "u": "Wh", "t": rel(rv.read_at), "v": int(rv.energy_wh)})
    for i, inst in enumerate(content.instants):
        q = _expect_kind(inst.obis, (Kind.INSTANT, Kind.STATE), f"instants[{i}]")
        rec = {"n": inst.obis, "u": q.unit, "t": rel(inst.read_at), "v": inst.value}
        if not q.unit:
            del rec["u"]  # states (relay) have no unit
        records.append(rec)
    for i, ev in enumerate(content.events):
        where = f"events[{i}]"
        if not EVENT_CODE.fullmatch(ev.code):
            raise ValidationError(f"event code {ev.code!r} must match {EVENT_CODE.pattern}", where)
        if not 0 <= ev.sequence <= MAX_SEQUENCE:
            raise ValidationError(f"sequence {ev.sequence} outside 0..{MAX_SEQUENCE}", where)
        rec = {"n": EVENT_LOG, "t": rel(ev.occurred_at), "vs": ev.code, EVENT_SEQUENCE: ev.sequence}
        if ev.detail:
            rec[EVENT_DETAIL] = ev.detail[:MAX_DETAIL_CHARS]
        records.append(rec)

    for rec in records:
        if rec["t"] == 0:
            del rec["t"]  # the default: "at bt"
    head: dict[str, Any] = {"bn": base_name(content.serial), "bt": _seconds_json(bt_ms)}
    if content.request_id is not None:
        if not REQUEST_ID.fullmatch(content.request_id):
            raise ValidationError(
                f"request id {content.request_id!r} must match {REQUEST_ID.pattern}", "request_id"
            )
        head[REQUEST] = content.request_id
    # The base fields open the first record, as `head | first` would.
    if not intervals:
        records[0] = head | records[0]
    elif isinstance(first := intervals[0], dict):
        intervals[0] = head | first
    else:
        intervals[0] = f"{_JSON.encode(head)[:-1]},{first[1:]}"
    texts = [text if isinstance(text, str) else _JSON.encode(text) for text in intervals]
    if records:
        texts.append(_JSON.encode(records)[1:-1])
    return f"[{','.join(texts)}]".encode()


def _interval_records(values: list[IntervalValue], bt_ms: int) -> list[str | dict[str, Any]]:
    """The interval records of a frame, checked, as JSON text or, for unusual types, as dicts to encode.

    They are most of a frame, so they are written here as exactly the text the JSON encoder makes of their
    dict, for the types spelt out: a str OBIS code (these never need escaping) and ints; `t` is an int or
    a float, whose JSON is its repr. Any other type keeps the dict, which the encoder gets at the end.
    """
    intervals: list[str | dict[str, Any]] = []
    for i, iv in enumerate(values):
        obis = iv.obis
        q = QUANTITIES.get(obis)
        if q is None or q.kind is not Kind.INTERVAL:
            _expect_kind(obis, Kind.INTERVAL, f"intervals[{i}]")
        interval_s = iv.interval_s
        if interval_s not in PROFILE_INTERVALS_S:
            raise ValidationError(
                f"interval_s {interval_s} is not one of {PROFILE_INTERVALS_S}", f"intervals[{i}]"
            )
        start_ms = epoch_ms(iv.interval_start)
        if start_ms % (interval_s * 1000):
            raise ValidationError(
                f"interval_start {iv.interval_start.isoformat()} is not aligned", f"intervals[{i}]"
            )
        status = iv.status
        if not 0 <= status <= MAX_STATUS:
            raise ValidationError(f"status {status} outside 0..{MAX_STATUS}", f"intervals[{i}]")
        rel_ms = start_ms - bt_ms
        t = rel_ms // 1000 if rel_ms % 1000 == 0 else rel_ms / 1000  # _seconds_json, inlined
        energy_wh = int(iv.energy_wh)
        if (
            type(obis) is str
            and type(interval_s) is int
            and type(status) is int
            and -_MAX_TEXT_ENERGY_WH < energy_wh < _MAX_TEXT_ENERGY_WH
        ):
            # One literal per shape, no pieces to join: this line is most of what a meter sends.
            if rel_ms and status:
                text = f'{{"n":"{obis}","u":"Wh","t":{t},"v":{energy_wh},"il_":{interval_s},"st_":{status}}}'
            elif rel_ms:
                text = f'{{"n":"{obis}","u":"Wh","t":{t},"v":{energy_wh},"il_":{interval_s}}}'
            elif status:  # t 0 is the default, "at bt", and left out
                text = f'{{"n":"{obis}","u":"Wh","v":{energy_wh},"il_":{interval_s},"st_":{status}}}'
            else:
                text = f'{{"n":"{obis}","u":"Wh","v":{energy_wh},"il_":{interval_s}}}'
            intervals.append(text)
            continue
        rec: dict[str, Any] = {"n": obis, "u": "Wh", "t": t, "v": energy_wh, INTERVAL_LENGTH: interval_s}
        if not rel_ms:
            del rec["t"]
        if status:
            rec[INTERVAL_STATUS] = status
        intervals.append(rec)
    return intervals


def _expect_kind(obis: str, kinds: Kind | tuple[Kind, ...], where: str) -> Quantity:
    q = QUANTITIES.get(obis)
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if q is None or q.kind not in allowed:
        raise ValidationError(f"OBIS {obis!r} is not a known {'/'.join(allowed)} quantity", where)
    return q

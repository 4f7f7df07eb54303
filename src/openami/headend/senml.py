"""The uplink payload: a SenML pack (RFC 8428, JSON) with records named by OBIS code. Pure: no I/O, no clock.

`pack_uplink` turns what a meter sends into payload bytes; `unpack_uplink` turns payload bytes back into
values, refusing anything that does not follow docs/protocol.md with `FrameRejected("malformed", ...)`.
Instants travel as Unix seconds with millisecond resolution: `bt` is the meter's own clock when it built the
frame, record times `t` are relative to it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, DecimalException, Inexact, InvalidOperation
from itertools import repeat
from typing import Any

from openami.common.clock import ensure_aware
from openami.common.errors import FrameRejected, ValidationError
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

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# The instants a datetime can hold, as Unix milliseconds.
_MIN_MS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MS
_MAX_MS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MS


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
    delta = instant - _EPOCH
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


# --- decode ---------------------------------------------------------------------------------------


def _malformed(detail: str) -> FrameRejected:
    return FrameRejected("malformed", detail)


def _constant(name: str) -> Decimal:
    # NaN and Infinity are not JSON, but firmware that prints floats emits them; they are impossible values,
    # not unreadable ones, so keep them until the record they belong to is known.
    return Decimal({"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity"}[name])


# No meter value, time or field needs more than this; beyond it a number can only be garbage, and would cost
# Decimal and int arithmetic seconds (1e999999 as an int) or raise outside FrameRejected.
MAX_NUMBER_CHARS = 40
MAX_NUMBER_ADJUSTED = 18  # 10**18 is beyond any register (1 TWh = 10**12 Wh) and any Unix time in ms
MIN_NUMBER_EXPONENT = -40  # a float printed in full (17 digits) of a small value reaches about -20


def _out_of_range(text: str) -> FrameRejected:
    shown = text if len(text) <= 24 else f"{text[:20]}..."
    return FrameRejected("impossible_value", f"number {shown} in the payload is beyond any meter's range")


def _parse_float(text: str) -> Decimal:
    if len(text) <= MAX_NUMBER_ADJUSTED and "e" not in text and "E" not in text:
        return Decimal(text)  # the usual case: plain notation this short is cheap to compute with
    if len(text) > MAX_NUMBER_CHARS:
        raise _out_of_range(text)
    number = Decimal(text)
    if number.adjusted() > MAX_NUMBER_ADJUSTED or int(number.as_tuple().exponent) < MIN_NUMBER_EXPONENT:
        raise _out_of_range(text)
    return number


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_ADJUSTED + 2:  # digits and a sign
        raise _out_of_range(text)
    return int(text)


def _number(value: Any, where: str, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _malformed(f"{where}: {name} must be a number, got {json.dumps(value, default=str)}")
    return Decimal(value)


def _finite(value: Decimal, where: str, name: str) -> Decimal:
    if not value.is_finite():
        raise FrameRejected("impossible_value", f"{where}: {name} is {value}")
    return value


def _integer(value: Any, where: str, name: str, low: int, high: int) -> int:
    number = _finite(_number(value, where, name), where, name)
    if number != number.to_integral_value():
        raise _malformed(f"{where}: {name} must be a whole number, got {number}")
    out = int(number)
    if not low <= out <= high:
        raise _malformed(f"{where}: {name} {out} outside {low}..{high}")
    return out


def _instant(seconds: Decimal, where: str) -> tuple[int, datetime]:
    """The instant `seconds` after the epoch, rounded to whole milliseconds: (Unix ms, aware UTC)."""
    try:
        ms = int((seconds * 1000).to_integral_value())
        return ms, _EPOCH + ms * _MS
    except (OverflowError, InvalidOperation):
        raise FrameRejected("time_out_of_range", f"{where}: time {seconds} s cannot be represented") from None


# The fast path in `unpack_uplink` reads plain records (the ones meters send all day) in integer
# milliseconds instead of Decimal seconds. It only ever accepts: whatever it is not sure of, it hands to
# `_decode_record`, the general decoder, which reaches the same values for what the fast path accepts and
# names what is wrong with the rest (tests/unit/headend/test_senml.py holds the two against each other).
_PLAIN_FIELDS = frozenset({"n", "u", "t", "v", INTERVAL_LENGTH, INTERVAL_STATUS})
_FIRST_FIELDS = _PLAIN_FIELDS | {"bn", "bt", REQUEST}  # record 0's base fields, checked up front
_MEASUREMENTS = {obis: q for obis, q in QUANTITIES.items() if obis != EVENT_LOG}
_PROFILE_LENGTHS_S = frozenset(PROFILE_INTERVALS_S)
# Below this an int added to a zero base value (Decimal, 28 digits) stays exact, so the int is the sum.
_EXACT_INT = 10**27
# Seconds whose decimal exponent passes 15 are beyond datetime's range; smaller ones are scaled exactly
# (Inexact is trapped: more digits than the context holds means that time takes the general path).
_MAX_ADJUSTED = 15
_EXACT = Context(prec=28, traps=[Inexact])
_THOUSAND = Decimal(1000)
# Interval starts by Unix ms: every meter reports the same quarter hours, so frames share these (immutable)
# datetimes instead of building each anew. Emptied when full; at 15 min, 16 384 starts are 170 days.
_INTERVAL_STARTS: dict[int, datetime] = {}
_MAX_CACHED_STARTS = 16_384


def _whole_ms(seconds: Decimal) -> int | None:
    """`seconds` in milliseconds if that is a whole number computed exactly, else None."""
    if not seconds.is_finite() or seconds.adjusted() > _MAX_ADJUSTED:
        return None
    try:
        scaled = _EXACT.multiply(seconds, _THOUSAND)
    except DecimalException:
        return None
    ms = int(scaled)
    return ms if ms == scaled else None


@dataclass(slots=True)
class _Base:
    """SenML base values in force at a record (they carry over to the following records until changed)."""

    name: str = ""
    time_s: Decimal | None = None
    unit: str | None = None
    value: Decimal = Decimal(0)


def unpack_uplink(payload: bytes, serial: str, *, allow_request_id: bool) -> UplinkContent:
    """Decode the SenML pack of a frame the topic says came from `serial`. Raises FrameRejected."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _malformed(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        pack = json.loads(
            payload.decode("utf-8"), parse_float=_parse_float, parse_int=_parse_int, parse_constant=_constant
        )
    except UnicodeDecodeError as exc:
        raise _malformed(f"payload is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise _malformed(f"payload is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # e.g. nesting deeper than the parser's stack
        raise _malformed(f"payload is not a SenML pack: {type(exc).__name__}") from None
    if not isinstance(pack, list) or not pack:
        raise _malformed("payload is not a SenML pack: expected a non-empty JSON array of records")
    if len(pack) > MAX_RECORDS:
        raise _malformed(f"pack has {len(pack)} records, more than {MAX_RECORDS}")
    if not all(map(isinstance, pack, repeat(dict))):
        bad = next(i for i, r in enumerate(pack) if not isinstance(r, dict))
        raise _malformed(f"record {bad}: a SenML record must be a JSON object")
    first = pack[0]
    expected_bn = base_name(serial)
    if first.get("bn") != expected_bn:
        raise _malformed(f"record 0: base name (bn) must be {expected_bn!r}, got {first.get('bn')!r}")
    if "bt" not in first:
        raise _malformed("record 0: base time (bt, the meter's clock when sending) is missing")
    meter_time_s = _finite(_number(first["bt"], "record 0", "bt"), "record 0", "bt")
    if meter_time_s < MIN_ABSOLUTE_TIME_S:
        raise _malformed(f"record 0: bt {meter_time_s} is not an absolute Unix time (must be >= 2**28)")
    content = UplinkContent(serial=serial, meter_time=_instant(meter_time_s, "record 0")[1])
    if REQUEST in first:
        rid = first[REQUEST]
        if not allow_request_id:
            raise _malformed(f"record 0: {REQUEST} is only allowed in replies")
        if not isinstance(rid, str) or not REQUEST_ID.fullmatch(rid):
            raise _malformed(f"record 0: {REQUEST} must match {REQUEST_ID.pattern}, got {rid!r}")
        content.request_id = rid

    base = _Base(name=expected_bn, time_s=meter_time_s)  # as record 0 sets them
    seen: set[tuple[str, int]] = set()  # (OBIS, Unix ms) of every measurement so far
    sequences: set[int] = set()
    # Locals for the fast path, which runs once per record.
    add_seen = seen.add
    add_interval, add_register, add_instant = (
        content.intervals.append,
        content.registers.append,
        content.instants.append,
    )
    interval_kind, register_kind = Kind.INTERVAL, Kind.REGISTER
    # The base values as the fast path needs them. Only `_decode_record` changes `base`, so they are
    # refreshed after each record it decodes.
    base_ms = _whole_ms(meter_time_s)
    names_are_obis = True
    base_unit = base.unit
    base_value = base.value
    value_zero = True
    for index, record in enumerate(pack):
        if (
            base_ms is not None
            and names_are_obis
            and (record.keys() <= _PLAIN_FIELDS or (index == 0 and record.keys() <= _FIRST_FIELDS))
        ):
            obis = record.get("n", "")
            quantity = _MEASUREMENTS.get(obis) if type(obis) is str else None
            offset = record.get("t", 0)
            if type(offset) is int:
                at_ms: int | None = base_ms + offset * 1000
            elif type(offset) is Decimal and (at_ms := _whole_ms(offset)) is not None:
                at_ms += base_ms
            else:
                at_ms = None
            unit = record.get("u", base_unit)
            value = record.get("v")
            if (
                quantity is not None
                and at_ms is not None
                and _MIN_MS <= at_ms <= _MAX_MS
                and (unit or "") == quantity.unit
                and (key := (obis, at_ms)) not in seen
            ):
                kind = quantity.kind
                plain_int = type(value) is int and value_zero and -_EXACT_INT < value < _EXACT_INT
                if kind is interval_kind:
                    length_s = record.get(INTERVAL_LENGTH)
                    status = record.get(INTERVAL_STATUS, 0)
                    if (
                        plain_int
                        and type(length_s) is int
                        and length_s in _PROFILE_LENGTHS_S
                        and not at_ms % (length_s * 1000)
                        and type(status) is int
                        and 0 <= status <= MAX_STATUS
                    ):
                        add_seen(key)
                        start = _INTERVAL_STARTS.get(at_ms)
                        if start is None:
                            if len(_INTERVAL_STARTS) >= _MAX_CACHED_STARTS:
                                _INTERVAL_STARTS.clear()
                            start = _INTERVAL_STARTS[at_ms] = _EPOCH + at_ms * _MS
                        add_interval(IntervalValue(obis, start, length_s, value, status))
                        continue
                elif INTERVAL_LENGTH in record or INTERVAL_STATUS in record:
                    pass  # only intervals carry them: the general path says so
                elif kind is register_kind:
                    if plain_int:
                        add_seen(key)
                        add_register(RegisterValue(obis, _EPOCH + at_ms * _MS, value))
                        continue
                elif plain_int:
                    add_seen(key)
                    add_instant(InstantValue(obis, _EPOCH + at_ms * _MS, float(value)))
                    continue
                elif (
                    type(value) is Decimal
                    and value_zero
                    and value.is_finite()
                    and -1000 < value.adjusted() < 1000  # so adding the zero base cannot overflow
                ):
                    add_seen(key)
                    add_instant(InstantValue(obis, _EPOCH + at_ms * _MS, float(base_value + value)))
                    continue
        _decode_record(base, record, index, expected_bn, serial, content, seen, sequences)
        base_ms = None if base.time_s is None else _whole_ms(base.time_s)
        names_are_obis = base.name == expected_bn
        base_unit = base.unit
        base_value = base.value
        value_zero = base_value.is_zero()
    return content


def _decode_record(
    base: _Base,
    record: dict[str, Any],
    index: int,
    expected_bn: str,
    serial: str,
    content: UplinkContent,
    seen: set[tuple[str, int]],
    sequences: set[int],
) -> None:
    """Decode any record, applying its base fields to `base`: the general path, naming what is wrong."""
    where = f"record {index}"
    _apply_base(base, record, where, index)
    unknown = [k for k in record if k.endswith("_") and k not in EXTENSIONS]
    if unknown:
        raise _malformed(f"{where}: unknown must-understand field(s) {', '.join(sorted(unknown))}")
    if index > 0 and REQUEST in record:
        raise _malformed(f"{where}: {REQUEST} is only allowed in the first record")
    name = record.get("n", "")
    if not isinstance(name, str):
        raise _malformed(f"{where}: n must be a string")
    full_name = base.name + name
    if not full_name.startswith(expected_bn):
        raise _malformed(f"{where}: name {full_name!r} does not belong to meter {serial!r}")
    obis = full_name[len(expected_bn) :]
    where = f"{where} ({obis})"
    present = [k for k in VALUE_FIELDS if k in record]
    if len(present) != 1:
        raise _malformed(f"{where}: a record needs exactly one value field (v, vs, vb or vd), got {present}")
    if base.time_s is None:
        raise _malformed(f"{where}: no base time in force")
    offset = _finite(_number(record.get("t", 0), where, "t"), where, "t")
    at_ms, at = _instant(base.time_s + offset, where)
    if obis == EVENT_LOG:
        content.events.append(_event(record, where, at, sequences))
        return
    quantity = QUANTITIES.get(obis)
    if quantity is None:
        raise _malformed(f"{where}: unknown OBIS code {obis!r}")
    if present != ["v"]:
        raise _malformed(f"{where}: a measurement needs a numeric value v, got {present[0]}")
    for ext in (INTERVAL_LENGTH, INTERVAL_STATUS, EVENT_SEQUENCE, EVENT_DETAIL):
        if ext in record and not (
            quantity.kind is Kind.INTERVAL and ext in (INTERVAL_LENGTH, INTERVAL_STATUS)
        ):
            raise _malformed(f"{where}: {ext} is not allowed on a {quantity.kind} record")
    unit = record.get("u", base.unit)
    if (unit or "") != quantity.unit:
        raise _malformed(f"{where}: unit must be {quantity.unit!r}, got {unit!r}")
    value = _finite(base.value + _number(record["v"], where, "v"), where, "v")
    if (obis, at_ms) in seen:
        raise _malformed(f"{where}: a second value for {obis} at {at.isoformat()}")
    seen.add((obis, at_ms))
    if quantity.kind is Kind.INTERVAL:
        content.intervals.append(_interval(record, where, obis, at_ms, at, value))
    elif quantity.kind is Kind.REGISTER:
        content.registers.append(RegisterValue(obis, at, _whole_wh(value, where)))
    else:
        content.instants.append(InstantValue(obis, at, float(value)))


def _apply_base(base: _Base, record: dict[str, Any], where: str, index: int) -> None:
    if "bn" in record:
        if not isinstance(record["bn"], str):
            raise _malformed(f"{where}: bn must be a string")
        base.name = record["bn"]
    if "bt" in record:
        base.time_s = _finite(_number(record["bt"], where, "bt"), where, "bt")
        if base.time_s < MIN_ABSOLUTE_TIME_S:
            raise _malformed(f"{where}: bt {base.time_s} is not an absolute Unix time (must be >= 2**28)")
    if "bu" in record:
        if not isinstance(record["bu"], str):
            raise _malformed(f"{where}: bu must be a string")
        base.unit = record["bu"]
    if "bv" in record:
        base.value = _number(record["bv"], where, "bv")
    if "bver" in record:
        _integer(record["bver"], where, "bver", 10, 2**31)
    if "bs" in record:
        _number(record["bs"], where, "bs")  # sums are not used by openami; only checked for type


def _whole_wh(value: Decimal, where: str) -> int:
    if value != value.to_integral_value():
        raise _malformed(f"{where}: energy must be whole Wh, got {value}")
    return int(value)


def _interval(
    record: dict[str, Any], where: str, obis: str, start_ms: int, start: datetime, value: Decimal
) -> IntervalValue:
    if INTERVAL_LENGTH not in record:
        raise _malformed(f"{where}: interval record without its length {INTERVAL_LENGTH}")
    length_s = _integer(record[INTERVAL_LENGTH], where, INTERVAL_LENGTH, 1, 86_400)
    if length_s not in PROFILE_INTERVALS_S:
        raise _malformed(f"{where}: {INTERVAL_LENGTH} {length_s} s is not one of {PROFILE_INTERVALS_S}")
    if start_ms % (length_s * 1000):
        raise _malformed(f"{where}: interval start {start.isoformat()} is not aligned to {length_s} s")
    status = _integer(record.get(INTERVAL_STATUS, 0), where, INTERVAL_STATUS, 0, MAX_STATUS)
    return IntervalValue(obis, start, length_s, _whole_wh(value, where), status)


def _event(record: dict[str, Any], where: str, at: datetime, sequences: set[int]) -> MeterEvent:
    if "vs" not in record:
        raise _malformed(f"{where}: an event needs its code as a string value vs")
    code = record["vs"]
    if not isinstance(code, str) or not EVENT_CODE.fullmatch(code):
        raise _malformed(f"{where}: event code must match {EVENT_CODE.pattern}, got {code!r}")
    for ext in (INTERVAL_LENGTH, INTERVAL_STATUS):
        if ext in record:
            raise _malformed(f"{where}: {ext} is not allowed on an event record")
    if EVENT_SEQUENCE not in record:
        raise _malformed(f"{where}: event without its sequence number {EVENT_SEQUENCE}")
    sequence = _integer(record[EVENT_SEQUENCE], where, EVENT_SEQUENCE, 0, MAX_SEQUENCE)
    if sequence in sequences:
        raise _malformed(f"{where}: event sequence {sequence} appears twice")
    sequences.add(sequence)
    detail = record.get(EVENT_DETAIL, "")
    if not isinstance(detail, str) or len(detail) > MAX_DETAIL_CHARS:
        raise _malformed(f"{where}: {EVENT_DETAIL} must be a string of at most {MAX_DETAIL_CHARS} characters")
    return MeterEvent(code=code, occurred_at=at, sequence=sequence, detail=detail)

"""Decoding the uplink payload (a SenML pack, docs/protocol.md) into values. Pure: no I/O, no clock.

`unpack_uplink` refuses anything that does not follow the protocol with `FrameRejected` and a reason. A fast
path (`_unpack_plain`: orjson, integer milliseconds) reads the packs meters send all day, made only of plain
OBIS measurements; any pack it is not sure of goes whole through the general path (`_unpack_general`: the
stdlib parser with exact Decimal numbers, then `_decode_record`), so every error and edge case is decided in
one place. orjson is an addition to DESIGN.md's dependencies for a measured reason: it halves decoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from itertools import repeat
from typing import Any

import orjson

from openami.common.errors import FrameRejected
from openami.common.obis import QUANTITIES, Kind
from openami.headend.senml import (
    EVENT_CODE,
    EVENT_DETAIL,
    EVENT_LOG,
    EVENT_SEQUENCE,
    EXTENSIONS,
    INTERVAL_LENGTH,
    INTERVAL_STATUS,
    MAX_DETAIL_CHARS,
    MAX_PAYLOAD_BYTES,
    MAX_RECORDS,
    MAX_SEQUENCE,
    MAX_STATUS,
    MAX_UNIX_MS,
    MIN_ABSOLUTE_TIME_S,
    MIN_UNIX_MS,
    ONE_MS,
    PROFILE_INTERVALS_S,
    REQUEST,
    REQUEST_ID,
    UNIX_EPOCH,
    VALUE_FIELDS,
    UplinkContent,
    base_name,
)
from openami.readings.interfaces import InstantValue, IntervalValue, MeterEvent, RegisterValue


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
        return ms, UNIX_EPOCH + ms * ONE_MS
    except (OverflowError, InvalidOperation):
        raise FrameRejected("time_out_of_range", f"{where}: time {seconds} s cannot be represented") from None


# The fast path (`_unpack_plain`) reads packs of plain records, the ones meters send all day, with orjson
# and in integer milliseconds. It only ever accepts: a pack it is not sure of, in whole, goes to the general
# path (the stdlib parser with exact Decimal numbers, then `_decode_record`), which reaches the same values
# for what the fast path accepts and names what is wrong with the rest (tests/unit/headend/test_senml.py
# holds the two against each other).
_PLAIN_FIELDS = frozenset({"n", "u", "t", "v", INTERVAL_LENGTH, INTERVAL_STATUS})
_FIRST_FIELDS = _PLAIN_FIELDS | {"bn", "bt", REQUEST}  # record 0 may also carry these base fields
_MEASUREMENTS = {obis: q for obis, q in QUANTITIES.items() if obis != EVENT_LOG}
_PROFILE_LENGTHS_S = frozenset(PROFILE_INTERVALS_S)
# A number with an exponent, or a token longer than `_parse_float` and `_parse_int` take without a check
# (or than a 64-bit integer holds): the general path reads such a pack from the number's text. Found by
# mapping every number character to "0" and "e"/"E" to "e", then looking for a long run or a "0e" (a
# translate and two substring searches: a regular expression costs five times as much). Harmless strings
# can match too (a long serial); those packs merely take the general path.
_NUMBER_CHARS = bytes(
    ord("0") if chr(c) in "0123456789.-+" else ord("e") if chr(c) in "eE" else c for c in range(256)
)
_LONG_NUMBER = b"0" * 19
_EXPONENT = b"0e"
# A time in seconds read as a float is taken as whole milliseconds when it is this close to one: closer
# than any float error at these magnitudes, and far from the half millisecond where rounding the exact
# decimal (what the general path does) could land elsewhere. Beyond _MAX_FLOAT_S the float is too coarse.
_MS_TOLERANCE = 0.01
_MAX_FLOAT_S = 1e10
# Interval starts by Unix ms: every meter reports the same quarter hours, so frames share these (immutable)
# datetimes instead of building each anew. Emptied when full; at 15 min, 16 384 starts are 170 days.
_INTERVAL_STARTS: dict[int, datetime] = {}
_MAX_CACHED_STARTS = 16_384


def _float_ms(seconds: float) -> int | None:
    """`seconds` (an int or float orjson read) in whole milliseconds, or None if it is not close to one."""
    if type(seconds) is int:
        return seconds * 1000
    if type(seconds) is not float or not -_MAX_FLOAT_S < seconds < _MAX_FLOAT_S:
        return None
    scaled = seconds * 1000.0
    ms = round(scaled)
    return ms if abs(scaled - ms) <= _MS_TOLERANCE else None


def _interval_start(at_ms: int) -> datetime:
    start = _INTERVAL_STARTS.get(at_ms)
    if start is None:
        if len(_INTERVAL_STARTS) >= _MAX_CACHED_STARTS:
            _INTERVAL_STARTS.clear()
        start = _INTERVAL_STARTS[at_ms] = UNIX_EPOCH + at_ms * ONE_MS
    return start


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
    content = _unpack_plain(payload, serial, allow_request_id)
    if content is None:
        content = _unpack_general(payload, serial, allow_request_id)
    return content


def _unpack_plain(payload: bytes, serial: str, allow_request_id: bool) -> UplinkContent | None:
    """The fast path: the content of a pack of plain measurement records, or None for any other pack."""
    shape = payload.translate(_NUMBER_CHARS)
    if _LONG_NUMBER in shape or _EXPONENT in shape:
        return None
    try:
        pack = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(pack) is not list or not pack or len(pack) > MAX_RECORDS:
        return None
    first = pack[0]
    if type(first) is not dict or not first.keys() <= _FIRST_FIELDS or first.get("bn") != base_name(serial):
        return None
    meter_time_s = first.get("bt")
    if not isinstance(meter_time_s, int | float) or not meter_time_s >= MIN_ABSOLUTE_TIME_S:
        return None  # (a bool is an int too, but _float_ms takes only exact ints and floats)
    base_ms = _float_ms(meter_time_s)
    if base_ms is None or base_ms > MAX_UNIX_MS:
        return None
    content = UplinkContent(serial=serial, meter_time=UNIX_EPOCH + base_ms * ONE_MS)
    if REQUEST in first:
        rid = first[REQUEST]
        if not allow_request_id or type(rid) is not str or not REQUEST_ID.fullmatch(rid):
            return None
        content.request_id = rid
    seen: set[tuple[str, int]] = set()  # (OBIS, Unix ms) of every measurement so far
    add_seen = seen.add
    add_interval, add_register, add_instant = (
        content.intervals.append,
        content.registers.append,
        content.instants.append,
    )
    interval_kind, register_kind = Kind.INTERVAL, Kind.REGISTER
    starts, measurements, plain_fields = _INTERVAL_STARTS, _MEASUREMENTS, _PLAIN_FIELDS
    lengths, tolerance, max_float_s = _PROFILE_LENGTHS_S, _MS_TOLERANCE, _MAX_FLOAT_S
    for record in pack:
        # Record 0's fields were checked above; the others may carry only the plain ones.
        if type(record) is not dict or not (record.keys() <= plain_fields or record is first):
            return None
        get = record.get
        obis = get("n", "")
        quantity = measurements.get(obis) if type(obis) is str else None
        if quantity is None:
            return None
        offset = get("t", 0)
        if type(offset) is int:
            at_ms = base_ms + offset * 1000
        elif type(offset) is float and -max_float_s < offset < max_float_s:
            scaled = offset * 1000.0
            offset_ms = round(scaled)
            if abs(scaled - offset_ms) > tolerance:
                return None
            at_ms = base_ms + offset_ms
        else:
            return None
        key = (obis, at_ms)
        if not MIN_UNIX_MS <= at_ms <= MAX_UNIX_MS or (get("u") or "") != quantity.unit or key in seen:
            return None
        add_seen(key)
        value = get("v")
        kind = quantity.kind
        if kind is interval_kind:
            length_s = get(INTERVAL_LENGTH)
            status = get(INTERVAL_STATUS, 0)
            if not (
                type(value) is int
                and type(length_s) is int
                and length_s in lengths
                and not at_ms % (length_s * 1000)
                and type(status) is int
                and 0 <= status <= MAX_STATUS
            ):
                return None
            start = starts.get(at_ms)
            if start is None:
                start = _interval_start(at_ms)
            add_interval(IntervalValue(obis, start, length_s, value, status))
        elif INTERVAL_LENGTH in record or INTERVAL_STATUS in record:
            return None  # only intervals carry them: the general path says so
        elif kind is register_kind:
            if type(value) is not int:
                return None
            add_register(RegisterValue(obis, UNIX_EPOCH + at_ms * ONE_MS, value))
        elif type(value) is int or type(value) is float:
            # + 0.0: a "-0.0" reading is 0.0, as the general path's Decimal sum with the base value gives.
            add_instant(InstantValue(obis, UNIX_EPOCH + at_ms * ONE_MS, float(value) + 0.0))
        else:
            return None
    return content


def _unpack_general(payload: bytes, serial: str, allow_request_id: bool) -> UplinkContent:
    """Any pack, numbers read exactly from their text; what does not follow the protocol is refused."""
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
    for index, record in enumerate(pack):
        _decode_record(base, record, index, expected_bn, serial, content, seen, sequences)
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

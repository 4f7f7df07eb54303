"""The SenML payload module: plain records (the fast path) decode exactly as any record does, times in any
number form are the same instant, and the encoder writes exactly what the JSON encoder would."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.common.errors import FrameRejected
from openami.common.obis import QUANTITIES, Kind
from openami.headend import senml_decode
from openami.headend.senml import UplinkContent, epoch_ms, pack_uplink
from openami.headend.senml_decode import unpack_uplink
from openami.readings.interfaces import InstantValue, IntervalValue, MeterEvent, RegisterValue

BN = "urn:dev:serial:SN0001:"
BT = 1772409605  # 2026-03-02T00:00:05Z
T0 = datetime(2026, 3, 2, 0, 0, 5, tzinfo=UTC)
START = datetime(2026, 3, 1, 23, 45, tzinfo=UTC)  # bt - 905 s


def decode(text: str) -> UplinkContent:
    return unpack_uplink(text.encode(), "SN0001", allow_request_id=False)


def frame(*records: str, bt: str = str(BT)) -> str:
    """A pack whose first record carries the base fields, so the records after it are plain."""
    return f'[{{"bn":"{BN}","bt":{bt},"n":"1-0:2.8.0","u":"Wh","v":0}},{",".join(records)}]'


def outcome(text: str) -> UplinkContent | tuple[str, str]:
    try:
        return decode(text)
    except FrameRejected as exc:
        return exc.reason, exc.detail


def reply_outcome(text: str) -> UplinkContent | tuple[str, str]:
    try:
        return unpack_uplink(text.encode(), "SN0001", allow_request_id=True)
    except FrameRejected as exc:
        return exc.reason, exc.detail


def general(record: str) -> str:
    """The same record with a field openami ignores (RFC 8428), which sends it down the general path."""
    return record[:-1] + ',"x":0}'


PLAIN_RECORDS = [
    '{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":98,"il_":900,"st_":1}',
    '{"n":"1-0:1.29.0","u":"Wh","t":-905.000,"v":98,"il_":900}',
    '{"n":"1-0:1.29.0","u":"Wh","t":-9.05E2,"v":98,"il_":900}',
    '{"n":"1-0:1.29.0","u":"Wh","t":-904.9996,"v":98,"il_":900}',
    '{"n":"1-0:1.29.0","u":"Wh","t":-905.0000000000000000000000000001,"v":98,"il_":900}',
    '{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":98.0,"il_":900.0,"st_":1.0}',
    '{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":98.5,"il_":900}',
    '{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":98,"il_":900,"st_":2147483648}',
    '{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":98,"il_":900,"st_":true}',
    '{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":98,"il_":86401}',
    '{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":98,"il_":700}',
    '{"n":"1-0:1.29.0","u":"Wh","t":-904,"v":98,"il_":900}',
    '{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":98}',
    '{"n":"1-0:1.29.0","t":-905,"v":98,"il_":900}',
    '{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":NaN,"il_":900}',
    '{"n":"1-0:1.8.0","u":"Wh","t":NaN,"v":1}',
    '{"n":"1-0:1.8.0","u":"Wh","t":-Infinity,"v":1}',
    '{"n":"1-0:1.8.0","u":"Wh","t":1000000000000000,"v":1}',
    '{"n":"1-0:1.8.0","u":"Wh","t":10000000000000000000000000000000000000000,"v":1}',
    '{"n":"1-0:1.8.0","u":"Wh","t":1e30,"v":1}',
    '{"n":"1-0:1.8.0","u":"Wh","t":"5","v":1}',
    '{"n":"1-0:1.8.0","u":"Wh","t":0.0005,"v":1}',
    '{"n":"1-0:1.8.0","u":"Wh","t":0.0015,"v":1}',
    '{"n":"1-0:1.8.0","u":"Wh","t":-0.0,"v":1}',
    '{"n":"1-0:1.8.0","u":"Wh","v":999999999999999999999999999}',
    '{"n":"1-0:1.8.0","u":"Wh","v":12345678901234567890123456789}',
    '{"n":"1-0:1.8.0","u":"Wh","v":-0.0}',
    '{"n":"1-0:1.8.0","u":"Wh","v":Infinity}',
    '{"n":"1-0:1.8.0","u":"Wh","v":true}',
    '{"n":"1-0:1.8.0","u":"Wh","v":1,"il_":900}',
    '{"n":"1-0:1.8.0","u":"Wh","v":1,"st_":0}',
    '{"n":"1-0:2.8.0","u":"Wh","v":1}',
    '{"n":"1-0:32.7.0","u":"V","v":231.4}',
    '{"n":"1-0:32.7.0","u":"V","v":2.314E+2}',
    '{"n":"1-0:32.7.0","u":"V","v":1E+2000}',
    '{"n":"1-0:32.7.0","u":"V","v":-0.0}',
    '{"n":"1-0:32.7.0","u":"V","v":231}',
    '{"n":"1-0:32.7.0","u":"Wh","v":231}',
    '{"n":"0-0:96.3.10","v":1}',
    '{"n":"0-0:96.3.10","u":0,"v":1}',
    '{"n":"1-0:9.9.9","u":"Wh","v":1}',
    '{"n":"0-0:99.98.0","v":1}',
    '{"n":1,"u":"Wh","v":1}',
    '{"u":"Wh","v":1}',
]


def alone(record: str, bt: str) -> str:
    """A pack of `record` only, which then also carries the base fields (and a request id)."""
    return f'[{{"bn":"{BN}","bt":{bt},"rid_":"rr-1",{record[1:]}]'


@pytest.mark.parametrize("bt", ["1772409605", "1772409605.123", "1772409605.1234", "1.772409605E+9"])
@pytest.mark.parametrize("record", PLAIN_RECORDS)
def test_plain_records_decode_as_the_general_path_does(bt: str, record: str) -> None:
    """Same values, or the same reason and message, whichever path a record takes."""
    assert outcome(frame(record, bt=bt)) == outcome(frame(general(record), bt=bt))
    assert reply_outcome(alone(record, bt)) == reply_outcome(alone(general(record), bt))


@pytest.mark.parametrize(
    ("bt", "t"),
    [
        ("1772409605", "-905"),
        ("1772409605", "-905.0"),
        ("1772409605.000", "-905"),
        ("1772409605.5", "-905.5"),
        ("1772409604.123", "-904.123"),
        ("1.772409605E+9", "-9.05E+2"),
        ("1772409605", "-904.9996"),  # finer than a millisecond: rounded
    ],
)
def test_a_time_is_the_same_instant_in_any_number_form(bt: str, t: str) -> None:
    content = decode(frame(f'{{"n":"1-0:1.29.0","u":"Wh","t":{t},"v":98,"il_":900}}', bt=bt))
    assert content.intervals == [IntervalValue("1-0:1.29.0", START, 900, 98)]


@pytest.mark.parametrize(
    ("record", "reason", "detail"),
    [
        ('{"n":"1-0:1.8.0","u":"Wh","t":NaN,"v":1}', "impossible_value", "record 1 (1-0:1.8.0): t is NaN"),
        (
            '{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":Infinity,"il_":900}',
            "impossible_value",
            "record 1 (1-0:1.29.0): v is Infinity",
        ),
        (
            '{"n":"1-0:1.8.0","u":"Wh","t":1000000000000000,"v":1}',
            "time_out_of_range",
            "record 1 (1-0:1.8.0): time 1000001772409605 s cannot be represented",
        ),
        (
            '{"n":"1-0:1.8.0","u":"Wh","t":10000000000000000000000000000000000000000,"v":1}',
            "impossible_value",
            "number 10000000000000000000... in the payload is beyond any meter's range",
        ),
        (
            '{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":1,"il_":900,"st_":2147483648}',
            "malformed",
            "record 1 (1-0:1.29.0): st_ 2147483648 outside 0..2147483647",
        ),
        (
            '{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":1,"il_":86401}',
            "malformed",
            "record 1 (1-0:1.29.0): il_ 86401 outside 1..86400",
        ),
        (
            '{"n":"1-0:2.8.0","u":"Wh","v":5}',
            "malformed",
            "a second value for 1-0:2.8.0 at 2026-03-02T00:00:05",
        ),
    ],
)
def test_plain_records_are_still_refused_with_their_reason(record: str, reason: str, detail: str) -> None:
    with pytest.raises(FrameRejected) as err:
        decode(frame(record))
    assert err.value.reason == reason
    assert detail in err.value.detail


def test_a_second_value_between_plain_records_is_refused() -> None:
    plain = '{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":98,"il_":900}'
    with pytest.raises(FrameRejected, match=r"record 2 \(1-0:1.29.0\): a second value"):
        decode(frame(plain, plain.replace("98", "99")))


def test_plain_records_follow_base_fields_set_on_the_way() -> None:
    content = decode(
        frame(
            '{"n":"1-0:1.8.0","u":"Wh","v":5}',
            '{"bt":1772409600,"bv":1000,"n":"1-0:1.8.1","u":"Wh","v":5}',
            '{"n":"1-0:1.8.2","u":"Wh","v":7}',  # the base value 1000 still applies
            '{"bv":0,"bu":"Wh","n":"1-0:1.8.3","v":1}',
            '{"n":"1-0:1.8.4","t":1,"v":2}',  # unit from bu, time from the new bt
            '{"bn":"urn:dev:serial:","n":"SN0001:1-0:2.8.1","u":"Wh","v":3}',
            '{"n":"SN0001:1-0:2.8.2","u":"Wh","v":4}',  # the name still needs the new bn
        )
    )
    t1 = T0 - timedelta(seconds=5)
    assert content.registers == [
        RegisterValue("1-0:2.8.0", T0, 0),
        RegisterValue("1-0:1.8.0", T0, 5),
        RegisterValue("1-0:1.8.1", t1, 1005),
        RegisterValue("1-0:1.8.2", t1, 1007),
        RegisterValue("1-0:1.8.3", t1, 1),
        RegisterValue("1-0:1.8.4", t1 + timedelta(seconds=1), 2),
        RegisterValue("1-0:2.8.1", t1, 3),
        RegisterValue("1-0:2.8.2", t1, 4),
    ]


def test_base_fields_of_the_first_record_apply_to_it_and_after() -> None:
    content = decode(
        f'[{{"bn":"{BN}","bt":{BT},"bv":1000,"n":"1-0:1.8.0","u":"Wh","v":5}},{{"n":"1-0:1.8.1","u":"Wh","v":6}}]'
    )
    assert content.registers == [RegisterValue("1-0:1.8.0", T0, 1005), RegisterValue("1-0:1.8.1", T0, 1006)]


def test_a_negative_zero_reading_is_zero() -> None:
    [instant] = decode(f'[{{"bn":"{BN}","bt":{BT},"n":"1-0:32.7.0","u":"V","v":-0.0}}]').instants
    assert math.copysign(1.0, instant.value) == 1.0


def test_instant_values_keep_their_decimal_reading() -> None:
    content = decode(frame('{"n":"1-0:32.7.0","u":"V","v":231.4}', '{"n":"0-0:96.3.10","v":1}'))
    assert content.instants == [InstantValue("1-0:32.7.0", T0, 231.4), InstantValue("0-0:96.3.10", T0, 1.0)]


def test_interval_starts_shared_between_frames_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(senml_decode, "_INTERVAL_STARTS", {})
    monkeypatch.setattr(senml_decode, "_MAX_CACHED_STARTS", 2)
    records = [f'{{"n":"1-0:1.29.0","u":"Wh","t":{-905 - 900 * k},"v":{k},"il_":900}}' for k in range(5)]
    expected = [IntervalValue("1-0:1.29.0", START - timedelta(minutes=15 * k), 900, k) for k in range(5)]
    assert decode(frame(*records)).intervals == expected
    assert decode(frame(*records)).intervals == expected
    assert len(senml_decode._INTERVAL_STARTS) <= 2


# --- encode ---------------------------------------------------------------------------------------------


def canonical(payload: bytes) -> bytes:
    """What json.dumps writes for the records in `payload`, in the format's settings."""
    return json.dumps(json.loads(payload), separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("meter_time", [T0, T0 + timedelta(milliseconds=123), T0 - timedelta(seconds=5)])
@pytest.mark.parametrize("request_id", [None, "rr-1"])
@pytest.mark.parametrize("with_intervals", [True, False])
def test_the_encoder_writes_what_json_dumps_would(
    meter_time: datetime, request_id: str | None, with_intervals: bool
) -> None:
    content = UplinkContent(
        "SNé1",  # non-ASCII stays as it is (ensure_ascii=False)
        meter_time,
        intervals=[
            IntervalValue("1-0:1.29.0", datetime(2026, 3, 1, 23, 45, tzinfo=UTC), 900, 98),
            IntervalValue("1-0:2.29.0", datetime(2026, 3, 1, 23, 45, tzinfo=UTC), 900, 0, 5),
            IntervalValue("1-0:1.29.0", datetime(2026, 3, 2, tzinfo=UTC), 900, 7, 1),  # t 0 when bt is 00:00
            IntervalValue("1-0:2.29.0", datetime(2026, 3, 2, tzinfo=UTC), 900, 2**62),
        ]
        if with_intervals
        else [],
        registers=[RegisterValue("1-0:1.8.0", T0, 1234567)],
        instants=[InstantValue("1-0:32.7.0", T0, 231.4)],
        events=[MeterEvent("power_down", START, 17, 'says "hi"')],
        request_id=request_id,
    )
    payload = pack_uplink(content)
    assert canonical(payload) == payload
    first = json.loads(payload)[0]
    assert list(first)[:2] == ["bn", "bt"]
    assert ("rid_" in first) == (request_id is not None)
    assert unpack_uplink(payload, "SNé1", allow_request_id=True) == content


def test_unusual_value_types_still_go_through_the_json_encoder() -> None:
    content = UplinkContent(
        "SN0001",
        T0,
        intervals=[
            IntervalValue("1-0:1.29.0", START, 900.0, 98),  # type: ignore[arg-type]
            IntervalValue("1-0:1.29.0", START + timedelta(minutes=15), 900, 98, True),
        ],
    )
    payload = pack_uplink(content)
    assert canonical(payload) == payload
    assert b'"il_":900.0' in payload
    assert b'"st_":true' in payload


def test_interval_obis_codes_need_no_json_escaping() -> None:
    """The encoder writes interval OBIS codes into the JSON text as they are."""
    for obis, quantity in QUANTITIES.items():
        if quantity.kind is Kind.INTERVAL:
            assert json.dumps(obis, ensure_ascii=False) == f'"{obis}"'


def test_epoch_ms_rounds_half_up_and_accepts_any_zone() -> None:
    assert epoch_ms(T0) == BT * 1000
    assert epoch_ms(T0 + timedelta(microseconds=499)) == BT * 1000
    assert epoch_ms(T0 + timedelta(microseconds=500)) == BT * 1000 + 1
    assert epoch_ms(T0 - timedelta(microseconds=500)) == BT * 1000  # half up, also below the second
    assert epoch_ms(T0.astimezone(ZoneInfo("Africa/Nairobi"))) == BT * 1000
    assert epoch_ms(T0.astimezone(timezone(timedelta(hours=-3, minutes=-30)))) == BT * 1000
    with pytest.raises(ValueError, match="timezone-aware"):
        epoch_ms(T0.replace(tzinfo=None))


@pytest.mark.parametrize(
    "number",
    ["1e999999", "1e9999999", "1e-999999999", "1E+2000", "0E-1000", "9" * 5000, "-" + "9" * 30, "9" * 21],
)
@pytest.mark.parametrize(("obis", "unit"), [("1-0:1.8.0", "Wh"), ("1-0:32.7.0", "V")])
def test_absurd_numbers_are_refused_at_once_as_impossible(number: str, obis: str, unit: str) -> None:
    # Such numbers once cost the decoder seconds (int(Decimal("1e999999"))) or escaped as non-FrameRejected
    # errors; now the JSON parser refuses them before any arithmetic. (An instant is a float: the fast
    # path must not read one of these as a huge but finite voltage.)
    payload = (
        f'[{{"bn":"urn:dev:serial:S1:","bt":1700000000,"n":"{obis}","u":"{unit}","v":{number}}}]'.encode()
    )
    with pytest.raises(FrameRejected) as caught:
        unpack_uplink(payload, "S1", allow_request_id=False)
    assert caught.value.reason == "impossible_value"


@pytest.mark.parametrize(
    "number", ["0.07134446804486339", "1.0E-7", "123456789012.5", "2.2250738585072014e-20"]
)
def test_numbers_as_meters_print_them_are_read_exactly(number: str) -> None:
    payload = (
        f'[{{"bn":"urn:dev:serial:S1:","bt":1700000000,"n":"1-0:31.7.0","u":"A","v":{number}}}]'.encode()
    )
    [instant] = unpack_uplink(payload, "S1", allow_request_id=False).instants
    assert instant.value == float(number)


def test_json_nested_past_the_parser_stack_is_malformed() -> None:
    payload = ("[" * 100_000 + "]" * 100_000).encode()
    with pytest.raises(FrameRejected) as caught:
        unpack_uplink(payload, "S1", allow_request_id=False)
    assert caught.value.reason == "malformed"


# --- the fast path against the general path -------------------------------------------------------------


def _both(payload: bytes, allow_request_id: bool) -> tuple[UplinkContent | None, UplinkContent | str]:
    fast = senml_decode._unpack_plain(payload, "SN0001", allow_request_id)
    try:
        general_: UplinkContent | str = senml_decode._unpack_general(payload, "SN0001", allow_request_id)
    except FrameRejected as exc:
        general_ = f"{exc.reason}: {exc.detail}"
    return fast, general_


@pytest.mark.parametrize("request_id", [None, "rr-1"])
@pytest.mark.parametrize(
    "meter_time", [T0, T0 + timedelta(milliseconds=123), T0 + timedelta(milliseconds=999)]
)
def test_what_meters_send_takes_the_fast_path(request_id: str | None, meter_time: datetime) -> None:
    content = UplinkContent(
        serial="SN0001",
        meter_time=meter_time,
        intervals=[
            IntervalValue("1-0:1.29.0", START - timedelta(minutes=15 * k), 900, 40 + k) for k in range(96)
        ],
        registers=[RegisterValue("1-0:1.8.0", T0, 123_456)],
        instants=[InstantValue("1-0:32.7.0", T0, 231.4), InstantValue("1-0:1.7.0", T0, 420.0)],
        request_id=request_id,
    )
    payload = pack_uplink(content)
    fast, general_ = _both(payload, allow_request_id=True)
    assert fast is not None, "a plain pack must not fall back to the general path"
    assert fast == general_ == content


_NUMBER_TEXTS = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.integers(0, 7)
    .flatmap(
        lambda places: st.decimals(-(10**12), 10**12, allow_nan=False, allow_infinity=False, places=places)
    )
    .map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["-0.0", "0.0005", "-904.9996", "1.7724096051234E+9", "2.314E+2", "900.0", "1e3"]),
)


@st.composite
def _packs(draw: st.DrawFn) -> bytes:
    """Packs of mostly plain records whose numbers come in every form a JSON writer might print."""
    bt = draw(st.one_of(st.sampled_from(["1772409605", "1772409605.123", "1772409605.0005"]), _NUMBER_TEXTS))
    records = [f'{{"bn":"{BN}","bt":{bt},"n":"1-0:2.8.0","u":"Wh","v":0}}']
    for _ in range(draw(st.integers(0, 4))):
        obis, unit = draw(st.sampled_from([("1-0:1.29.0", "Wh"), ("1-0:1.8.0", "Wh"), ("1-0:32.7.0", "V")]))
        fields = [f'"n":"{obis}"', f'"u":"{unit}"']
        t = draw(st.one_of(st.sampled_from(["-905", "-905.000", "-9.05E2", "-905.0005"]), _NUMBER_TEXTS))
        fields.append(f'"t":{t}')
        fields.append(f'"v":{draw(st.one_of(st.integers(-5, 10**6).map(str), _NUMBER_TEXTS))}')
        if obis == "1-0:1.29.0" or draw(st.booleans()):
            fields.append(f'"il_":{draw(st.sampled_from(["900", "900.0", "60", "61"]))}')
        if draw(st.integers(0, 3)) == 0:
            fields.append(f'"st_":{draw(st.sampled_from(["0", "1", "-1", "1.0", "true"]))}')
        records.append("{" + ",".join(fields) + "}")
    return f"[{','.join(records)}]".encode()


@settings(max_examples=400, deadline=None)
@given(payload=_packs())
def test_the_fast_path_accepts_only_what_the_general_path_reads_the_same(payload: bytes) -> None:
    fast, general_ = _both(payload, allow_request_id=False)
    if fast is not None:
        assert fast == general_

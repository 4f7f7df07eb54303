"""The wire format: round trips, the MAC test vector of docs/protocol.md, every way to be malformed."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from openami.common.errors import FrameRejected, ValidationError
from openami.headend.codec import (
    REPLY,
    Command,
    Frame,
    UplinkContent,
    command_topic,
    decode_command,
    decode_uplink,
    encode_command,
    encode_uplink,
    parse_topic,
    parse_utc,
    reread_command,
    sign,
    uplink_topic,
    verify,
)
from openami.readings.interfaces import InstantValue, IntervalValue, MeterEvent, RegisterValue
from tests.unit.headend.helpers import KEY_A, KEY_B, ROOT

T0 = datetime(2026, 3, 2, 0, 0, 5, tzinfo=UTC)
TOPIC = "openami/v1/demo/up/SN0001/data"


def _at(day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


def worked_example() -> UplinkContent:
    """The frame of docs/protocol.md, section "Worked example"."""
    return UplinkContent(
        "SN0001",
        _at(2, 0, 0, 5),
        intervals=[
            IntervalValue("1-0:1.29.0", _at(1, 23, 30), 900, 152),
            IntervalValue("1-0:1.29.0", _at(1, 23, 45), 900, 98, 1),
        ],
        registers=[
            RegisterValue("1-0:1.8.0", _at(2, 0, 0), 1234567),
            RegisterValue("1-0:1.8.1", _at(2, 0, 0), 456789),
        ],
        instants=[
            InstantValue("1-0:32.7.0", _at(2, 0, 0, 5), 231.4),
            InstantValue("1-0:31.7.0", _at(2, 0, 0, 5), 1.92),
            InstantValue("1-0:1.7.0", _at(2, 0, 0, 5), 420.0),
            InstantValue("0-0:96.3.10", _at(2, 0, 0, 5), 1.0),
        ],
        events=[MeterEvent("power_down", _at(1, 23, 50), 17), MeterEvent("power_up", _at(1, 23, 52, 30), 18)],
    )


WORKED_PAYLOAD = (
    b'[{"bn":"urn:dev:serial:SN0001:","bt":1772409605,"n":"1-0:1.29.0","u":"Wh","t":-1805,"v":152,"il_":900},'
    b'{"n":"1-0:1.29.0","u":"Wh","t":-905,"v":98,"il_":900,"st_":1},'
    b'{"n":"1-0:1.8.0","u":"Wh","t":-5,"v":1234567},{"n":"1-0:1.8.1","u":"Wh","t":-5,"v":456789},'
    b'{"n":"1-0:32.7.0","u":"V","v":231.4},{"n":"1-0:31.7.0","u":"A","v":1.92},'
    b'{"n":"1-0:1.7.0","u":"W","v":420.0},'
    b'{"n":"0-0:96.3.10","v":1.0},'
    b'{"n":"0-0:99.98.0","t":-605,"vs":"power_down","seq_":17},'
    b'{"n":"0-0:99.98.0","t":-455,"vs":"power_up","seq_":18}]'
)
# docs/protocol.md, "Test vector" (also checked there with openssl)
DOC_MAC = "e1c30fa99601b22850fe6944a08225bc78c527f71cb2836d9ec6780ec51f3e71"


def signed(payload: bytes | str, *, topic: str = TOPIC, counter: int = 1, key: bytes = KEY_A) -> Frame:
    body = payload.encode() if isinstance(payload, str) else payload
    return Frame(topic, body, counter, sign(topic, counter, body, key))


def pack(*records: dict[str, object]) -> str:
    head = {"bn": "urn:dev:serial:SN0001:", "bt": 1772409605}
    return json.dumps([head | records[0], *records[1:]])


REGISTER = {"n": "1-0:1.8.0", "u": "Wh", "v": 1000}


# --- round trips -----------------------------------------------------------------------------------------


def test_worked_example_payload_is_exactly_the_documented_bytes() -> None:
    frame = encode_uplink(worked_example(), key=KEY_A, counter=42, topic_root=ROOT, site_code="demo")
    assert frame.topic == TOPIC
    assert frame.payload == WORKED_PAYLOAD
    assert len(WORKED_PAYLOAD) == 505  # as docs/protocol.md says


def test_mac_test_vector() -> None:
    """docs/protocol.md: key 00 01 .. 1f, counter 42, the worked example's topic and payload."""
    expected = hmac.new(
        bytes(range(32)), TOPIC.encode() + b"\x00" + (42).to_bytes(8, "big") + WORKED_PAYLOAD, hashlib.sha256
    ).hexdigest()
    assert sign(TOPIC, 42, WORKED_PAYLOAD, bytes(range(32))) == expected == DOC_MAC


def test_round_trip_keeps_every_value() -> None:
    content = worked_example()
    content.meter_time = T0 + timedelta(milliseconds=123)  # millisecond resolution survives
    content.events[0] = MeterEvent("clock_set", _at(1, 23, 50), 17, "old 23:49:58 new 23:50:00")
    frame = encode_uplink(content, key=KEY_A, counter=7, topic_root=ROOT, site_code="demo")
    verify(frame, KEY_A)
    site, kind, decoded = decode_uplink(frame)
    assert (site, kind) == ("demo", "data")
    assert decoded == content


def test_reply_carries_its_request_id() -> None:
    content = worked_example()
    content.request_id = "rr-0001"
    frame = encode_uplink(content, key=KEY_A, counter=8, topic_root=ROOT, site_code="demo", kind=REPLY)
    assert frame.topic == "openami/v1/demo/up/SN0001/reply"
    _site, kind, decoded = decode_uplink(frame)
    assert kind == "reply"
    assert decoded.request_id == "rr-0001"


def test_only_replies_carry_a_request_id() -> None:
    content = worked_example()
    content.request_id = "rr-0001"
    with pytest.raises(ValidationError, match="request id"):
        encode_uplink(content, key=KEY_A, counter=8, topic_root=ROOT, site_code="demo")
    payload = pack({**REGISTER, "rid_": "rr-1"})
    with pytest.raises(FrameRejected, match="only allowed in replies") as err:
        decode_uplink(signed(payload))
    assert err.value.reason == "malformed"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (UplinkContent("SN0001", T0), "at least one record"),
        (UplinkContent("SN0001", T0, registers=[RegisterValue("9-9:9.9.9", T0, 1)]), "9-9:9.9.9"),
        (
            UplinkContent("SN0001", T0, intervals=[IntervalValue("1-0:1.29.0", _at(1, 23, 50), 900, 1)]),
            "not aligned",
        ),
        (UplinkContent("SN0001", T0, instants=[InstantValue("1-0:1.8.0", T0, 1.0)]), "instant/state"),
        (UplinkContent("SN0001", T0, events=[MeterEvent("Power Down", T0, 1)]), "event code"),
    ],
)
def test_encoder_refuses_what_it_cannot_encode(content: UplinkContent, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        encode_uplink(content, key=KEY_A, counter=1, topic_root=ROOT, site_code="demo")


def test_encoder_refuses_bad_keys_counters_and_names() -> None:
    content = worked_example()
    with pytest.raises(ValidationError, match="32 bytes"):
        encode_uplink(content, key=b"short", counter=1, topic_root=ROOT, site_code="demo")
    with pytest.raises(ValidationError, match="counter 0"):
        encode_uplink(content, key=KEY_A, counter=0, topic_root=ROOT, site_code="demo")
    with pytest.raises(ValidationError, match="site_code"):
        encode_uplink(content, key=KEY_A, counter=1, topic_root=ROOT, site_code="de/mo")
    with pytest.raises(ValidationError, match="topic root"):
        encode_uplink(content, key=KEY_A, counter=1, topic_root="openami/+", site_code="demo")


# --- MAC ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    [
        lambda f: Frame(f.topic, f.payload.replace(b"152", b"153"), f.counter, f.mac),
        lambda f: Frame(f.topic.replace("SN0001", "SN0002"), f.payload, f.counter, f.mac),
        lambda f: Frame(f.topic, f.payload, f.counter + 1, f.mac),
        lambda f: Frame(f.topic, f.payload, f.counter, f.mac[:-1] + ("0" if f.mac[-1] != "0" else "1")),
        lambda f: Frame(f.topic, f.payload, f.counter, "not hex"),
        lambda f: Frame(f.topic, f.payload, 2**64, f.mac),
    ],
    ids=["payload", "topic", "counter", "mac", "mac-not-hex", "counter-too-big"],
)
def test_any_change_breaks_the_signature(tamper: object) -> None:
    frame = encode_uplink(worked_example(), key=KEY_A, counter=42, topic_root=ROOT, site_code="demo")
    with pytest.raises(FrameRejected) as err:
        verify(tamper(frame), KEY_A)  # type: ignore[operator]
    assert err.value.reason == "bad_signature"


def test_another_meters_key_is_refused_and_uppercase_hex_accepted() -> None:
    frame = encode_uplink(worked_example(), key=KEY_A, counter=42, topic_root=ROOT, site_code="demo")
    with pytest.raises(FrameRejected, match="does not match"):
        verify(frame, KEY_B)
    verify(Frame(frame.topic, frame.payload, frame.counter, frame.mac.upper()), KEY_A)


# --- malformed uplinks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'[{"bn": ', "not JSON"),
        (b"\xff\xfe[]", "not UTF-8"),
        ('{"bn": "urn:dev:serial:SN0001:"}', "not a SenML pack"),
        ("[]", "not a SenML pack"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps([{"bt": 1772409605, **REGISTER}]), "base name"),
        (json.dumps([{"bn": "urn:dev:serial:SN0002:", "bt": 1772409605, **REGISTER}]), "base name"),
        (json.dumps([{"bn": "urn:dev:serial:SN0001:", **REGISTER}]), "base time"),
        (json.dumps([{"bn": "urn:dev:serial:SN0001:", "bt": 600, **REGISTER}]), "absolute"),
        (json.dumps([{"bn": "urn:dev:serial:SN0001:", "bt": "now", **REGISTER}]), "must be a number"),
        (pack({"n": "1-0:9.9.9", "u": "Wh", "v": 1}), "unknown OBIS"),
        (pack({"n": "1-0:1.29.0", "u": "Wh", "t": -905, "v": 1}), "without its length"),
        (pack({"n": "1-0:1.29.0", "u": "Wh", "t": -905, "v": 1, "il_": 700}), "700 s is not one of"),
        (pack({"n": "1-0:1.29.0", "u": "Wh", "t": -600, "v": 1, "il_": 900}), "not aligned"),
        (pack({"n": "1-0:1.29.0", "u": "Wh", "t": -905, "v": 1, "il_": 900, "st_": -1}), "st_ -1"),
        (pack({"n": "1-0:1.29.0", "u": "Wh", "t": -905, "v": 1.5, "il_": 900}), "whole Wh"),
        (pack({**REGISTER, "u": "kWh"}), "unit must be 'Wh'"),
        (pack({**REGISTER, "vs": "x"}), "exactly one value field"),
        (pack({"n": "1-0:1.8.0", "u": "Wh"}), "exactly one value field"),
        (pack({"n": "1-0:1.8.0", "u": "Wh", "vs": "1000"}), "numeric value v"),
        (pack({**REGISTER, "v": True}), "must be a number"),
        (pack({**REGISTER, "zz_": 1}), "must-understand"),
        (pack({**REGISTER, "il_": 900}), "not allowed on a register"),
        (pack({"n": "0-0:99.98.0", "vs": "power_up"}), "without its sequence"),
        (pack({"n": "0-0:99.98.0", "vs": "Power Up!", "seq_": 1}), "event code"),
        (pack({"n": "0-0:99.98.0", "v": 1, "seq_": 1}), "code as a string"),
        (
            pack({"n": "0-0:99.98.0", "vs": "a", "seq_": 1}, {"n": "0-0:99.98.0", "vs": "b", "seq_": 1}),
            "twice",
        ),
        (pack(REGISTER, REGISTER), "a second value"),
        (pack(REGISTER, {"n": "urn:dev:serial:SN0002:1-0:1.8.0", "bn": "", "u": "Wh", "v": 1}), "belong"),
        (pack(REGISTER, {**REGISTER, "t": 1, "rid_": "x"}), "first record"),
    ],
)
def test_malformed_payloads_are_refused_with_a_reason(payload: bytes | str, message: str) -> None:
    with pytest.raises(FrameRejected, match=message) as err:
        decode_uplink(signed(payload))
    assert err.value.reason == "malformed"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_impossible_values(literal: str) -> None:
    payload = pack({"n": "1-0:32.7.0", "u": "V", "v": 0}).replace('"v": 0', f'"v": {literal}')
    with pytest.raises(FrameRejected, match=literal.lstrip("-")) as err:
        decode_uplink(signed(payload))
    assert err.value.reason == "impossible_value"


def test_unrepresentable_times_are_out_of_range() -> None:
    with pytest.raises(FrameRejected) as err:
        decode_uplink(signed(pack({**REGISTER, "t": 1e15})))
    assert err.value.reason == "time_out_of_range"


def test_senml_base_values_and_unknown_plain_fields_follow_rfc_8428() -> None:
    payload = pack(
        {"n": "1-0:1.8.0", "bu": "Wh", "bv": 1000, "v": 5, "comment": "ignored, not must-understand"},
        {"n": "1-0:2.8.0", "bt": 1772409600, "v": 7},
    )
    _site, _kind, content = decode_uplink(signed(payload))
    assert content.meter_time == T0
    assert content.registers == [
        RegisterValue("1-0:1.8.0", T0, 1005),
        RegisterValue("1-0:2.8.0", T0 - timedelta(seconds=5), 1007),
    ]


@pytest.mark.parametrize(
    ("topic", "counter", "message"),
    [
        ("demo/up/SN0001/data", 1, "is not {root}"),
        ("openami/v1/demo/up/SN0001", 1, "not a known direction"),
        ("openami/v1/demo/sideways/SN0001/data", 1, "not a known direction"),
        ("openami/v1/demo/up/SN0001/cmd", 1, "not a known direction"),
        ("openami/v1/demo/up/SN 0001/data", 1, "serial"),
        ("/demo/up/SN0001/data", 1, "is not {root}"),
        ("openami/v1/demo/down/SN0001/cmd", 1, "not an uplink topic"),
        (TOPIC, 0, "counter 0"),
        (TOPIC, 2**63, "counter"),
    ],
)
def test_bad_topics_and_counters_are_malformed(topic: str, counter: int, message: str) -> None:
    frame = Frame(topic, pack(REGISTER).encode(), counter, "00" * 32)
    with pytest.raises(FrameRejected, match=message) as err:
        decode_uplink(frame)
    assert err.value.reason == "malformed"


def test_topics() -> None:
    assert uplink_topic("a/b/c", "demo", "SN1", "reply") == "a/b/c/demo/up/SN1/reply"
    assert command_topic(ROOT, "demo", "SN1") == "openami/v1/demo/down/SN1/cmd"
    parsed = parse_topic("a/b/c/demo/up/SN1/reply")
    assert (parsed.root, parsed.site_code, parsed.direction, parsed.serial, parsed.kind) == (
        "a/b/c",
        "demo",
        "up",
        "SN1",
        "reply",
    )


# --- commands -------------------------------------------------------------------------------------------


def test_command_round_trip_and_documented_bytes() -> None:
    cmd = reread_command("rr-0001", _at(1, 22, 0), _at(2, 0, 0))
    frame = encode_command(cmd, key=KEY_A, counter=7, topic_root=ROOT, site_code="demo", serial="SN0001")
    assert frame.topic == "openami/v1/demo/down/SN0001/cmd"
    assert frame.payload == (
        b'{"args":{"end":"2026-03-02T00:00:00Z","start":"2026-03-01T22:00:00Z"},'
        b'"name":"reread","request_id":"rr-0001"}'
    )
    assert decode_command(frame, KEY_A) == cmd
    assert parse_utc(cmd.args["start"]) == _at(1, 22, 0)
    # docs/protocol.md section 5: the same command with the test-vector key and down-link counter 7
    signed_doc = encode_command(
        cmd, key=bytes(range(32)), counter=7, topic_root=ROOT, site_code="demo", serial="SN0001"
    )
    assert signed_doc.mac == "dd06fc8979095f07d006a598bfe229eef978a817b2c1337a0869ddb30769dd8b"


def test_meters_refuse_commands_signed_with_another_key() -> None:
    frame = encode_command(
        Command("disconnect", "d-1", {}),
        key=KEY_A,
        counter=1,
        topic_root=ROOT,
        site_code="demo",
        serial="SN0001",
    )
    with pytest.raises(FrameRejected) as err:
        decode_command(frame, KEY_B)
    assert err.value.reason == "bad_signature"


@pytest.mark.parametrize(
    ("cmd", "message"),
    [
        (Command("explode", "x-1", {}), "unknown command"),
        (Command("reread", "x-1", {"start": "2026-03-01T00:00:00Z"}), "takes arguments"),
        (
            Command("reread", "x-1", {"start": "2026-03-02T00:00:00Z", "end": "2026-03-01T00:00:00Z"}),
            "not after",
        ),
        (Command("set_clock", "x-1", {"time": "2026-03-01T00:00:00"}), "no UTC offset"),
        (Command("connect", "bad id!", {}), "request_id"),
    ],
)
def test_bad_commands_are_refused(cmd: Command, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        encode_command(cmd, key=KEY_A, counter=1, topic_root=ROOT, site_code="demo", serial="SN0001")
    topic = command_topic(ROOT, "demo", "SN0001")
    body = json.dumps({"name": cmd.name, "request_id": cmd.request_id, "args": cmd.args}).encode()
    with pytest.raises(FrameRejected, match=message):
        decode_command(Frame(topic, body, 1, sign(topic, 1, body, KEY_A)), KEY_A)


def test_command_payload_must_be_the_documented_object() -> None:
    topic = command_topic(ROOT, "demo", "SN0001")
    for body in (b"not json", b'{"name": "connect", "request_id": "c-1"}', b"[]"):
        with pytest.raises(FrameRejected) as err:
            decode_command(Frame(topic, body, 1, sign(topic, 1, body, KEY_A)), KEY_A)
        assert err.value.reason == "malformed"

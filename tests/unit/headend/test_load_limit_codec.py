"""The set_load_limit command on the wire: a round trip, and every bad limit refused both where the command is
made (encode) and where the meter decodes it."""

from __future__ import annotations

import json

import pytest

from openami.common.errors import FrameRejected, ValidationError
from openami.headend.codec import (
    MAX_LOAD_LIMIT_W,
    Command,
    Frame,
    command_topic,
    decode_command,
    encode_command,
    load_limit_command,
    parse_load_limit,
    sign,
)
from tests.unit.headend.helpers import KEY_A, ROOT


def test_round_trip() -> None:
    cmd = load_limit_command("ctl-7-1", 2500)
    assert cmd == Command("set_load_limit", "ctl-7-1", {"limit_w": "2500"})
    frame = encode_command(cmd, key=KEY_A, counter=3, topic_root=ROOT, site_code="demo", serial="SN0001")
    assert frame.payload == b'{"args":{"limit_w":"2500"},"name":"set_load_limit","request_id":"ctl-7-1"}'
    decoded = decode_command(frame, KEY_A)
    assert decoded == cmd
    assert parse_load_limit(decoded.args["limit_w"]) == 2500
    assert parse_load_limit("0") == 0  # no limit
    assert parse_load_limit(str(MAX_LOAD_LIMIT_W)) == MAX_LOAD_LIMIT_W


@pytest.mark.parametrize("bad", [-1, MAX_LOAD_LIMIT_W + 1, 2.5, True, None, "2500"])
def test_a_bad_limit_is_refused_where_the_command_is_made(bad: object) -> None:
    with pytest.raises(ValidationError, match="a load limit is a whole number of W") as err:
        load_limit_command("ctl-1-1", bad)  # type: ignore[arg-type]
    assert err.value.location == "limit_w"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"limit_w": "-5"}, "limit_w must be a whole number"),
        ({"limit_w": "+5"}, "limit_w must be a whole number"),
        ({"limit_w": "0100"}, "limit_w must be a whole number"),
        ({"limit_w": "2.5"}, "limit_w must be a whole number"),
        ({"limit_w": "1e3"}, "limit_w must be a whole number"),
        ({"limit_w": ""}, "limit_w must be a whole number"),
        ({"limit_w": " 100"}, "limit_w must be a whole number"),
        ({"limit_w": str(MAX_LOAD_LIMIT_W + 1)}, "limit_w must be a whole number"),
        ({"limit_w": "99999999999999999999"}, "limit_w must be a whole number"),
        ({"limit_w": 100}, "must be a string"),
        ({}, "takes arguments"),
        ({"limit_w": "100", "extra": "1"}, "takes arguments"),
    ],
)
def test_a_bad_limit_is_refused_by_encode_and_by_the_meter_decoding_it(
    args: dict[str, object], message: str
) -> None:
    cmd = Command("set_load_limit", "ctl-1-1", args)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=message):
        encode_command(cmd, key=KEY_A, counter=1, topic_root=ROOT, site_code="demo", serial="SN0001")
    # A head-end that skipped the check (or an attacker with the key) cannot get it past the meter either.
    topic = command_topic(ROOT, "demo", "SN0001")
    body = json.dumps({"name": cmd.name, "request_id": cmd.request_id, "args": args}).encode()
    frame = Frame(topic, body, 1, sign(topic, 1, body, KEY_A))
    with pytest.raises(FrameRejected, match=message) as err:
        decode_command(frame, KEY_A)
    assert err.value.reason == "malformed"

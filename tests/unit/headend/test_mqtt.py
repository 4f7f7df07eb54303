"""The MQTT transport without a broker: a fake paho client shows what is subscribed, batched and acked."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from openami.headend.codec import Frame
from openami.headend.mqtt import MqttTransport, frame_properties, message_frame
from openami.headend.service import BatchNotCommittedError


class FakeClient:
    """Records what the transport asks of paho; `deliver` plays the broker sending a message."""

    def __init__(self) -> None:
        self.on_connect: Callable[..., None] | None = None
        self.on_disconnect: Callable[..., None] | None = None
        self.on_message: Callable[..., None] | None = None
        self.on_subscribe: Callable[..., None] | None = None
        self.connect_args: dict[str, Any] = {}
        self.subscriptions: list[str] = []
        self.acks: list[int] = []
        self.disconnected = False

    def connect(self, host: str, port: int, **kwargs: Any) -> None:
        self.connect_args = {"host": host, "port": port, **kwargs}

    def loop_start(self) -> None:
        assert self.on_connect is not None
        self.on_connect(
            self, None, SimpleNamespace(session_present=False), SimpleNamespace(is_failure=False), None
        )

    def subscribe(self, topic: str, **_kwargs: Any) -> tuple[MQTTErrorCode, int]:
        self.subscriptions.append(topic)
        assert self.on_subscribe is not None
        self.on_subscribe(self, None, 1, [SimpleNamespace(is_failure=False)], None)
        return MQTTErrorCode.MQTT_ERR_SUCCESS, 1

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        self.acks.append(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def disconnect(self) -> None:
        self.disconnected = True

    def loop_stop(self) -> None:
        pass

    def deliver(self, frame: Frame, mid: int) -> None:
        message = paho.MQTTMessage(mid=mid, topic=frame.topic.encode())
        message.payload = frame.payload
        message.qos = 1
        message.properties = frame_properties(frame, "application/senml+json")
        assert self.on_message is not None
        self.on_message(self, None, message)


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def transport(fake: FakeClient, **kwargs: Any) -> MqttTransport:
    return MqttTransport(
        host="broker",
        port=1883,
        client_id="worker-1",
        topic_root="openami/v1",
        share_group="headend",
        batch_wait_s=0.01,
        retry_delay_s=0.01,
        client_factory=lambda _id: fake,  # type: ignore[arg-type,return-value]
        **kwargs,
    )


FRAMES = [Frame(f"openami/v1/demo/up/SN{i:04d}/data", b"[]", 10 + i, f"{i:064x}") for i in range(3)]


def test_persistent_session_shared_subscription_and_receive_maximum() -> None:
    fake = FakeClient()
    t = transport(fake, receive_maximum=800)
    t.start(lambda frames: None)
    t.stop()
    assert fake.connect_args["clean_start"] is False
    props = fake.connect_args["properties"]
    assert props.SessionExpiryInterval > 0
    assert props.ReceiveMaximum == 800
    assert fake.subscriptions == ["$share/headend/openami/v1/+/up/#"]
    assert fake.disconnected


def test_messages_are_acked_only_after_the_handler_committed() -> None:
    fake = FakeClient()
    acks_seen_by_handler: list[int] = []
    batches: list[list[Frame]] = []

    def handler(frames: list[Frame]) -> None:
        acks_seen_by_handler.append(len(fake.acks))
        batches.append(frames)
        if len(batches) <= 2:
            raise BatchNotCommittedError("database away")

    t = transport(fake)
    t.start(handler)
    for mid, f in enumerate(FRAMES, start=1):
        fake.deliver(f, mid)
    assert wait_until(lambda: len(fake.acks) == 3)
    t.stop()
    assert acks_seen_by_handler == [0, 0, 0]
    assert all(b == FRAMES for b in batches)  # the same batch each time, counter and mac intact
    assert sorted(fake.acks) == [1, 2, 3]
    assert (t.acknowledged, t.failures) == (3, 2)


def test_stopping_during_failures_acknowledges_nothing() -> None:
    fake = FakeClient()
    called = threading.Event()

    def handler(frames: list[Frame]) -> None:
        called.set()
        raise BatchNotCommittedError("database away")

    t = transport(fake)
    t.start(handler)
    fake.deliver(FRAMES[0], 1)
    assert called.wait(10)
    t.stop()
    assert fake.acks == []


def test_a_message_without_counter_or_mac_becomes_a_frame_the_headend_refuses() -> None:
    message = paho.MQTTMessage(mid=1, topic=b"openami/v1/demo/up/SN0001/data")
    message.payload = b"[]"
    assert message_frame(message) == Frame("openami/v1/demo/up/SN0001/data", b"[]", 0, "")
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = [("counter", "-5"), ("mac", "ab")]
    message.properties = props
    assert message_frame(message).counter == 0


def test_batch_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        transport(FakeClient(), batch_size=0)
    with pytest.raises(ValueError, match="receive_maximum"):
        transport(FakeClient(), receive_maximum=0)

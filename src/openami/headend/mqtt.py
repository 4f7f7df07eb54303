"""MQTT 5 transport (paho-mqtt 2): QoS 1, a persistent session, a shared subscription, acks after commit.

Each worker connects with a stable client id and `clean_start=False`, so a worker that dies and comes back
under the same id gets every message it had not acknowledged. Workers of one share group split the fleet's
uplink (`$share/{group}/{root}/+/up/#`). Messages are collected into batches (up to `batch_size` or
`batch_wait_s`), handed to the head-end, and acknowledged (PUBACK) only after the handler returned, i.e.
after the commit. A frame's `counter` and `mac` travel as the MQTT 5 user properties "counter" and "mac".
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from openami.headend.codec import Frame
from openami.headend.transport import FrameHandler, TransportError

log = structlog.get_logger(__name__)


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves its constructor unannotated


COUNTER_PROPERTY = "counter"
MAC_PROPERTY = "mac"
UPLINK_CONTENT_TYPE = "application/senml+json"
COMMAND_CONTENT_TYPE = "application/json"


def frame_properties(frame: Frame, content_type: str) -> Properties:
    props = _properties(PacketTypes.PUBLISH)
    props.UserProperty = [(COUNTER_PROPERTY, str(frame.counter)), (MAC_PROPERTY, frame.mac)]
    props.PayloadFormatIndicator = 1  # UTF-8
    props.ContentType = content_type
    return props


def message_frame(message: paho.MQTTMessage) -> Frame:
    """The Frame an MQTT message carries. A missing or unreadable counter becomes 0 and a missing mac "",
    which the head-end refuses (and records) as malformed rather than dropping silently."""
    pairs = getattr(message.properties, "UserProperty", None) or []
    props = dict(pairs)
    raw_counter = props.get(COUNTER_PROPERTY, "")
    counter = int(raw_counter) if raw_counter.isdigit() and len(raw_counter) <= 20 else 0
    return Frame(message.topic, bytes(message.payload), counter, props.get(MAC_PROPERTY, ""))


def _client(client_id: str) -> paho.Client:
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
        manual_ack=True,
    )
    client.max_inflight_messages_set(1000)  # our own publishes awaiting PUBACK (publisher helper, commands)
    client.max_queued_messages_set(0)  # never drop an outgoing message for lack of room
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def _connect(
    client: paho.Client, host: str, port: int, keepalive_s: int, props: Properties, *, clean: bool
) -> None:
    try:
        client.connect(host, port, keepalive=keepalive_s, clean_start=clean, properties=props)
    except (OSError, ValueError) as exc:
        raise TransportError(f"cannot connect to the MQTT broker at {host}:{port}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class _Received:
    frame: Frame
    mid: int
    qos: int
    connection: int  # which connection delivered it: an ack only makes sense on that same connection


class MqttTransport:
    """The head-end side: consumes uplink frames from a shared subscription, publishes commands."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        topic_root: str,
        share_group: str,
        batch_size: int = 500,
        batch_wait_s: float = 0.05,
        session_expiry_s: int = 7 * 24 * 3600,
        receive_maximum: int = 1000,
        keepalive_s: int = 30,
        connect_timeout_s: float = 10.0,
        retry_delay_s: float = 1.0,
        client_factory: Callable[[str], paho.Client] = _client,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 1 <= receive_maximum <= 65535:
            raise ValueError(f"receive_maximum must be 1..65535, got {receive_maximum}")
        self.host, self.port, self.client_id = host, port, client_id
        self.subscription = f"$share/{share_group}/{topic_root}/+/up/#"
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self._session_expiry_s = session_expiry_s
        # Sized above one batch so the broker keeps the next batch flowing while this one commits.
        self._receive_maximum = receive_maximum
        self._keepalive_s = keepalive_s
        self._connect_timeout_s = connect_timeout_s
        self._retry_delay_s = retry_delay_s
        self._inbox: queue.Queue[_Received] = queue.Queue()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._connection = 0
        self._handler: FrameHandler | None = None
        self._worker: threading.Thread | None = None
        self._client = client_factory(client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self.acknowledged = 0
        self.failures = 0

    # --- paho callbacks (network thread) --------------------------------------------------------------

    def _on_connect(self, client: paho.Client, _u: object, flags: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("mqtt_connect_refused", client_id=self.client_id, reason=str(reason))
            return
        self._connection += 1
        # Re-subscribing on a resumed session is harmless and covers a broker that lost the session.
        client.subscribe(self.subscription, options=SubscribeOptions(qos=1))
        self._connected.set()
        log.info(
            "mqtt_connected",
            client_id=self.client_id,
            session_present=getattr(flags, "session_present", None),
        )

    def _on_subscribe(self, _c: paho.Client, _u: object, _mid: int, reasons: list[Any], _p: object) -> None:
        failed = [str(r) for r in reasons if getattr(r, "is_failure", False)]
        if failed:
            log.error("mqtt_subscribe_refused", subscription=self.subscription, reasons=failed)
            return
        self._subscribed.set()

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("mqtt_disconnected", client_id=self.client_id, reason=str(reason))

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        self._inbox.put(_Received(message_frame(message), message.mid, message.qos, self._connection))

    # --- Transport ------------------------------------------------------------------------------------

    def start(self, handler: FrameHandler) -> None:
        """Connect, subscribe, start the batching thread. TransportError if the broker is unreachable."""
        self._handler = handler
        props = _properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry_s
        props.ReceiveMaximum = self._receive_maximum
        _connect(self._client, self.host, self.port, self._keepalive_s, props, clean=False)
        self._client.loop_start()
        if not (
            self._connected.wait(self._connect_timeout_s) and self._subscribed.wait(self._connect_timeout_s)
        ):
            self._client.loop_stop()
            raise TransportError(
                f"the MQTT broker at {self.host}:{self.port} did not accept the connection and "
                f"subscription {self.subscription} within {self._connect_timeout_s} s"
            )
        self._worker = threading.Thread(target=self._run, name=f"mqtt-headend-{self.client_id}", daemon=True)
        self._worker.start()

    def _collect(self) -> list[_Received]:
        try:
            first = self._inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._inbox.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        handler = self._handler
        if handler is None:  # start() sets it before starting this thread
            return
        while not self._stopping.is_set():
            batch = self._collect()
            if not batch:
                continue
            # Retry the same batch until it commits: its messages stay unacknowledged meanwhile, and the
            # broker sends no more than receive_maximum of them, so nothing piles up or gets lost.
            while True:
                try:
                    handler([r.frame for r in batch])
                    break
                except Exception as exc:  # a worker must survive any failing batch
                    self.failures += 1
                    log.error("mqtt_batch_failed", frames=len(batch), error=str(exc))
                    if self._stopping.wait(self._retry_delay_s):
                        return  # unacknowledged: the broker delivers them again to the next session
            self._ack(batch)

    def _ack(self, batch: Iterable[_Received]) -> None:
        for item in batch:
            if item.connection != self._connection:
                continue  # delivered on an earlier connection: the broker re-sends it on this one
            rc = self._client.ack(item.mid, item.qos)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.acknowledged += 1
            else:
                log.warning("mqtt_ack_failed", mid=item.mid, error=paho.error_string(rc))

    def publish_command(self, frame: Frame) -> None:
        _publish(self._client, frame, COMMAND_CONTENT_TYPE, timeout_s=self._connect_timeout_s)

    def stop(self) -> None:
        """Finish and acknowledge the batch in hand, then disconnect. Queued, unhandled messages stay
        unacknowledged in the session, for this client id's next connection."""
        self._stopping.set()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        self._client.disconnect()
        self._client.loop_stop()


def _publish(client: paho.Client, frame: Frame, content_type: str, *, timeout_s: float) -> None:
    try:
        info = client.publish(
            frame.topic, frame.payload, qos=1, properties=frame_properties(frame, content_type)
        )
        info.wait_for_publish(timeout=timeout_s)
    except (RuntimeError, ValueError, OSError) as exc:
        raise TransportError(f"publishing to {frame.topic} failed: {exc}") from exc
    if not info.is_published():
        raise TransportError(f"the broker did not confirm {frame.topic} within {timeout_s} s")


class MqttFramePublisher:
    """The meter side, for the simulator and benchmarks: publishes uplink frames (QoS 1, waiting for every
    PUBACK) and receives the down-link commands of a topic root."""

    def __init__(self, *, host: str, port: int, client_id: str = "", connect_timeout_s: float = 10.0) -> None:
        self._client = _client(client_id)
        self._timeout_s = connect_timeout_s
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *_args: self._connected.clear()
        self._command_receiver: Callable[[Frame], None] | None = None
        self._command_topic: str | None = None
        self._client.on_message = self._on_message
        _connect(self._client, host, port, 30, _properties(PacketTypes.CONNECT), clean=True)
        self._client.loop_start()
        if not self._connected.wait(connect_timeout_s):
            self._client.loop_stop()
            raise TransportError(f"no CONNACK from the MQTT broker at {host}:{port}")

    def _on_connect(self, _c: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if not getattr(reason, "is_failure", False):
            self._connected.set()

    def publish(self, frames: Iterable[Frame], *, timeout_s: float = 60.0) -> int:
        """Publish frames and wait until the broker confirmed them all; returns how many."""
        infos = []
        try:
            for frame in frames:
                props = frame_properties(frame, UPLINK_CONTENT_TYPE)
                infos.append(self._client.publish(frame.topic, frame.payload, qos=1, properties=props))
        except (RuntimeError, ValueError, OSError) as exc:
            raise TransportError(f"publishing frames failed: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                raise TransportError(f"the broker did not confirm {len(infos)} frames within {timeout_s} s")
        return len(infos)

    def subscribe_commands(self, topic_root: str, receiver: Callable[[Frame], None]) -> None:
        """Deliver every command frame under `topic_root` to `receiver` (on paho's network thread)."""
        self._command_receiver = receiver
        self._command_topic = f"{topic_root}/+/down/+/cmd"
        result, _mid = self._client.subscribe(self._command_topic, options=SubscribeOptions(qos=1))
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError(f"subscribing to {self._command_topic} failed: {paho.error_string(result)}")

    def _on_message(self, client: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        if self._command_receiver is not None:
            self._command_receiver(message_frame(message))
        client.ack(message.mid, message.qos)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

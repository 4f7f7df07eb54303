"""The in-process transport: batching, no acknowledgement without a commit, commands and their replies."""

from __future__ import annotations

import threading

import pytest

from openami.headend.codec import Frame
from openami.headend.inprocess import InProcessTransport
from openami.headend.transport import TransportError


def frames(n: int) -> list[Frame]:
    return [Frame(f"openami/v1/demo/up/SN{i:04d}/data", b"[]", i + 1, "") for i in range(n)]


def test_frames_are_handed_over_in_batches_in_order() -> None:
    seen: list[list[Frame]] = []
    transport = InProcessTransport(batch_size=3, background=False)
    transport.start(seen.append)
    sent = frames(7)
    transport.submit(sent)
    assert transport.pump() == 7
    assert [len(b) for b in seen] == [3, 3, 1]
    assert [f for b in seen for f in b] == sent
    assert (transport.acknowledged, transport.pending()) == (7, 0)


def test_a_failing_batch_goes_back_to_the_front_unacknowledged() -> None:
    calls: list[list[Frame]] = []

    def handler(batch: list[Frame]) -> None:
        calls.append(batch)
        if len(calls) == 2:
            raise RuntimeError("commit failed")

    transport = InProcessTransport(batch_size=2, background=False)
    transport.start(handler)
    sent = frames(5)
    transport.submit(sent)
    with pytest.raises(RuntimeError, match="commit failed"):
        transport.pump()
    assert (transport.acknowledged, transport.pending(), transport.failures) == (2, 3, 1)
    assert transport.pump() == 3
    assert calls[2] == calls[1] == sent[2:4]  # the same frames, in the same order
    assert transport.acknowledged == 5


def test_the_background_thread_survives_failures_and_retries() -> None:
    attempts: list[int] = []
    done = threading.Event()

    def handler(batch: list[Frame]) -> None:
        attempts.append(len(batch))
        if len(attempts) < 3:
            raise RuntimeError("database away")
        done.set()

    transport = InProcessTransport(batch_size=10, retry_delay_s=0.01)
    transport.start(handler)
    transport.submit(frames(4))
    assert done.wait(10)
    assert transport.wait_idle(10)
    transport.stop()
    assert attempts == [4, 4, 4]
    assert (transport.acknowledged, transport.failures) == (4, 2)


def test_stop_leaves_unhandled_frames_queued() -> None:
    transport = InProcessTransport(background=False)
    transport.start(lambda batch: None)
    transport.submit(frames(3))
    transport.stop()
    assert transport.pending() == 3


def test_pump_without_start_refuses_and_keeps_the_frames() -> None:
    transport = InProcessTransport(background=False)
    transport.submit(frames(2))
    with pytest.raises(TransportError, match="not started"):
        transport.pump()
    assert transport.pending() == 2


def test_commands_reach_the_receiver_and_replies_are_queued_uplink() -> None:
    reply = frames(1)
    received: list[tuple[str, Frame]] = []

    def meter_side(serial: str, command: Frame) -> list[Frame]:
        received.append((serial, command))
        return reply

    transport = InProcessTransport(background=False, on_command=meter_side)
    command = Frame("openami/v1/demo/down/SN0000/cmd", b"{}", 1, "")
    transport.publish_command(command)
    assert received == [("SN0000", command)]
    assert transport.pending() == 1


def test_commands_without_a_receiver_fail_loudly() -> None:
    with pytest.raises(TransportError, match="no meter listens"):
        InProcessTransport(background=False).publish_command(Frame("r/s/down/SN1/cmd", b"{}", 1, ""))


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        InProcessTransport(batch_size=0)

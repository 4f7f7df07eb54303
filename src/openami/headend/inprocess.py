"""The in-process transport: a thread-safe queue between simulated meters and the head-end in one process.

Meters `submit` frames; the head-end drains them in batches, either on its own thread (`start`) or when
the caller says so (`pump`, deterministic for the demo and tests). A batch leaves the queue only when the
handler returned (committed); if it raises, the frames go back to the front of the queue in their order,
which is this transport's way of not acknowledging them. Down-link commands go to a registered callable
(the simulator's meters) and any reply frames it returns are queued like any other uplink.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable

import structlog

from openami.headend.codec import Frame, parse_topic
from openami.headend.transport import FrameHandler, TransportError

log = structlog.get_logger(__name__)

# (serial, signed command frame) -> reply frames: the shape of the simulator's `Fleet.handle_command`.
CommandReceiver = Callable[[str, Frame], Iterable[Frame] | None]


class InProcessTransport:
    def __init__(
        self,
        *,
        batch_size: int = 500,
        on_command: CommandReceiver | None = None,
        background: bool = True,
        retry_delay_s: float = 0.5,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self._on_command = on_command
        self._background = background
        self._retry_delay_s = retry_delay_s
        self._queue: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._handler: FrameHandler | None = None
        self._busy = False  # a batch is out of the queue and in the handler
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.acknowledged = 0  # frames whose batch committed
        self.failures = 0  # handler calls that raised

    def set_command_receiver(self, on_command: CommandReceiver) -> None:
        """Where down-link commands go (the simulator's meters). Frames it returns are queued uplink."""
        self._on_command = on_command

    # --- uplink ---------------------------------------------------------------------------------------

    def submit(self, frames: Iterable[Frame]) -> None:
        """Queue frames from meters (any thread)."""
        with self._cond:
            self._queue.extend(frames)
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def start(self, handler: FrameHandler) -> None:
        with self._cond:
            self._handler = handler
            self._stopping = False
        if self._background and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inprocess-headend", daemon=True)
            self._thread.start()

    def pump(self, max_batches: int | None = None) -> int:
        """Drain the queue on the caller's thread, batch by batch; returns the frames committed.

        A failing batch is put back and its error raised, so nothing is lost and the caller decides what next.
        """
        done = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            batch = self._take(block=False)
            if not batch:
                break
            self._deliver(batch)
            done += len(batch)
            batches += 1
        return done

    def _take(self, *, block: bool) -> list[Frame]:
        with self._cond:
            while block and not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping and block:
                return []
            n = min(self.batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._busy = bool(batch)
            return batch

    def _deliver(self, batch: list[Frame]) -> None:
        handler = self._handler
        if handler is None:
            self._put_back(batch)
            raise TransportError("the in-process transport was not started: no handler for its frames")
        try:
            handler(batch)
        except BaseException:
            self._put_back(batch)
            with self._cond:
                self.failures += 1
            raise
        with self._cond:
            self.acknowledged += len(batch)
            self._busy = False
            self._cond.notify_all()

    def _put_back(self, batch: list[Frame]) -> None:
        with self._cond:
            self._queue.extendleft(reversed(batch))
            self._busy = False
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            batch = self._take(block=True)
            if not batch:
                return
            try:
                self._deliver(batch)
            except Exception as exc:  # a worker thread must survive a failing batch; it retries it
                log.error("inprocess_batch_failed", frames=len(batch), error=str(exc))
                with self._cond:
                    if self._cond.wait_for(lambda: self._stopping, timeout=self._retry_delay_s):
                        return

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until every queued frame is committed (True) or `timeout_s` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout=timeout_s)

    def stop(self) -> None:
        """Finish the batch in hand, then stop the drain thread. Frames still queued stay queued."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # --- down-link ------------------------------------------------------------------------------------

    def publish_command(self, frame: Frame) -> None:
        if self._on_command is None:
            raise TransportError(f"no meter listens for commands in this process ({frame.topic})")
        replies = self._on_command(parse_topic(frame.topic).serial, frame)
        if replies:
            self.submit(replies)

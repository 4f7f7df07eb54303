"""The port every transport implements: frames in (acknowledged only once committed), commands out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from openami.common.errors import OpenAMIError
from openami.headend.codec import Frame

# Processes a batch of uplink frames and commits. Returning means "committed: acknowledge them all"; raising
# means "nothing of it was stored: acknowledge none of them" (the transport delivers them again later).
FrameHandler = Callable[[list[Frame]], object]


class TransportError(OpenAMIError):
    """The transport could not do what was asked (broker unreachable, publish not confirmed ...)."""


class Transport(Protocol):
    def start(self, handler: FrameHandler) -> None:
        """Begin delivering uplink frames to `handler`, in batches."""
        ...

    def publish_command(self, frame: Frame) -> None:
        """Carry a signed down-link command frame to its meter. Raises TransportError when it cannot."""
        ...

    def stop(self) -> None:
        """Finish the batch in hand (and acknowledge it if committed), then stop delivering."""
        ...

"""The supply relay (DLMS "disconnect control", OBIS 0-0:96.3.10): a latching switch, grid to customer.

It keeps its position through a power outage, as a latching relay does. Remote commands move it, and so does the
meter's load limiter (`Meter.set_load_limit`): an open relay is a remote disconnection or a limiter trip, and the
meter's events say which.
"""

from __future__ import annotations


class Relay:
    """Output state: `connected` True when the customer is supplied."""

    __slots__ = ("connected",)

    def __init__(self, connected: bool = True) -> None:
        self.connected = connected

    def disconnect(self) -> bool:
        """Open the relay; returns True if it moved (False when it was already open)."""
        moved = self.connected
        self.connected = False
        return moved

    def connect(self) -> bool:
        """Close the relay; returns True if it moved (False when it was already closed)."""
        moved = not self.connected
        self.connected = True
        return moved

    @property
    def output_state(self) -> int:
        """The value of OBIS 0-0:96.3.10: 1 connected, 0 disconnected."""
        return 1 if self.connected else 0

"""Load-profile memory: closed intervals kept twice, each copy protected by a CRC, in a ring buffer.

Each entry is serialised to 24 bytes, little-endian, as a meter would lay it out in flash or EEPROM:

    offset  size  field
    0       8     interval_start, epoch seconds (signed), by the meter's clock
    8       2     interval_s
    10      4     import_wh (unsigned)
    14      4     export_wh (unsigned)
    18      2     status bits (`Status`)
    20      4     CRC-32 of bytes 0..19 (zlib.crc32: the ISO-HDLC / Ethernet polynomial)

CRC-32 detects every error of up to three flipped bits in a record this short, and all but 1 in 2**32 of the
rest. On reading, a copy whose CRC fails is rewritten from the other copy (and the entry gets
`Status.DATA_REPAIRED`); when both fail the entry is lost. Entries are numbered from 0 in the order written;
number n lives in slot n % capacity, so when the ring is full each new entry overwrites the oldest.
"""

from __future__ import annotations

import enum
import random
import struct
import zlib
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime

_BODY = struct.Struct("<qHIIH")
_CRC = struct.Struct("<I")
RECORD_SIZE = _BODY.size + _CRC.size
_MAX_WH = 0xFFFF_FFFF


class Status(enum.IntFlag):
    """Status bits of a load-profile interval."""

    POWER_DOWN = 1  # the meter was without supply for some or all of the interval
    CLOCK_ADJUSTED = 2  # the meter's clock was set during the interval, so its length was not the nominal one
    DATA_REPAIRED = 4  # one stored copy failed its CRC and was restored from the other
    RELAY_OPEN = 8  # the supply relay was open for some or all of the interval


@dataclass(frozen=True, slots=True)
class ProfileEntry:
    """Energy Wh imported and exported in `[interval_start, interval_start + interval_s)`, meter clock."""

    interval_start: datetime
    interval_s: int
    import_wh: int
    export_wh: int
    status: int  # bitwise OR of `Status`


@dataclass(frozen=True, slots=True)
class MemoryFault:
    """A CRC failure found while reading entry `number` (in `slot`). `repaired_copy` is the copy rewritten
    from the other one, or None when both copies failed and the entry is lost."""

    number: int
    slot: int
    interval_start_s: int
    repaired_copy: int | None

    def describe(self) -> str:
        """Which copy of which entry failed, and what became of it (the event log's detail)."""
        start = datetime.fromtimestamp(self.interval_start_s, UTC).isoformat()
        where = f"entry {self.number} (slot {self.slot}, interval {start})"
        if self.repaired_copy is None:
            return f"{where}: both copies failed their CRC-32; entry lost"
        good = 1 - self.repaired_copy
        return f"{where}: copy {self.repaired_copy} failed its CRC-32 and was restored from copy {good}"


def _crc_ok(record: bytes) -> bool:
    stored: int = _CRC.unpack_from(record, _BODY.size)[0]
    return zlib.crc32(record[: _BODY.size]) == stored


def _record(interval_start_s: int, interval_s: int, import_wh: int, export_wh: int, status: int) -> bytes:
    body = _BODY.pack(interval_start_s, interval_s, import_wh, export_wh, status)
    return body + _CRC.pack(zlib.crc32(body))


class LoadProfileMemory:
    """Two copies of the load profile, `capacity` entries each, in a ring."""

    __slots__ = ("_capacity", "_copies", "_lost", "_next", "_starts")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"load profile capacity must be at least 1 entry, got {capacity}")
        self._capacity = capacity
        # Grown as entries are written, so a meter holding a few days does not reserve two months.
        self._copies = (bytearray(), bytearray())
        # Interval start of each slot, kept in RAM to find entries by time; the CRCs vouch for what is read.
        self._starts = array("q")
        self._next = 0
        self._lost: set[int] = set()  # entries whose loss was already reported

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def first_number(self) -> int:
        """Number of the oldest entry still held."""
        return max(0, self._next - self._capacity)

    @property
    def next_number(self) -> int:
        """Number the next entry will get (= how many were ever written)."""
        return self._next

    def __len__(self) -> int:
        return min(self._next, self._capacity)

    def append(
        self, interval_start_s: int, interval_s: int, import_wh: int, export_wh: int, status: int
    ) -> int:
        """Write a closed interval to both copies; returns its entry number."""
        if not (0 <= import_wh <= _MAX_WH and 0 <= export_wh <= _MAX_WH):
            raise ValueError(
                f"interval starting {interval_start_s}: {import_wh} Wh import / {export_wh} Wh export "
                f"does not fit the 32-bit profile field; the samples fed to the meter are not physical"
            )
        record = _record(interval_start_s, interval_s, import_wh, export_wh, status)
        number = self._next
        if number < self._capacity:
            self._copies[0].extend(record)
            self._copies[1].extend(record)
            self._starts.append(interval_start_s)
        else:
            slot = number % self._capacity
            offset = slot * RECORD_SIZE
            self._copies[0][offset : offset + RECORD_SIZE] = record
            self._copies[1][offset : offset + RECORD_SIZE] = record
            self._starts[slot] = interval_start_s
            self._lost.discard(number - self._capacity)
        self._next = number + 1
        return number

    def start_of(self, number: int) -> int:
        """Interval start (epoch s) of a held entry, from the RAM index."""
        self._check_held(number)
        return self._starts[number % self._capacity]

    def find(self, interval_start_s: float) -> int:
        """Number of the first held entry starting at or after `interval_start_s` (`next_number` if none).
        Interval starts rise with the entry number, so this is a binary search."""
        low, high = self.first_number, self._next
        while low < high:
            middle = (low + high) // 2
            if self._starts[middle % self._capacity] < interval_start_s:
                low = middle + 1
            else:
                high = middle
        return low

    def read(self, number: int) -> tuple[ProfileEntry | None, MemoryFault | None]:
        """Read and verify one entry. Returns the entry (None if lost) and the fault found, if any. A loss is
        reported once; later reads of the same lost entry return (None, None)."""
        self._check_held(number)
        slot = number % self._capacity
        offset = slot * RECORD_SIZE
        copy0 = bytes(self._copies[0][offset : offset + RECORD_SIZE])
        copy1 = bytes(self._copies[1][offset : offset + RECORD_SIZE])
        ok0, ok1 = _crc_ok(copy0), _crc_ok(copy1)
        if ok0 and ok1:
            return _entry(_BODY.unpack_from(copy0)), None
        if not (ok0 or ok1):
            if number in self._lost:
                return None, None
            self._lost.add(number)
            return None, MemoryFault(number, slot, self._starts[slot], None)
        start, interval_s, import_wh, export_wh, status = _BODY.unpack_from(copy0 if ok0 else copy1)
        status = int(status | Status.DATA_REPAIRED)
        record = _record(start, interval_s, import_wh, export_wh, status)
        self._copies[0][offset : offset + RECORD_SIZE] = record
        self._copies[1][offset : offset + RECORD_SIZE] = record
        fault = MemoryFault(number, slot, start, repaired_copy=1 if ok0 else 0)
        return _entry((start, interval_s, import_wh, export_wh, status)), fault

    def corrupt(self, copy: int, number: int, rng: random.Random) -> None:
        """Fault injection: flip 1 to 3 random bits of one copy of an entry, leaving it surely corrupt."""
        if copy not in (0, 1):
            raise ValueError(f"copy must be 0 or 1, got {copy!r}")
        self._check_held(number)
        offset = (number % self._capacity) * RECORD_SIZE
        buffer = self._copies[copy]
        bits = rng.sample(range(RECORD_SIZE * 8), rng.randint(1, 3))
        for bit in bits:
            buffer[offset + bit // 8] ^= 1 << (bit % 8)
        if _crc_ok(bytes(buffer[offset : offset + RECORD_SIZE])):
            # The flips undid an earlier corruption of this copy; one more flip is always caught by the CRC.
            buffer[offset + bits[0] // 8] ^= 1 << (bits[0] % 8)

    def _check_held(self, number: int) -> None:
        if not self.first_number <= number < self._next:
            raise IndexError(
                f"load profile entry {number} is not held (held: {self.first_number}..{self._next - 1})"
            )


def _entry(values: tuple[int, int, int, int, int]) -> ProfileEntry:
    start, interval_s, import_wh, export_wh, status = values
    return ProfileEntry(datetime.fromtimestamp(start, UTC), interval_s, import_wh, export_wh, status)

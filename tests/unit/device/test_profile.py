"""Load-profile memory: two copies with CRCs, repair from the good copy, loss when both fail, the ring."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openami.device import Status
from openami.device.profile import RECORD_SIZE, LoadProfileMemory, _crc_ok

START_S = 1_772_409_600  # 2026-03-02T00:00:00Z


def filled(count: int, capacity: int = 16) -> LoadProfileMemory:
    memory = LoadProfileMemory(capacity)
    for i in range(count):
        memory.append(START_S + 900 * i, 900, 100 + i, i % 3, 0)
    return memory


def flip(memory: LoadProfileMemory, copy: int, number: int, bits: list[int]) -> None:
    buffer = memory._copies[copy]  # reaching into the memory's bytes is what a flipped cell does
    offset = (number % memory.capacity) * RECORD_SIZE
    for bit in bits:
        buffer[offset + bit // 8] ^= 1 << (bit % 8)


def test_a_written_entry_reads_back_unchanged() -> None:
    memory = filled(3)
    entry, fault = memory.read(1)
    assert fault is None
    assert entry is not None
    assert entry.interval_start.timestamp() == START_S + 900
    assert (entry.interval_s, entry.import_wh, entry.export_wh, entry.status) == (900, 101, 1, 0)


@given(
    copy=st.sampled_from([0, 1]), bits=st.sets(st.integers(0, RECORD_SIZE * 8 - 1), min_size=1, max_size=3)
)
def test_any_one_to_three_flipped_bits_in_one_copy_are_caught_and_repaired(copy: int, bits: set[int]) -> None:
    memory = filled(4)
    flip(memory, copy, 2, sorted(bits))
    entry, fault = memory.read(2)
    assert fault is not None
    assert fault.repaired_copy == copy
    assert fault.number == 2
    assert entry is not None
    assert (entry.import_wh, entry.export_wh, entry.interval_start.timestamp()) == (102, 2, START_S + 1800)
    assert entry.status == Status.DATA_REPAIRED
    # Both copies are healthy again: the next read finds nothing wrong and still says it was repaired.
    again, fault_again = memory.read(2)
    assert fault_again is None
    assert again == entry


def test_an_entry_with_both_copies_bad_is_lost_and_reported_once() -> None:
    memory = filled(4)
    flip(memory, 0, 1, [5])
    flip(memory, 1, 1, [77])
    entry, fault = memory.read(1)
    assert entry is None
    assert fault is not None
    assert fault.repaired_copy is None
    assert fault.interval_start_s == START_S + 900
    assert memory.read(1) == (None, None)


def test_the_ring_overwrites_the_oldest_entries() -> None:
    memory = filled(10, capacity=4)
    assert len(memory) == 4
    assert (memory.first_number, memory.next_number) == (6, 10)
    starts = []
    for n in range(memory.first_number, memory.next_number):
        entry, _ = memory.read(n)
        assert entry is not None
        starts.append(int(entry.interval_start.timestamp()))
    assert starts == [START_S + 900 * i for i in range(6, 10)]
    with pytest.raises(IndexError, match="not held"):
        memory.read(5)


def test_overwriting_a_lost_entry_makes_the_slot_healthy_again() -> None:
    memory = filled(2, capacity=2)
    flip(memory, 0, 0, [3])
    flip(memory, 1, 0, [4])
    assert memory.read(0)[0] is None
    memory.append(START_S + 1800, 900, 9, 0, 0)  # entry 2 goes to slot 0
    entry, fault = memory.read(2)
    assert fault is None
    assert entry is not None
    assert entry.import_wh == 9


def test_find_locates_entries_by_interval_start() -> None:
    memory = filled(10, capacity=6)
    assert memory.find(0) == 4  # the oldest held
    assert memory.find(START_S + 900 * 7) == 7
    assert memory.find(START_S + 900 * 7 + 1) == 8
    assert memory.find(START_S + 900 * 100) == 10


def test_corrupt_always_leaves_the_copy_detectably_bad() -> None:
    memory = filled(3)
    rng = random.Random(7)
    for _ in range(50):  # repeated corruption of the same copy never silently heals it
        memory.corrupt(0, 1, rng)
        assert not _crc_ok(bytes(memory._copies[0][RECORD_SIZE : 2 * RECORD_SIZE]))
    _, fault = memory.read(1)
    assert fault is not None
    assert fault.repaired_copy == 0


def test_values_that_do_not_fit_the_record_are_refused() -> None:
    memory = LoadProfileMemory(4)
    with pytest.raises(ValueError, match="32-bit"):
        memory.append(START_S, 900, 2**32, 0, 0)
    with pytest.raises(ValueError, match="capacity"):
        LoadProfileMemory(0)

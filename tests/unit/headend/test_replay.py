"""The 64-counter anti-replay window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from openami.headend.replay import (
    WINDOW_SIZE,
    ReplayState,
    sliding_window,
    window_from_signed,
    window_to_signed,
)


def accept_all(counters: list[int], state: ReplayState | None = None) -> tuple[list[bool], ReplayState]:
    state = state or ReplayState()
    verdicts = []
    for c in counters:
        new = sliding_window(state, c)
        verdicts.append(new is not None)
        state = new or state
    return verdicts, state


def test_rising_counters_are_accepted_and_repeats_refused() -> None:
    verdicts, state = accept_all([1, 2, 3, 3, 2, 10])
    assert verdicts == [True, True, True, False, False, True]
    assert state.highest == 10


def test_reordered_counters_within_the_window_are_accepted_once() -> None:
    verdicts, _ = accept_all([5, 3, 4, 1, 2, 3, 4, 5])
    assert verdicts == [True, True, True, True, True, False, False, False]


def test_counters_64_or_more_below_the_highest_are_refused() -> None:
    verdicts, _ = accept_all([100, 100 - (WINDOW_SIZE - 1), 100 - WINDOW_SIZE])
    assert verdicts == [True, True, False]


def test_a_big_jump_clears_the_window() -> None:
    _, state = accept_all([1, 2, 3, 1000])
    assert state == ReplayState(1000, 1)
    assert accept_all([999, 937, 936], state)[0] == [True, True, False]


@given(st.lists(st.integers(min_value=1, max_value=300), max_size=200))
def test_matches_the_definition(counters: list[int]) -> None:
    """Accept iff never accepted before and above (highest accepted so far − 64)."""
    seen: set[int] = set()
    highest = 0
    expected = []
    for c in counters:
        ok = c not in seen and c > highest - WINDOW_SIZE
        expected.append(ok)
        if ok:
            seen.add(c)
            highest = max(highest, c)
    assert accept_all(counters)[0] == expected


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_window_survives_a_signed_64_bit_column(window: int) -> None:
    stored = window_to_signed(window)
    assert -(2**63) <= stored < 2**63
    assert window_from_signed(stored) == window

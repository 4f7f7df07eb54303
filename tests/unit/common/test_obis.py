import pytest

from openami.common.obis import ACTIVE_IMPORT_TOTAL, CURRENT_NEUTRAL, QUANTITIES, Kind, quantity


def test_per_rate_registers_are_described() -> None:
    for rate in range(1, 5):
        q = quantity(f"1-0:1.8.{rate}")
        assert q.kind is Kind.REGISTER
        assert q.rate == rate
        assert q.unit == "Wh"


def test_neutral_current_is_an_instant_in_amperes_stored_as_milliamperes() -> None:
    q = QUANTITIES[CURRENT_NEUTRAL]
    assert (q.kind, q.unit, q.scale) == (Kind.INSTANT, "A", 3)


def test_unknown_code_is_named() -> None:
    with pytest.raises(KeyError, match=r"9-9:9\.9\.9"):
        quantity("9-9:9.9.9")
    assert quantity(ACTIVE_IMPORT_TOTAL).rate == 0

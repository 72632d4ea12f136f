"""protocol.pricing.split: integer wei, the split always sums to the price exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.pricing import BPS, split

prices = st.one_of(st.integers(0, 10**30), st.integers(0, 2**256 - 1))
fees = st.integers(0, BPS)
contributor_lists = st.lists(
    st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex()),
    min_size=1,
    max_size=40,
    unique=True,
)


@given(price=prices, fee_bps=fees, contributors=contributor_lists)
def test_split_is_exact(price: int, fee_bps: int, contributors: list[str]) -> None:
    shares, fee = split(price, fee_bps, contributors)
    assert set(shares) == set(contributors)
    assert sum(shares.values()) + fee == price
    values = set(shares.values())
    assert len(values) == 1  # every agreeing contributor gets the same share
    (each,) = values
    remainder = (price - price * fee_bps // BPS) - each * len(contributors)
    assert 0 <= remainder < len(contributors)
    assert fee == price * fee_bps // BPS + remainder
    assert all(isinstance(v, int) and v >= 0 for v in [*shares.values(), fee])


@given(price=prices, fee_bps=fees)
def test_no_contributors_sends_everything_to_the_fee(price: int, fee_bps: int) -> None:
    assert split(price, fee_bps, []) == ({}, price)


@given(price=prices, fee_bps=fees, contributors=contributor_lists, data=st.data())
def test_duplicates_are_refused(
    price: int, fee_bps: int, contributors: list[str], data: st.DataObject
) -> None:
    repeated = data.draw(st.sampled_from(contributors))
    with pytest.raises(ValueError, match="once"):
        split(price, fee_bps, [*contributors, repeated])


def test_worked_example() -> None:
    # price 1000, 2.5% fee = 25; 975 over 4 = 243 each, remainder 3 to the fee
    assert split(1000, 250, ["a", "b", "c", "d"]) == ({"a": 243, "b": 243, "c": 243, "d": 243}, 28)
    assert split(1000, 0, ["a", "b", "c"]) == ({"a": 333, "b": 333, "c": 333}, 1)
    assert split(1000, BPS, ["a"]) == ({"a": 0}, 1000)
    assert split(0, 250, ["a"]) == ({"a": 0}, 0)


@pytest.mark.parametrize(("price", "fee_bps"), [(-1, 0), (100, -1), (100, BPS + 1)])
def test_out_of_range_is_refused(price: int, fee_bps: int) -> None:
    with pytest.raises(ValueError):
        split(price, fee_bps, ["a"])

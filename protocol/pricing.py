"""How a job's price is split. Integer wei only; the split always sums to the price.

The protocol fee is ``price * fee_bps // 10_000``; the rest is shared equally among the
contributors whose workers agreed with consensus, and the integer remainder of that share goes
to the treasury too, so nothing is lost to rounding and the auditor recomputes it exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

BPS = 10_000


def split(price_wei: int, fee_bps: int, contributors: Sequence[str]) -> tuple[dict[str, int], int]:
    """Return ({contributor: share_wei}, fee_wei) with sum(shares) + fee == price."""
    if price_wei < 0 or not 0 <= fee_bps <= BPS:
        raise ValueError("price must be >= 0 and fee_bps within [0, 10000]")
    if len(set(contributors)) != len(contributors):
        raise ValueError("a contributor may be paid once per job")
    if not contributors:
        return {}, price_wei
    fee = price_wei * fee_bps // BPS
    each, remainder = divmod(price_wei - fee, len(contributors))
    return dict.fromkeys(contributors, each), fee + remainder

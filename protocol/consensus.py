"""Consensus over a job's votes, the one rule the reconciler decides by and the auditor
re-decides by.

A vote is a replica's (fingerprint, result hash). Votes in one execution-fingerprint class
must match bit for bit; votes of different classes agree when their revealed outputs are
within the model's declared ``tolerance_abs`` element by element. ``tally`` finds the answer
with the most support; the job is accepted when every vote supports it (``unanimous``) or,
once no further replica can be added, when a strict majority does (``majority``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from protocol import tensors
from protocol.errors import ProtocolError

Answer = tuple[str, str]  # (fingerprint, result hash)


@dataclass(frozen=True)
class Vote:
    assignment: int
    worker: str
    contributor: str
    answer: Answer


@dataclass(frozen=True)
class Tally:
    """The answer with the most support and the votes that support it."""

    winner: Answer
    agreeing: tuple[Vote, ...]
    total: int

    @property
    def unanimous(self) -> bool:
        return len(self.agreeing) == self.total

    @property
    def majority(self) -> bool:
        return 2 * len(self.agreeing) > self.total


def within_tolerance(
    a_json: str | None, b_json: str | None, tolerance: float, max_bytes: int
) -> bool:
    """Two revealed outputs agree: the same names, dtypes and shapes; floats within
    ``tolerance`` of each other in every element (NaN or infinity never agree); integers
    and booleans equal. Anything that does not decode does not agree."""
    if a_json is None or b_json is None:
        return False
    try:
        a, b = json.loads(a_json), json.loads(b_json)
        if not isinstance(a, dict) or not isinstance(b, dict) or set(a) != set(b):
            return False
        for name in a:
            x = tensors.decode(a[name], max_bytes=max_bytes)
            y = tensors.decode(b[name], max_bytes=max_bytes)
            if x.dtype != y.dtype or x.shape != y.shape:
                return False
            if np.issubdtype(x.dtype, np.floating):
                if not (np.isfinite(x).all() and np.isfinite(y).all()):
                    return False
                diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
                if diff.size and float(diff.max()) > tolerance:
                    return False
            elif not np.array_equal(x, y):
                return False
    except (ValueError, ProtocolError):
        return False
    return True


def tally(
    votes: list[Vote], outputs: dict[int, str | None], tolerance: float, max_bytes: int
) -> Tally:
    """Group votes by exact answer; an answer is supported by its own group and by every
    group of another fingerprint class within tolerance of it. The winner has the most
    support, then the most exact votes, then the smallest answer (deterministic)."""
    groups: dict[Answer, list[Vote]] = defaultdict(list)
    for vote in votes:
        groups[vote.answer].append(vote)
    if len(groups) == 1:
        ((answer, members),) = groups.items()
        return Tally(answer, tuple(members), len(votes))
    support: dict[Answer, list[Vote]] = {}
    for answer, members in groups.items():
        backing = list(members)
        for other, theirs in groups.items():
            if other[0] != answer[0] and within_tolerance(
                outputs.get(members[0].assignment),
                outputs.get(theirs[0].assignment),
                tolerance,
                max_bytes,
            ):
                backing.extend(theirs)
        support[answer] = backing
    winner = min(groups, key=lambda a: (-len(support[a]), -len(groups[a]), a))
    return Tally(winner, tuple(support[winner]), len(votes))

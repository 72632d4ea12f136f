"""What the ledger decides from the chain index instead of asking the node: whether a
worker may be given work, and how much a client has deposited.

**Eligibility** mirrors ``StakeRegistry.isEligible(worker)`` exactly::

    owner = workerOwner[worker]
    owner != 0 && workerActive[worker] && !jailed[worker] && stakeOf[owner] >= minStake

rebuilt from the registry's events, in chain order:

- ``workerOwner`` and ``workerActive``: ``WorkerRegistered(contributor, worker)`` sets both;
  ``WorkerRemoved`` clears ``workerActive`` for good (a key belongs to one contributor
  forever and is never registered again);
- ``jailed``: set by ``WorkerJailed`` (every first slash of a worker), cleared by
  ``WorkerUnjailed`` (the admin, after an appeal). A jail has no end time: the contract
  keeps a flag, so neither block time nor wall time enters the rule;
- ``stakeOf`` (the bonded stake): ``Staked`` adds ``amount`` (its ``total`` is the new
  value), ``UnbondRequested`` moves ``amount`` to unbonding, ``Unbonded`` pays unbonding
  out, and ``Slashed`` takes ``amount`` from bonded stake first and from unbonding stake for
  the rest (``StakeBonds._takeStake``);
- ``minStake`` is immutable: read from the chain once per process (``Context``).

**Confirmations.** Both projections count every indexed event, confirmed or not: they answer
what the chain's latest block says, as the calls they replace did (``isEligible`` and
``totalDepositedOf`` at "latest"). A development chain mines a block only when sent a
transaction, so its last events may never get ``index_confirmations`` blocks on top; waiting
for them would leave a new worker idle and a new deposit unusable. A reorganisation rewinds
the index and the next projection follows it. For eligibility that is harmless: it only
chooses who gets work. For a deposit the exposure is the one the chain call had: if a
reorganisation removes a deposit the journal has already credited, the index logs it (an
ERROR where it was confirmed) and that client's redemption at the next epoch fails with
``VaultInsufficientDeposit``, which stops settlement for a person instead of paying from
nothing. ``deposits_for_payment(..., confirmed_only=True)`` is the stricter rule for a chain
that reorganises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session, col, select

from ledger.chain.index import args, deposited_of, events
from ledger.models import ChainEvent

logger = logging.getLogger(__name__)

REGISTRY = "StakeRegistry"
STAKE_EVENTS = ("Staked", "UnbondRequested", "Unbonded", "Slashed")
JAIL_EVENTS = ("WorkerJailed", "WorkerUnjailed")


@dataclass(frozen=True)
class Stake:
    """A contributor's stake as the registry holds it: ``stakeOf`` and ``unbondingOf.amount``."""

    bonded_wei: int = 0
    unbonding_wei: int = 0


@dataclass(frozen=True)
class WorkerStatus:
    worker: str
    owner: str | None  # the contributor that registered it (None: never registered)
    active: bool
    jailed: bool
    stake: Stake  # its owner's

    def eligible(self, min_stake_wei: int) -> bool:
        """``StakeRegistry.isEligible``."""
        return (
            self.owner is not None
            and self.active
            and not self.jailed
            and self.stake.bonded_wei >= min_stake_wei
        )


def _checked(event: ChainEvent, name: str, ours: int, theirs: int) -> int:
    """The chain's own figure; a difference means the index misses an event."""
    if ours != theirs:
        logger.error(
            "the chain index disagrees with %s.%s in block %s: %s %s, rebuilt %s",
            event.contract,
            event.event,
            event.block_number,
            name,
            theirs,
            ours,
        )
    return theirs


def stake_of(session: Session, contributor: str) -> Stake:
    """Bonded and unbonding stake of ``contributor``, folded from its registry events."""
    bonded = unbonding = 0
    for event in events(session, REGISTRY, STAKE_EVENTS, contributor):
        a = args(event)
        amount = int(a["amount"])
        if event.event == "Staked":
            bonded = _checked(event, "total", bonded + amount, int(a["total"]))
        elif event.event == "UnbondRequested":
            bonded -= amount
            unbonding = _checked(event, "unbonding", unbonding + amount, int(a["unbonding"]))
        elif event.event == "Unbonded":  # withdrawUnbonded pays out all that is unbonding
            _checked(event, "amount", unbonding, amount)
            unbonding = 0
        else:  # Slashed: bonded stake first, then unbonding stake
            from_bonded = min(amount, bonded)
            bonded, unbonding = bonded - from_bonded, unbonding - (amount - from_bonded)
    return Stake(bonded, unbonding)


def _naming(session: Session, event: str, subject: str | None, worker: str) -> list[ChainEvent]:
    """The registry's ``event``s whose ``worker`` argument is ``worker`` (an address not
    indexed first, so found in the arguments)."""
    query = select(ChainEvent).where(
        ChainEvent.contract == REGISTRY,
        ChainEvent.event == event,
        col(ChainEvent.args_json).contains(worker),  # narrows; the argument is checked below
    )
    if subject is not None:
        query = query.where(ChainEvent.subject == subject.lower())
    found = session.exec(query).all()
    return [e for e in found if args(e)["worker"] == worker]


def owner_of(session: Session, worker: str, contributor: str | None = None) -> str | None:
    """``workerOwner[worker]`` (lower-case), or None. ``contributor``, where known (the
    owner the worker signed in with), narrows the search to that contributor's events."""
    found = _naming(session, "WorkerRegistered", contributor, worker.lower())
    return str(args(found[0])["contributor"]) if found else None


def worker_status(session: Session, worker: str, contributor: str | None = None) -> WorkerStatus:
    """Everything ``isEligible`` looks at, for ``worker``."""
    worker = worker.lower()
    owner = owner_of(session, worker, contributor)
    if owner is None:
        return WorkerStatus(worker, None, False, False, Stake())
    removed = _naming(session, "WorkerRemoved", owner, worker)
    jail = events(session, REGISTRY, JAIL_EVENTS, worker)
    return WorkerStatus(
        worker,
        owner,
        active=not removed,
        jailed=bool(jail) and jail[-1].event == "WorkerJailed",
        stake=stake_of(session, owner),
    )


def is_eligible(
    session: Session, worker: str, min_stake_wei: int, contributor: str | None = None
) -> bool:
    """``StakeRegistry.isEligible(worker)``, from the index."""
    return worker_status(session, worker, contributor).eligible(min_stake_wei)


def deposits_for_payment(session: Session, client: str, confirmed_only: bool = False) -> int:
    """``PaymentVault.totalDepositedOf(client)``, from the index: the sum of its
    ``Deposited`` amounts (withdrawals and redemptions never lower it). Unconfirmed deposits
    count unless ``confirmed_only`` (see the module's documentation)."""
    return deposited_of(session, client, confirmed_only)

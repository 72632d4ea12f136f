"""An index of the contracts' events in the database: what the vault, the registry and the
settlement emitted, read in bounded block ranges, stored once, confirmed when deep enough,
and corrected when the chain reorganises.

Every event the three ABIs declare is indexed except AccessControl's role events
(``RoleGranted``, ``RoleRevoked``, ``RoleAdminChanged``). Each ``sync``:

1. checks the cursor: the stored hash of the last scanned block against the chain's block
   at that height. If they differ the chain reorganised: the index walks back over the
   hashes it kept (``IndexedBlock``, at most ``reorg_depth_max`` blocks) to the newest block
   the chain still has, deletes the events above it (a deleted *confirmed* event is logged
   as an error and counted: ``confirmations`` was too small for this chain) and rewinds;
2. reads the logs from the cursor to the head, ``batch_blocks`` at a time; each batch is
   one unit of work (events, block hashes, cursor), so a crash loses no more than a batch
   and a restart continues from the cursor;
3. marks events ``confirmed`` once ``confirmations`` blocks were mined on top of theirs.

Two syncs running at once (two Celery workers) are safe: a batch is stored only if the
cursor is still the one it was read from; otherwise the later one stops, nothing doubled.

``sync()`` writes each batch in a transaction of its own (the Celery task). ``sync(session)``
writes into the caller's unit of work instead, each batch a savepoint of it: that is how a
request catches up (``ledger.chain.catchup``) while it already holds SQLite's one write lock
or PostgreSQL's journal lock. What it stored commits, or rolls back, with the caller.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hexbytes import HexBytes
from sqlalchemy import Engine, delete, update
from sqlmodel import Session, col, select
from web3 import Web3
from web3.contract.contract import ContractEvent
from web3.exceptions import BlockNotFound

from ledger.db import session_scope
from ledger.models import ChainCursor, ChainEvent, IndexedBlock
from protocol.contracts import Deployment, artifact

if TYPE_CHECKING:
    from ledger.context import Context

logger = logging.getLogger(__name__)

CURSOR = "contracts"
_CURSOR_READ = select(col(ChainCursor.last_block_scanned), col(ChainCursor.last_block_hash)).where(
    col(ChainCursor.name) == CURSOR
)
INDEXED_CONTRACTS = ("PaymentVault", "StakeRegistry", "EpochSettlement")
SKIPPED_EVENTS = frozenset({"RoleGranted", "RoleRevoked", "RoleAdminChanged"})


class ReorgTooDeep(Exception):
    """No block the index kept within ``reorg_depth_max`` is still on the chain."""


@dataclass
class SyncReport:
    from_block: int  # the first block read (after any rewind)
    to_block: int  # the cursor afterwards: the last block read
    head: int
    batches: int = 0
    stored: int = 0  # new events written
    confirmed: int = 0  # events newly marked confirmed
    reorg: bool = False
    rewound_to: int | None = None  # the newest block still on the chain, after a reorg
    removed: int = 0  # events deleted by the reorg
    removed_confirmed: int = 0  # of which were already confirmed: an error
    conflict: bool = False  # another sync moved the cursor meanwhile; this one stopped


@dataclass(frozen=True)
class RemovedEvent:
    """What a rewind deleted, kept to tell which events the reorganisation removed."""

    id: str
    contract: str
    event: str
    block_number: int
    tx_hash: str
    confirmed: bool


def _hex(value: Any) -> str:
    return "0x" + bytes(value).hex()


def _normalise(value: Any) -> Any:
    """JSON-safe: ints as decimal strings, bytes and addresses lower-case hex."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes | bytearray | HexBytes):
        return _hex(value)
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else value
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    return str(value)


class ChainIndex:
    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        artifacts_dir: Path,
        engine: Engine,
        confirmations: int = 2,
        batch_blocks: int = 2_000,
        reorg_depth_max: int = 64,
    ) -> None:
        if confirmations < 0 or batch_blocks < 1 or reorg_depth_max < 1:
            raise ValueError("confirmations >= 0, batch_blocks >= 1, reorg_depth_max >= 1")
        self.w3 = w3
        self.deployment = deployment
        self.engine = engine
        self.confirmations = confirmations
        self.batch_blocks = batch_blocks
        self.reorg_depth_max = reorg_depth_max
        addresses = {
            "PaymentVault": deployment.vault,
            "StakeRegistry": deployment.registry,
            "EpochSettlement": deployment.settlement,
        }
        self.addresses = [Web3.to_checksum_address(a) for a in addresses.values()]
        # topic0 -> (contract, event, its first indexed argument's name)
        self.events: dict[tuple[str, str], tuple[str, ContractEvent, str | None]] = {}
        for name, address in addresses.items():
            abi = artifact(artifacts_dir, name)["abi"]
            contract = w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)
            for entry in abi:
                if entry["type"] != "event" or entry["name"] in SKIPPED_EVENTS:
                    continue
                event: ContractEvent = contract.events[entry["name"]]()
                indexed = [i["name"] for i in entry["inputs"] if i.get("indexed")]
                topic = _hex(HexBytes(event.topic))
                self.events[(address.lower(), topic)] = (
                    name,
                    event,
                    indexed[0] if indexed else None,
                )
        self.topics = sorted({topic for _, topic in self.events})

    @classmethod
    def from_context(cls, ctx: Context) -> ChainIndex:
        s = ctx.settings
        return cls(
            ctx.chain.w3,
            ctx.deployment,
            s.artifacts_dir,
            ctx.engine,
            s.index_confirmations,
            s.index_batch_blocks,
            s.index_reorg_depth_max,
        )

    # -- chain -------------------------------------------------------------------------

    def _block_hash(self, number: int) -> str | None:
        """The chain's hash at ``number``, or None where the chain is not that long."""
        if number < 0:
            return None
        try:
            block = self.w3.eth.get_block(number)
        except BlockNotFound:  # past the head; any other error propagates (no false reorg)
            return None
        return _hex(block["hash"])

    def _read_batch(self, first: int, last: int) -> list[ChainEvent]:
        logs = self.w3.eth.get_logs(
            {
                "fromBlock": first,
                "toBlock": last,
                "address": self.addresses,
                "topics": [self.topics],
            }
        )
        out: list[ChainEvent] = []
        for log in logs:
            if log.get("removed"):
                continue
            key = (str(log["address"]).lower(), _hex(log["topics"][0]))
            known = self.events.get(key)
            if known is None:
                continue
            contract, event, subject_arg = known
            decoded = event.process_log(log)
            args = _normalise(dict(decoded["args"]))
            block_hash = _hex(log["blockHash"])
            out.append(
                ChainEvent(
                    id=f"{block_hash}:{int(log['logIndex'])}",
                    contract=contract,
                    event=str(decoded["event"]),
                    subject=args.get(subject_arg) if subject_arg else None,
                    block_number=int(log["blockNumber"]),
                    block_hash=block_hash,
                    tx_hash=_hex(log["transactionHash"]),
                    log_index=int(log["logIndex"]),
                    args_json=json.dumps(args, sort_keys=True),
                )
            )
        return out

    # -- database ----------------------------------------------------------------------

    @contextmanager
    def _reading(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
            return
        with Session(self.engine) as own:
            yield own

    @contextmanager
    def _unit(self, session: Session | None) -> Iterator[Session]:
        """One unit of work: a transaction of its own, or a savepoint of the caller's."""
        if session is None:
            with session_scope(self.engine) as own:
                yield own
            return
        with session.begin_nested():
            yield session

    def cursor(self, session: Session | None = None) -> tuple[int, str | None]:
        """(last block scanned, its hash); before the first sync, the block before the
        deployment's and no hash. Read in ``session`` if given (what it can see)."""
        with self._reading(session) as s:
            # two columns, past the ORM (the cursor's row is written by statements and
            # flushed savepoints only): read at every delivery
            row = s.connection().execute(_CURSOR_READ).first()
            if row is None:
                return self.deployment.block - 1, None
            return int(row[0]), str(row[1])

    def _locked_cursor(self, session: Session) -> ChainCursor | None:
        return session.exec(
            select(ChainCursor)
            .where(ChainCursor.name == CURSOR)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).first()

    def _kept_hashes(self, session: Session | None, floor: int, last: int) -> dict[int, str]:
        """The block hashes the index kept in ``floor..last``: ``IndexedBlock`` and the
        events' own blocks."""
        with self._reading(session) as s:
            kept = {
                b.number: b.hash
                for b in s.exec(
                    select(IndexedBlock).where(
                        IndexedBlock.number <= last, IndexedBlock.number >= floor
                    )
                ).all()
            }
            for number, block_hash in s.exec(
                select(ChainEvent.block_number, ChainEvent.block_hash)
                .where(ChainEvent.block_number <= last, ChainEvent.block_number >= floor)
                .distinct()
            ).all():
                kept.setdefault(number, block_hash)
        return kept

    def _rewind(
        self, last: int, report: SyncReport, session: Session | None
    ) -> tuple[int, str | None, list[RemovedEvent]]:
        """The chain no longer has block ``last`` as scanned: find the newest block it still
        has among the kept hashes within ``reorg_depth_max``, delete the events above it,
        move the cursor there. Returns the new cursor and the deleted events (the rescan
        may store some of them again)."""
        floor = last - self.reorg_depth_max
        kept = self._kept_hashes(session, floor, last)
        to: int | None = None
        to_hash: str | None = None
        for number in sorted(kept, reverse=True):
            if self._block_hash(number) == kept[number]:
                to, to_hash = number, kept[number]
                break
        if to is None:
            if floor > self.deployment.block - 1:
                raise ReorgTooDeep(
                    f"no indexed block in {floor}..{last} is on the chain any more: the "
                    "reorganisation is deeper than index_reorg_depth_max"
                )
            to, to_hash = self.deployment.block - 1, None  # nothing indexed below the start
        with self._unit(session) as s:
            cursor = self._locked_cursor(s)
            if cursor is None or cursor.last_block_scanned != last:
                report.conflict = True  # another sync handled it
                at, at_hash = self.cursor(session)
                return at, at_hash, []
            deleted = [
                RemovedEvent(e.id, e.contract, e.event, e.block_number, e.tx_hash, e.confirmed)
                for e in s.exec(select(ChainEvent).where(ChainEvent.block_number > to)).all()
            ]
            s.exec(delete(ChainEvent).where(col(ChainEvent.block_number) > to))
            s.exec(delete(IndexedBlock).where(col(IndexedBlock.number) > to))
            if to_hash is None:
                s.delete(cursor)
            else:
                cursor.last_block_scanned, cursor.last_block_hash = to, to_hash
                s.add(cursor)
        report.reorg = True
        report.rewound_to = to
        logger.warning("chain reorganised below block %s: rewound to %s", last, to)
        return to, to_hash, deleted

    def _account_removed(
        self, deleted: list[RemovedEvent], report: SyncReport, session: Session | None
    ) -> None:
        """Of the events a rewind deleted, those the rescan did not store again are the ones
        the reorganisation removed; a removed confirmed event is an error."""
        with self._reading(session) as s:
            ids = [e.id for e in deleted]
            back = set(s.exec(select(ChainEvent.id).where(col(ChainEvent.id).in_(ids))))
        gone = [e for e in deleted if e.id not in back]
        report.removed = len(gone)
        report.removed_confirmed = sum(1 for e in gone if e.confirmed)
        logger.warning("the reorganisation removed %s indexed events", len(gone))
        for event in gone:
            if event.confirmed:
                logger.error(
                    "a CONFIRMED event was reorganised away: %s %s.%s in block %s (tx %s)",
                    event.id,
                    event.contract,
                    event.event,
                    event.block_number,
                    event.tx_hash,
                )

    def _store_batch(
        self,
        expected: int,
        last: int,
        last_hash: str,
        events: list[ChainEvent],
        session: Session | None,
    ) -> int | None:
        """Store one batch if the cursor is still at ``expected``; the number stored, or
        None where another sync moved the cursor."""
        with self._unit(session) as s:
            cursor = self._locked_cursor(s)
            at = cursor.last_block_scanned if cursor else self.deployment.block - 1
            if at != expected:
                return None
            ids = [e.id for e in events]
            have = (
                set(s.exec(select(ChainEvent.id).where(col(ChainEvent.id).in_(ids))).all())
                if ids
                else set()
            )
            fresh = [e for e in events if e.id not in have]
            s.add_all(fresh)
            blocks = {e.block_number: e.block_hash for e in events} | {last: last_hash}
            for number, block_hash in blocks.items():
                s.merge(IndexedBlock(number=number, hash=block_hash))
            if cursor is None:
                cursor = ChainCursor(
                    name=CURSOR, last_block_scanned=last, last_block_hash=last_hash
                )
            else:
                cursor.last_block_scanned, cursor.last_block_hash = last, last_hash
            s.add(cursor)
            s.exec(
                delete(IndexedBlock).where(col(IndexedBlock.number) < last - self.reorg_depth_max)
            )
            return len(fresh)

    def _confirm(self, head: int, session: Session | None) -> int:
        with self._unit(session) as s:
            result = s.exec(
                update(ChainEvent)
                .where(
                    col(ChainEvent.confirmed).is_(False),
                    col(ChainEvent.block_number) <= head - self.confirmations,
                )
                .values(confirmed=True)
            )
            return int(result.rowcount or 0)

    # -- the loop ----------------------------------------------------------------------

    def sync(self, session: Session | None = None) -> SyncReport:
        """Read the chain up to its head; see the module's documentation. With ``session``,
        every write goes into that unit of work (a savepoint per batch) and commits with it."""
        last, last_hash = self.cursor(session)
        report = SyncReport(from_block=last + 1, to_block=last, head=last)
        deleted: list[RemovedEvent] = []
        if last_hash is not None and self._block_hash(last) != last_hash:
            last, last_hash, deleted = self._rewind(last, report, session)
        report.from_block = last + 1
        head = int(self.w3.eth.block_number)
        report.head = head
        while not report.conflict and last < head:
            first, end = last + 1, min(head, last + self.batch_blocks)
            end_hash = self._block_hash(end)
            events = self._read_batch(first, end)
            if end_hash is None or self._block_hash(end) != end_hash:
                logger.info("the chain moved under batch %s..%s; next sync retries", first, end)
                break
            stored = self._store_batch(last, end, end_hash, events, session)
            if stored is None:
                report.conflict = True
                break
            report.stored += stored
            report.batches += 1
            last = report.to_block = end
        report.to_block = last
        report.confirmed = self._confirm(last, session)
        if report.reorg:
            self._account_removed(deleted, report, session)
        return report


# -- read helpers for the rest of the ledger ---------------------------------------------


def events(
    session: Session,
    contract: str | None = None,
    event: str | Collection[str] | None = None,
    subject: str | None = None,
    confirmed_only: bool = False,
) -> list[ChainEvent]:
    """Indexed events in chain order, filtered by contract ("PaymentVault"...), event name
    ("Deposited"..., or several), subject (the first indexed argument: an address in any
    case, or an epoch number) and confirmation."""
    query = select(ChainEvent)
    if contract is not None:
        query = query.where(ChainEvent.contract == contract)
    if isinstance(event, str):
        query = query.where(ChainEvent.event == event)
    elif event is not None:
        query = query.where(col(ChainEvent.event).in_(list(event)))
    if subject is not None:
        query = query.where(ChainEvent.subject == subject.lower())
    if confirmed_only:
        query = query.where(col(ChainEvent.confirmed).is_(True))
    order = (col(ChainEvent.block_number), col(ChainEvent.log_index))
    return list(session.exec(query.order_by(*order)).all())


def args(event: ChainEvent) -> dict[str, Any]:
    """An event's decoded arguments (amounts as decimal strings, addresses lower-case)."""
    data: dict[str, Any] = json.loads(event.args_json)
    return data


def deposited_of(session: Session, client: str, confirmed_only: bool = False) -> int:
    """Total deposited into the vault for ``client`` (``Deposited.amount``), in wei;
    unconfirmed deposits count unless ``confirmed_only``."""
    found = events(session, "PaymentVault", "Deposited", client, confirmed_only)
    return sum(int(args(e)["amount"]) for e in found)

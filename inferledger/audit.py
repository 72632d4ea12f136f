"""Audit epochs from public records only: chain state and events, and the epoch files.

For every epoch up to the one asked: the file's keccak256 equals the hash posted on chain;
every attestation recovers to its worker, registered to the named contributor while the
epoch ran (from the registry's events, by block); one vote per worker and no two votes from
one contributor; every consensus decision is made again from the valid votes by the
reconciler's own rule (``protocol.consensus``, the cross-class tolerance included) and the
payouts are the split among the agreeing contributors; each job's price fits in its voucher;
every voucher is signed by its client and covers what it was charged, which is what the vault
redeemed from that client on chain; the leaves are the cumulative earnings and hash to the
posted root; the totals equal the chain's; and money is conserved to the wei: what the vault
redeemed by the time the epoch was posted equals payouts plus fees, no claim exceeds a leaf,
the settlement holds exactly what was redeemed less claims and fees paid, and every slash went
to the slash pool. ``docs/audit.md`` lists each check, what it trusts and what it cannot
catch. Imports only ``protocol``: an auditor needs nothing of the operator's code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.contract import Contract

from inferledger.audit_chain import ChainRecords, read_chain
from inferledger.audit_jobs import EpochWindow, JobAudit, Running
from protocol import epochfile, merkle
from protocol.contracts import Deployment, EpochRecord
from protocol.eip712 import Voucher, recover_voucher
from protocol.errors import ProtocolError
from protocol.manifest import load_models


@dataclass
class AuditReport:
    epochs: list[int] = field(default_factory=list)
    checks: Counter[str] = field(default_factory=Counter)
    faults: list[dict[str, Any]] = field(default_factory=list)
    replay: dict[str, Any] | None = None  # ``inferledger.audit_replay``'s summary, if run

    @property
    def ok(self) -> bool:
        return not self.faults and bool(self.epochs)

    def check(self, name: str, holds: bool, epoch: int, detail: str) -> bool:
        self.checks[name] += 1
        if not holds:
            self.faults.append({"check": name, "epoch": epoch, "detail": detail})
        return holds

    def as_dict(self) -> dict[str, Any]:
        out = {
            "ok": self.ok,
            "epochs": self.epochs,
            "checks": dict(self.checks),
            "faults": self.faults,
        }
        if self.replay is not None:
            out["replay"] = self.replay
        return out


def model_tolerances(models_dir: Path) -> dict[str, float]:
    """Each published model's ``tolerance_abs`` by its sha256 hex: the cross-class rule."""
    return {sha: m.tolerance_abs for sha, m in load_models(models_dir).items()}


_FORMAT_ERRORS = (KeyError, ValueError, TypeError, AttributeError, ProtocolError)


class Auditor:
    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        abis: dict[str, list[Any]],
        fetch: Callable[[int], bytes],
        tolerances: dict[str, float] | None = None,
    ) -> None:
        """``fetch(n)`` gives epoch n's file; ``tolerances`` each model's ``tolerance_abs``
        by its sha256 hex (a model not named compares across classes exactly)."""
        self.w3, self.d, self.fetch = w3, deployment, fetch
        self.tolerances = tolerances or {}
        self.contracts: dict[str, Contract] = {
            name: w3.eth.contract(address=Web3.to_checksum_address(a), abi=abis[name])
            for name, a in deployment.addresses.items()
        }
        self.settlement = self.contracts["EpochSettlement"]
        # each audited file that hashed to its posted fileHash, parsed: what replay picks from
        self.documents: dict[int, dict[str, Any]] = {}

    def audit(self, upto: int | None = None) -> AuditReport:
        """Audit epochs 1..upto (default: every posted one); earnings are cumulative, so
        epoch n is audited with every epoch before it."""
        report = AuditReport()
        last = int(self.settlement.functions.lastEpoch().call())
        upto = last if upto is None else upto
        if not 1 <= upto <= last:
            report.check("epoch_posted", False, upto, f"epoch {upto} is not on chain (last {last})")
            return report
        records = read_chain(self.w3, self.d, self.contracts)
        run = Running(posted_block=self.d.block)
        for n in range(1, upto + 1):
            report.epochs.append(n)
            self._audit_epoch(n, report, run, records)
        self._audit_contracts(upto, report, records)
        return report

    def _audit_epoch(
        self, n: int, report: AuditReport, run: Running, records: ChainRecords
    ) -> None:
        record = EpochRecord.from_call(self.settlement.functions.epochs(n).call())
        report.check("not_vetoed", not record.vetoed, n, "the guardian vetoed this epoch")
        block = records.posted_block(n, record.file_hash)
        if block is None:
            report.check("epoch_event", False, n, "no EpochPosted event posted this record")
            return
        report.check("epoch_event", True, n, "")
        window = EpochWindow(n, run.posted_block, block)
        run.posted_block = block
        try:
            raw = self.fetch(n)
        except Exception as exc:  # any way the file cannot be had is the same fault
            report.check("file_available", False, n, f"the epoch file cannot be read: {exc}")
            return
        if not report.check(
            "file_hash",
            epochfile.file_hash(raw) == record.file_hash,
            n,
            "the epoch file does not hash to the posted fileHash",
        ):
            return
        try:
            doc = epochfile.parse(raw)
            self.documents[n] = doc
            self._audit_document(window, doc, record, report, run, records)
        except _FORMAT_ERRORS as exc:
            report.check("file_format", False, n, f"the epoch file is malformed: {exc!r}")

    def _audit_document(
        self,
        w: EpochWindow,
        doc: dict[str, Any],
        record: EpochRecord,
        report: AuditReport,
        run: Running,
        records: ChainRecords,
    ) -> None:
        n, contracts = w.n, doc.get("contracts", {})
        report.check(
            "file_header",
            doc.get("epoch") == n
            and doc.get("chain_id") == self.d.chain_id
            and Web3.to_checksum_address(contracts.get("vault", "0x" + "0" * 40))
            == Web3.to_checksum_address(self.d.vault),
            n,
            "the file names another epoch, chain or vault",
        )
        jobs = JobAudit(report, records, self.d.vault, self.d.registry_domain, self.tolerances)
        for job in doc["jobs"]:
            jobs.job(w, job, int(doc["fee_bps"]), run)
        self._audit_vouchers(w, doc, report, run, records)
        self._audit_leaves(n, doc, report, run, record)
        self._audit_results(n, doc, report, record.results_root)
        self._audit_money(w, report, run, records)

    def _audit_results(
        self, n: int, doc: dict[str, Any], report: AuditReport, posted: bytes
    ) -> None:
        """The results root commits to every accepted job's consensus (what slashing proves
        against): rebuilt from the file's jobs, it must equal the posted one."""
        try:  # a job listed twice is job_once's fault; the tree has each leaf once
            leaves = {leaf.key: leaf for leaf in epochfile.result_leaves(doc)}
            rebuilt = merkle.build_results(list(leaves.values())).root
        except _FORMAT_ERRORS:
            rebuilt = b""
        report.check(
            "results_root",
            rebuilt == posted and doc.get("results_root") == "0x" + posted.hex(),
            n,
            "the accepted jobs' results do not hash to the posted results root",
        )

    def _audit_vouchers(
        self,
        w: EpochWindow,
        doc: dict[str, Any],
        report: AuditReport,
        run: Running,
        records: ChainRecords,
    ) -> None:
        n = w.n
        listed = {v["client"].lower(): v for v in doc["vouchers"]}
        report.check(
            "vouchers_cover_clients",
            set(listed) == {c for c, amt in run.charged.items() if amt},
            n,
            "the vouchers do not match the charged clients",
        )
        for client, v in listed.items():
            voucher = Voucher(v["client"], int(v["cumulative_amount_wei"]), int(v["expiry"]))
            try:
                signer = recover_voucher(
                    self.d.vault_domain, voucher, bytes.fromhex(v["signature"][2:])
                )
            except (ValueError, ProtocolError):
                signer = ""
            report.check(
                "voucher_signature",
                signer.lower() == client,
                n,
                f"voucher of {client} is not signed by it",
            )
            latest = max((c for c, _, _ in run.vouchers.get(client, [])), default=0)
            report.check(
                "voucher_latest",
                voucher.cumulative_amount == latest,
                n,
                f"the voucher of {client} is for {voucher.cumulative_amount}, its latest job's "
                f"for {latest}",
            )
            redeem = int(v["redeem_cumulative_wei"])
            report.check(
                "charged_within_voucher",
                redeem <= voucher.cumulative_amount,
                n,
                f"{client} is charged {redeem} above its voucher {voucher.cumulative_amount}",
            )
            report.check(
                "charged_matches_jobs",
                redeem == run.charged.get(client, 0),
                n,
                f"{client} is charged {redeem}, its accepted jobs cost "
                f"{run.charged.get(client, 0)}",
            )
        on_chain = {r.client for r in records.redemptions if r.block <= w.until_block}
        for client in sorted(on_chain | set(run.charged)):
            redeemed = records.redeemed_of(client, w.until_block)
            report.check(
                "charged_on_chain",
                redeemed == run.charged.get(client, 0),
                n,
                f"the vault redeemed {redeemed} from {client} by epoch {n}; its accepted jobs in "
                f"the files cost {run.charged.get(client, 0)} (a charged job is missing, or "
                "a charge has no job)",
            )

    def _audit_leaves(
        self, n: int, doc: dict[str, Any], report: AuditReport, run: Running, record: EpochRecord
    ) -> None:
        leaves = {leaf["account"].lower(): int(leaf["cumulative_wei"]) for leaf in doc["leaves"]}
        report.check(
            "leaves",
            len(leaves) == len(doc["leaves"])
            and leaves == {k: v for k, v in run.earned.items() if v},
            n,
            "the leaves are not the contributors' cumulative earnings",
        )
        try:
            root = merkle.build(list(leaves.items())).root
        except ProtocolError:
            root = b""
        report.check(
            "root",
            root == record.root and doc["root"] == "0x" + record.root.hex(),
            n,
            "the leaves do not hash to the posted root",
        )
        report.check(
            "totals",
            record.cumulative_payout == sum(run.earned.values())
            and record.cumulative_fees == run.fees,
            n,
            f"chain totals {record.cumulative_payout}/{record.cumulative_fees} differ from the "
            f"jobs' payouts/fees {sum(run.earned.values())}/{run.fees}",
        )

    def _audit_money(
        self, w: EpochWindow, report: AuditReport, run: Running, records: ChainRecords
    ) -> None:
        n = w.n
        redeemed = records.redeemed_total(w.until_block)
        expected = sum(run.earned.values()) + run.fees
        report.check(
            "money_conserved",
            redeemed == expected,
            n,
            f"the vault redeemed {redeemed} by epoch {n}; payouts + fees are {expected}",
        )
        for claim in records.claims:
            if int(claim["args"]["epoch"]) == n:
                account = str(claim["args"]["account"]).lower()
                report.check(
                    "claim_within_leaf",
                    int(claim["args"]["cumulativeAmount"]) <= run.earned.get(account, 0),
                    n,
                    f"{account} claimed above its leaf",
                )

    def _audit_contracts(self, upto: int, report: AuditReport, records: ChainRecords) -> None:
        """Now, to the wei: the settlement holds what the vault redeemed less what was
        claimed and paid in fees; every slash reached the slash pool."""
        token = self.contracts["ComputeToken"]
        held = int(token.functions.balanceOf(Web3.to_checksum_address(self.d.settlement)).call())
        claimed = sum(int(c["args"]["amount"]) for c in records.claims)
        redeemed = sum(r.increase_wei for r in records.redemptions)
        expected = redeemed - claimed - records.fees_claimed_wei
        report.check(
            "settlement_balance",
            held == expected,
            upto,
            f"the settlement holds {held}; redeemed {redeemed} less claims {claimed} and fees "
            f"{records.fees_claimed_wei} is {expected}",
        )
        report.check(
            "slashes_to_pool",
            records.slashed_wei == records.slash_paid_wei,
            upto,
            f"slashes total {records.slashed_wei}, the slash pool received "
            f"{records.slash_paid_wei}",
        )

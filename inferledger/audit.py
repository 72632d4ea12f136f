"""Audit epochs from public records only: chain state and events, and the epoch files.

For every epoch up to the one asked: the file's keccak256 equals the hash posted on chain;
every attestation recovers to its worker and that worker is registered to the named
contributor; one vote per worker and no two votes from one contributor; every consensus
decision and payout split follows from the votes; every voucher is signed by its client and
covers what it was charged; the leaves are the cumulative earnings and hash to the posted
root; the totals equal the chain's; and money is conserved to the wei: what the vault
redeemed by the time the epoch was posted equals payouts plus fees, and no claim exceeds a
leaf. Imports only ``protocol``: an auditor needs nothing of the operator's code.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from web3 import Web3
from web3.contract import Contract

from protocol import epochfile, merkle
from protocol.contracts import Deployment, EpochRecord
from protocol.eip712 import Attestation, Voucher, job_id, recover_attestation, recover_voucher
from protocol.errors import ProtocolError
from protocol.fingerprint import Fingerprint
from protocol.pricing import split


@dataclass
class AuditReport:
    epochs: list[int] = field(default_factory=list)
    checks: Counter[str] = field(default_factory=Counter)
    faults: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults and bool(self.epochs)

    def check(self, name: str, holds: bool, epoch: int, detail: str) -> bool:
        self.checks[name] += 1
        if not holds:
            self.faults.append({"check": name, "epoch": epoch, "detail": detail})
        return holds

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "epochs": self.epochs,
            "checks": dict(self.checks),
            "faults": self.faults,
        }


@dataclass
class _Running:
    earned: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    charged: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    fees: int = 0
    seen_jobs: set[str] = field(default_factory=set)


class Auditor:
    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        abis: dict[str, list[Any]],
        fetch: Callable[[int], bytes],
    ) -> None:
        self.w3, self.d, self.fetch = w3, deployment, fetch
        self.settlement: Contract = w3.eth.contract(
            address=Web3.to_checksum_address(deployment.settlement), abi=abis["EpochSettlement"]
        )
        self.registry: Contract = w3.eth.contract(
            address=Web3.to_checksum_address(deployment.registry), abi=abis["StakeRegistry"]
        )
        self.vault: Contract = w3.eth.contract(
            address=Web3.to_checksum_address(deployment.vault), abi=abis["PaymentVault"]
        )
        self._owners: dict[str, str] = {}

    def owner(self, worker: str) -> str:
        if worker not in self._owners:
            self._owners[worker] = str(
                self.registry.functions.workerOwner(Web3.to_checksum_address(worker)).call()
            )
        return self._owners[worker]

    def audit(self, upto: int | None = None) -> AuditReport:
        report = AuditReport()
        last = int(self.settlement.functions.lastEpoch().call())
        upto = last if upto is None else upto
        if not 1 <= upto <= last:
            report.faults.append(
                {
                    "check": "epoch_posted",
                    "epoch": upto,
                    "detail": f"epoch {upto} is not on chain (last is {last})",
                }
            )
            return report
        events = self._events()
        running = _Running()
        for n in range(1, upto + 1):
            report.epochs.append(n)
            self._audit_epoch(n, report, running, events)
        return report

    def _events(self) -> dict[str, list[Any]]:
        start = self.d.block
        return {
            "posted": list(self.settlement.events.EpochPosted.get_logs(from_block=start)),
            "redeemed": list(self.vault.events.VoucherRedeemed.get_logs(from_block=start)),
            "claimed": list(self.settlement.events.Claimed.get_logs(from_block=start)),
        }

    def _audit_epoch(
        self, n: int, report: AuditReport, run: _Running, events: dict[str, list[Any]]
    ) -> None:
        record = EpochRecord.from_call(self.settlement.functions.epochs(n).call())
        root, file_hash, payout, fees = (
            record.root,
            record.file_hash,
            record.cumulative_payout,
            record.cumulative_fees,
        )
        report.check("not_vetoed", not record.vetoed, n, "the guardian vetoed this epoch")
        raw = self.fetch(n)
        if not report.check(
            "file_hash",
            epochfile.file_hash(raw) == bytes(file_hash),
            n,
            "the epoch file does not hash to the posted fileHash",
        ):
            return
        doc = epochfile.parse(raw)
        contracts = doc.get("contracts", {})
        report.check(
            "file_header",
            doc.get("epoch") == n
            and doc.get("chain_id") == self.d.chain_id
            and Web3.to_checksum_address(contracts.get("vault", "0x" + "0" * 40))
            == Web3.to_checksum_address(self.d.vault),
            n,
            "the file names another epoch, chain or vault",
        )
        for job in doc["jobs"]:
            self._audit_job(n, job, int(doc["fee_bps"]), report, run)
        self._audit_vouchers(n, doc, report, run)
        self._audit_leaves(n, doc, report, run, bytes(root), int(payout), int(fees))
        self._audit_results(n, doc, report, record.results_root)
        self._audit_money(n, report, run, events)

    def _audit_results(
        self, n: int, doc: dict[str, Any], report: AuditReport, posted: bytes
    ) -> None:
        """The results root commits to every accepted job's consensus (what slashing proves
        against): rebuilt from the file's jobs, it must equal the posted one."""
        try:
            rebuilt = merkle.build_results(epochfile.result_leaves(doc)).root
        except (ProtocolError, KeyError, ValueError, TypeError):
            rebuilt = b""
        report.check(
            "results_root",
            rebuilt == posted and doc.get("results_root") == "0x" + posted.hex(),
            n,
            "the accepted jobs' results do not hash to the posted results root",
        )

    def _audit_job(
        self, n: int, job: dict[str, Any], fee_bps: int, report: AuditReport, run: _Running
    ) -> None:
        jid = job["job_id"]
        report.check("job_once", jid not in run.seen_jobs, n, f"job {jid} is counted twice")
        run.seen_jobs.add(jid)
        report.check(
            "job_id",
            "0x" + job_id(self.d.vault, job["client"], int(job["voucher_cumulative_wei"])).hex()
            == jid,
            n,
            f"job {jid} is not named by its voucher",
        )
        votes = job["votes"]
        valid = [v for v in votes if self._vote_valid(n, jid, job, v, report)]
        report.check(
            "one_vote_per_worker",
            len({v["worker"] for v in votes}) == len(votes),
            n,
            f"job {jid} has two votes from one worker",
        )
        report.check(
            "distinct_contributors",
            len({v["contributor"] for v in votes}) == len(votes),
            n,
            f"job {jid} has two replicas of one contributor",
        )
        tally = Counter((v["fingerprint"], v["result_hash"]) for v in valid)
        winner, count = tally.most_common(1)[0] if tally else ((None, None), 0)
        accepted = bool(valid) and (count == len(valid) or count * 2 > len(valid))
        price = int(job["price_wei"])
        if job["status"] == "accepted":
            report.check(
                "consensus",
                accepted and (job["fingerprint"], job["result_hash"]) == winner,
                n,
                f"job {jid}: the recorded result is not the votes' consensus",
            )
            agreeing = sorted(
                v["contributor"] for v in valid if (v["fingerprint"], v["result_hash"]) == winner
            )
            shares, fee = split(price, fee_bps, agreeing)
            paid = {k.lower(): int(v) for k, v in job["paid"].items()}
            report.check(
                "payout_split",
                paid == {k.lower(): v for k, v in shares.items() if v}
                and int(job["fee_wei"]) == fee,
                n,
                f"job {jid}: payouts {paid} differ from the "
                f"split {shares} among agreeing contributors",
            )
            for contributor, amount in paid.items():
                run.earned[contributor] += amount
            run.fees += int(job["fee_wei"])
            run.charged[job["client"].lower()] += price
        else:
            report.check(
                "failed_job_unpaid",
                not job["paid"] and int(job["fee_wei"]) == 0,
                n,
                f"failed job {jid} paid someone",
            )
            report.check(
                "consensus", not accepted, n, f"job {jid} failed though its votes reach consensus"
            )

    def _vote_valid(
        self, n: int, jid: str, job: dict[str, Any], vote: dict[str, Any], report: AuditReport
    ) -> bool:
        try:
            fp = Fingerprint.from_dict(vote["fingerprint_info"])
            fp_ok = report.check(
                "fingerprint",
                "0x" + fp.digest().hex() == vote["fingerprint"],
                n,
                f"job {jid}: fingerprint info does not hash to the vote's fingerprint",
            )
            att = Attestation(
                bytes.fromhex(jid[2:]),
                bytes.fromhex(job["model_hash"][2:]),
                bytes.fromhex(job["input_hash"][2:]),
                bytes.fromhex(vote["result_hash"][2:]),
                bytes.fromhex(vote["fingerprint"][2:]),
            )
            signer = recover_attestation(
                self.d.registry_domain, att, bytes.fromhex(vote["signature"][2:])
            )
        except (KeyError, ValueError, TypeError, ProtocolError) as exc:
            report.check("attestation_signature", False, n, f"job {jid}: malformed vote ({exc})")
            return False
        sig_ok = report.check(
            "attestation_signature",
            signer.lower() == vote["worker"].lower(),
            n,
            f"job {jid}: vote of {vote['worker']} is signed by {signer}",
        )
        owner_ok = report.check(
            "worker_registered",
            self.owner(vote["worker"]).lower() == vote["contributor"].lower(),
            n,
            f"job {jid}: worker {vote['worker']} is not registered to {vote['contributor']}",
        )
        return fp_ok and sig_ok and owner_ok

    def _audit_vouchers(
        self, n: int, doc: dict[str, Any], report: AuditReport, run: _Running
    ) -> None:
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
                f"{client} is charged {redeem}, its accepted "
                f"jobs cost {run.charged.get(client, 0)}",
            )

    def _audit_leaves(
        self,
        n: int,
        doc: dict[str, Any],
        report: AuditReport,
        run: _Running,
        root: bytes,
        payout: int,
        fees: int,
    ) -> None:
        leaves = {leaf["account"].lower(): int(leaf["cumulative_wei"]) for leaf in doc["leaves"]}
        report.check(
            "leaves",
            leaves == {k: v for k, v in run.earned.items() if v},
            n,
            "the leaves are not the contributors' cumulative earnings",
        )
        tree = merkle.build(list(leaves.items())) if leaves else None
        report.check(
            "root",
            tree is not None and tree.root == root and doc["root"] == "0x" + root.hex(),
            n,
            "the leaves do not hash to the posted root",
        )
        report.check(
            "totals",
            payout == sum(leaves.values()) and fees == run.fees,
            n,
            f"chain totals {payout}/{fees} differ from "
            f"the file's {sum(leaves.values())}/{run.fees}",
        )

    def _audit_money(
        self, n: int, report: AuditReport, run: _Running, events: dict[str, list[Any]]
    ) -> None:
        posted = [e for e in events["posted"] if int(e["args"]["epoch"]) == n]
        if not report.check("epoch_event", len(posted) == 1, n, "no single EpochPosted event"):
            return
        block = int(posted[0]["blockNumber"])
        redeemed = sum(
            int(e["args"]["increase"]) for e in events["redeemed"] if int(e["blockNumber"]) <= block
        )
        expected = sum(run.earned.values()) + run.fees
        report.check(
            "money_conserved",
            redeemed == expected,
            n,
            f"vault redeemed {redeemed} by epoch {n}, payouts + fees are {expected}",
        )
        for claim in events["claimed"]:
            if int(claim["args"]["epoch"]) == n:
                account = str(claim["args"]["account"]).lower()
                report.check(
                    "claim_within_leaf",
                    int(claim["args"]["cumulativeAmount"]) <= run.earned.get(account, 0),
                    n,
                    f"{account} claimed above its leaf",
                )

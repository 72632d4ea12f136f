"""The audit of one job of an epoch file: its votes, its consensus, its payouts, its price.

Each vote must be signed by its worker over the job's (id, model, input, result,
fingerprint) and the worker registered to the named contributor while the epoch ran. The
decision is made again from the valid votes by ``protocol.consensus.tally``, the rule the
reconciler uses: within one fingerprint class answers match bit for bit; across classes they
agree when the revealed outputs (in the file for every contested job, bound to each vote's
signed result hash) are within the model's tolerance. The payouts are the split of the price
among the contributors whose votes agree, and the price fits in the client's voucher.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inferledger.audit_chain import ChainRecords
from protocol import hashing, tensors
from protocol.consensus import Vote, tally
from protocol.eip712 import Attestation, job_id, recover_attestation
from protocol.errors import ProtocolError
from protocol.fingerprint import Fingerprint
from protocol.pricing import split

if TYPE_CHECKING:
    from inferledger.audit import AuditReport

MAX_TENSOR_BYTES = 1 << 20  # a revealed output is at most 64 KiB a job; decode no more
_BAD = (KeyError, ValueError, TypeError, ProtocolError)


@dataclass
class Running:
    """What the audit carries from one epoch to the next."""

    earned: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    charged: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    fees: int = 0
    seen_jobs: set[str] = field(default_factory=set)
    # per client, every job so far as (voucher cumulative, price, job id), sorted
    vouchers: dict[str, list[tuple[int, int, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    reported_pairs: set[tuple[str, str]] = field(default_factory=set)
    posted_block: int = 0  # the block that posted the epoch before


@dataclass(frozen=True)
class EpochWindow:
    """Epoch ``n`` and the blocks its workers must have been registered within: a vote's
    worker was registered by the block that posted the epoch and not removed by the block
    that posted the one before."""

    n: int
    since_block: int
    until_block: int


class JobAudit:
    def __init__(
        self,
        report: AuditReport,
        records: ChainRecords,
        vault: str,
        registry_domain: Any,
        tolerances: dict[str, float],
    ) -> None:
        self.report, self.records, self.vault = report, records, vault
        self.registry_domain, self.tolerances = registry_domain, tolerances

    def check(self, name: str, holds: bool, n: int, detail: str) -> bool:
        return self.report.check(name, holds, n, detail)

    def job(self, w: EpochWindow, job: dict[str, Any], fee_bps: int, run: Running) -> None:
        n, jid = w.n, job["job_id"]
        self.check("job_once", jid not in run.seen_jobs, n, f"job {jid} is counted twice")
        run.seen_jobs.add(jid)
        cumulative = int(job["voucher_cumulative_wei"])
        self.check(
            "job_id",
            "0x" + job_id(self.vault, job["client"], cumulative).hex() == jid,
            n,
            f"job {jid} is not named by its voucher",
        )
        self._price_within_voucher(n, job, run)
        votes = job["votes"]
        valid = [(i, v) for i, v in enumerate(votes) if self._vote_valid(w, job, v)]
        self.check(
            "one_vote_per_worker",
            len({v["worker"].lower() for v in votes}) == len(votes),
            n,
            f"job {jid} has two votes from one worker",
        )
        self.check(
            "distinct_contributors",
            len({v["contributor"].lower() for v in votes}) == len(votes),
            n,
            f"job {jid} has two replicas of one contributor",
        )
        if job["status"] == "accepted":
            self._accepted(n, job, valid, fee_bps, run)
        else:
            self._failed(n, job, valid)

    def _decide(
        self, n: int, job: dict[str, Any], valid: list[tuple[int, dict[str, Any]]]
    ) -> tuple[tuple[str, str] | None, list[str]]:
        """The winning (fingerprint, result hash) if the votes reach consensus, and the
        contributors whose votes support it."""
        if not valid:
            return None, []
        votes = [
            Vote(i, v["worker"], v["contributor"].lower(), (v["fingerprint"], v["result_hash"]))
            for i, v in valid
        ]
        outputs = self._outputs(n, job, valid) if len({v.answer for v in votes}) > 1 else {}
        tolerance = self.tolerances.get(job["model_hash"].removeprefix("0x"), 0.0)
        result = tally(votes, outputs, tolerance, MAX_TENSOR_BYTES)
        if not result.majority:
            return None, []
        return result.winner, sorted(v.contributor for v in result.agreeing)

    def _accepted(
        self,
        n: int,
        job: dict[str, Any],
        valid: list[tuple[int, dict[str, Any]]],
        fee_bps: int,
        run: Running,
    ) -> None:
        jid, price = job["job_id"], int(job["price_wei"])
        winner, agreeing = self._decide(n, job, valid)
        self.check(
            "consensus",
            winner is not None and (job["fingerprint"], job["result_hash"]) == winner,
            n,
            f"job {jid}: the recorded result is not the consensus of its votes ({winner})",
        )
        shares, fee = split(price, fee_bps, agreeing)
        paid = {k.lower(): int(v) for k, v in job["paid"].items()}
        self.check(
            "payout_split",
            paid == {k: v for k, v in shares.items() if v} and int(job["fee_wei"]) == fee,
            n,
            f"job {jid}: paid {paid} and fee {job['fee_wei']}, but the split among the "
            f"agreeing contributors is {shares} and fee {fee}",
        )
        for contributor, amount in paid.items():
            run.earned[contributor] += amount
        run.fees += int(job["fee_wei"])
        run.charged[job["client"].lower()] += price

    def _failed(self, n: int, job: dict[str, Any], valid: list[tuple[int, dict[str, Any]]]) -> None:
        jid = job["job_id"]
        self.check(
            "failed_job_unpaid",
            not job["paid"] and int(job["fee_wei"]) == 0,
            n,
            f"failed job {jid} paid someone",
        )
        if job.get("failure") == "timeout":
            return  # replicas missing at the deadline: nothing to re-decide
        winner, _ = self._decide(n, job, valid)
        self.check(
            "consensus",
            job.get("failure") == "no_majority" and winner is None,
            n,
            f"job {jid} failed ({job.get('failure')}) though its votes reach consensus {winner}",
        )

    def _price_within_voucher(self, n: int, job: dict[str, Any], run: Running) -> None:
        """Each job's price fits in what its voucher adds to the client's previous one: the
        client signs cumulative totals, one per request, so charging a job above the step
        spends money the client signed for another job."""
        client, jid = job["client"].lower(), job["job_id"]
        chain = run.vouchers[client]
        bisect.insort(chain, (int(job["voucher_cumulative_wei"]), int(job["price_wei"]), jid))
        at = next(i for i, item in enumerate(chain) if item[2] == jid)
        for i in (at, at + 1):  # the new job, and the one it now precedes
            if i >= len(chain):
                continue
            below = chain[i - 1][0] if i > 0 else 0
            cumulative, price, this = chain[i]
            pair = (chain[i - 1][2] if i > 0 else "", this)
            if price > cumulative - below and pair not in run.reported_pairs:
                run.reported_pairs.add(pair)
                self.check(
                    "job_within_voucher",
                    False,
                    n,
                    f"job {this} of {client} costs {price}, its voucher adds only "
                    f"{cumulative - below} to the previous one",
                )
        self.report.checks["job_within_voucher"] += 1

    def _vote_valid(self, w: EpochWindow, job: dict[str, Any], vote: dict[str, Any]) -> bool:
        n, jid = w.n, job["job_id"]
        try:
            fp = Fingerprint.from_dict(vote["fingerprint_info"])
            att = Attestation(
                bytes.fromhex(job["job_id"][2:]),
                bytes.fromhex(job["model_hash"][2:]),
                bytes.fromhex(job["input_hash"][2:]),
                bytes.fromhex(vote["result_hash"][2:]),
                bytes.fromhex(vote["fingerprint"][2:]),
            )
            signer = recover_attestation(
                self.registry_domain, att, bytes.fromhex(vote["signature"][2:])
            )
        except _BAD as exc:
            self.check("attestation_signature", False, n, f"job {jid}: malformed vote ({exc})")
            return False
        fp_ok = self.check(
            "fingerprint",
            "0x" + fp.digest().hex() == vote["fingerprint"],
            n,
            f"job {jid}: fingerprint info does not hash to the vote's fingerprint",
        )
        sig_ok = self.check(
            "attestation_signature",
            signer.lower() == vote["worker"].lower(),
            n,
            f"job {jid}: the vote of {vote['worker']} is signed by {signer}",
        )
        fault = self.records.registration_fault(
            vote["worker"], vote["contributor"], w.since_block, w.until_block
        )
        reg_ok = self.check("worker_registered", fault is None, n, f"job {jid}: {fault}")
        return fp_ok and sig_ok and reg_ok

    def _outputs(
        self, n: int, job: dict[str, Any], valid: list[tuple[int, dict[str, Any]]]
    ) -> dict[int, str | None]:
        """Each contested vote's revealed outputs, kept only where they hash to the vote's
        signed result under the job's model and input rows."""
        jid = job["job_id"]
        try:
            rows = [bytes.fromhex(h[2:]) for h in job.get("input_row_hashes", [])]
            model = bytes.fromhex(job["model_hash"][2:])
            rows_ok = hashing.commit_rows(hashing.TAG_INPUT, rows) == bytes.fromhex(
                job["input_hash"][2:]
            )
        except _BAD:
            rows, model, rows_ok = [], b"", False
        out: dict[int, str | None] = {}
        for i, vote in valid:
            revealed = vote.get("outputs")
            bound = False
            if revealed is not None and rows_ok:
                try:
                    decoded = {
                        k: tensors.decode(v, max_bytes=MAX_TENSOR_BYTES)
                        for k, v in revealed.items()
                    }
                    bound = (
                        "0x" + hashing.result_hash(model, {}, decoded, rows).hex()
                        == vote["result_hash"]
                    )
                except _BAD + (AttributeError,):
                    bound = False
            if revealed is not None or len({v["fingerprint"] for _, v in valid}) > 1:
                self.check(
                    "outputs_bound",
                    bound,
                    n,
                    f"job {jid}: the outputs revealed for {vote['worker']} do not hash to its "
                    "signed result",
                )
            out[i] = json.dumps(revealed) if bound else None
        return out

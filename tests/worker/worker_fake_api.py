"""A stand-in for the API's wire contract, served by ``http.server`` on 127.0.0.1 port 0,
for what the real API never does (tests of the real one: ``test_worker_agent_live.py``).

It serves canned assignments, malformed ones included, checks EIP-191 sign-in signatures,
records every request, every posted result and every hand-back, and can be told to fail
requests (5xx), to revoke tokens (401), to deliver assignments again until they are answered
or handed back (as the API does), or to lack the routes an older API lacks (404).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy.typing as npt
from eth_account import Account
from eth_account.messages import encode_defunct

from protocol.hashing import input_hash
from protocol.tensors import encode

CHAIN = {
    "chain_id": 31337,
    "token": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    "vault": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
    "registry": "0x9fE46736679d2D9a65F0F2bEa5ae7Bf8B28Cd2B1",
    "settlement": "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9",
}
CONTRIBUTOR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def make_assignment(
    model_hash_hex: str, inputs: dict[str, npt.NDArray[Any]], *, job: int, deadline: int = 0
) -> dict[str, Any]:
    return {
        "job_id": "0x" + hashlib.sha256(b"job %d" % job).hexdigest(),
        "model_hash": "0x" + model_hash_hex,
        "input_hash": "0x" + input_hash(inputs).hex(),
        "inputs": {name: encode(array) for name, array in inputs.items()},
        "deadline": deadline or 2_000_000_000,
    }


class FakeApi:
    def __init__(self, assignments: list[Any] | None = None) -> None:
        self.assignments = list(assignments or [])
        self.requests: list[tuple[str, str]] = []
        self.posted: list[dict[str, Any]] = []
        self.batches: list[int] = []  # items per POST /v1/work/results
        self.batch_bytes: list[int] = []  # their bodies' sizes
        self.released: list[str] = []
        self.redeliver = False  # deliver each assignment until answered or handed back
        self.older_api = False  # no release, heartbeat or earnings routes
        self.pending_wei = 0
        self.eligible = True
        self.bad_pull_answers: list[Any] = []  # answered to the next pulls, in turn
        self.refuse: dict[str, str] = {}  # job_id -> error code answered for it
        self.fail_next: dict[str, list[int]] = {}  # path -> statuses answered first
        self.revoke_tokens_after_pull = False
        self.on_pull: Callable[[], None] | None = None
        self.tokens_issued = 0
        self.posted_event = threading.Event()
        self._nonces: dict[str, str] = {}
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_posted(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.posted) >= count:
                    return
            time.sleep(0.01)
        raise AssertionError(f"only {len(self.posted)} of {count} results posted")

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r == (method, path))

    # --- routes ---------------------------------------------------------------------------

    def route(self, method: str, url: str, headers: Any, body: Any) -> tuple[int, Any]:
        parsed = urlparse(url)
        path = parsed.path
        with self._lock:
            self.requests.append((method, path))
            pending = self.fail_next.get(path)
            if pending:
                return pending.pop(0), {"error": "unavailable", "detail": "injected failure"}
        if (method, path) == ("GET", "/v1/chain"):
            return 200, CHAIN
        if (method, path) == ("POST", "/v1/auth/challenge"):
            return self._challenge(body)
        if (method, path) == ("POST", "/v1/auth/token"):
            return self._token(body)
        if not self._authorised(headers):
            return 401, {"error": "invalid_token", "detail": "sign in again"}
        if (method, path) == ("GET", "/v1/work"):
            return self._work(int(parse_qs(parsed.query)["max"][0]))
        if (method, path) == ("POST", "/v1/work/results"):
            return self._results(body)
        if self.older_api:
            return 404, {"error": "not_found", "detail": path}
        if (method, path) == ("POST", "/v1/work/release"):
            return self._release(body)
        if (method, path) == ("POST", "/v1/work/heartbeat"):
            return 200, {
                "worker": "",
                "contributor": CONTRIBUTOR,
                "eligible": self.eligible,
                "in_flight": len(self.assignments),
                "seen_s": 30.0,
            }
        if (method, path) == ("GET", "/v1/work/earnings"):
            return 200, {
                "worker": "",
                "contributor": CONTRIBUTOR,
                "pending_wei": str(self.pending_wei),
                "pending_jobs": 0,
                "posted_epoch": 0,
            }
        return 404, {"error": "not_found", "detail": path}

    def _challenge(self, body: Any) -> tuple[int, Any]:
        nonce = secrets.token_hex(16)
        address = str(body["address"])
        self._nonces[nonce] = address
        message = f"inferledger worker sign-in\naddress: {address}\nnonce: {nonce}"
        return 200, {"nonce": nonce, "message": message, "expires_at": int(time.time()) + 300}

    def _token(self, body: Any) -> tuple[int, Any]:
        nonce, address = str(body["nonce"]), str(body["address"])
        if self._nonces.pop(nonce, None) != address:
            return 401, {"error": "unknown_nonce", "detail": nonce}
        message = f"inferledger worker sign-in\naddress: {address}\nnonce: {nonce}"
        signer = Account.recover_message(encode_defunct(text=message), signature=body["signature"])
        if signer != address:
            return 401, {"error": "invalid_signature", "detail": signer}
        token = secrets.token_hex(16)
        with self._lock:
            self._tokens.add(token)
            self.tokens_issued += 1
        expires = int(time.time()) + 3600
        return 200, {
            "token": token,
            "expires_at": expires,
            "role": "worker",
            "contributor": CONTRIBUTOR,
        }

    def _authorised(self, headers: Any) -> bool:
        value = str(headers.get("Authorization", ""))
        return value.startswith("Bearer ") and value[7:] in self._tokens

    def _work(self, max_items: int) -> tuple[int, Any]:
        with self._lock:
            if self.bad_pull_answers:
                return 200, self.bad_pull_answers.pop(0)
            batch = self.assignments[:max_items]
            if not self.redeliver:
                self.assignments = self.assignments[max_items:]
            if batch and self.revoke_tokens_after_pull:
                self._tokens.clear()
                self.revoke_tokens_after_pull = False
        if batch and self.on_pull is not None:
            self.on_pull()
        return 200, {"assignments": batch}

    def _results(self, body: Any) -> tuple[int, Any]:
        answers = []
        with self._lock:
            self.batches.append(len(body["results"]))
            for result in body["results"]:
                self.posted.append(result)
                self._forget(result["job_id"])
                code = self.refuse.get(result["job_id"])
                answers.append(
                    {
                        "job_id": result["job_id"],
                        "status": "refused" if code else "accepted",
                        "error": code,
                        "detail": "refused by the test" if code else "",
                    }
                )
        self.posted_event.set()
        return 200, {"results": answers}

    def _release(self, body: Any) -> tuple[int, Any]:
        with self._lock:
            released = [j for j in body["job_ids"] if self._forget(j)]
            self.released.extend(released)
        return 200, {"released": released}

    def _forget(self, job_id: str) -> bool:
        """Stop delivering an assignment; False when it was not (or no longer) delivered."""
        kept = [a for a in self.assignments if not _is_job(a, job_id)]
        found = len(kept) != len(self.assignments)
        if self.redeliver:
            self.assignments = kept
        return found or not self.redeliver

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                if method == "POST" and self.path.endswith("/v1/work/results"):
                    api.batch_bytes.append(length)
                status, answer = api.route(method, self.path, self.headers, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _is_job(assignment: Any, job_id: str) -> bool:
    return isinstance(assignment, dict) and str(assignment.get("job_id", "")).lower() == job_id

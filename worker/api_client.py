"""The worker's side of the API's HTTP contract (``/v1/auth``, ``/v1/chain``, ``/v1/work``:
pull, submit, hand back, heartbeat, earnings).

Sign-in is a challenge signed with EIP-191 personal_sign; later requests carry the bearer
token, and a 401 signs in again once. An unreachable API, a 5xx or a 429 is retried with
exponential backoff and jitter until the call's ``Cancel`` says stop, then ``ApiUnavailable``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from protocol.contracts import Deployment
from worker.config import WorkerSettings
from worker.errors import ApiError, ApiUnavailable, AuthRefused, BadResponse
from worker.retry import Backoff, Cancel, Never

logger = logging.getLogger(__name__)

USER_AGENT = "inferledger-worker/0.1"
RETRY_STATUSES = frozenset({429})


@dataclass(frozen=True)
class SubmitStatus:
    job_id: str
    status: str
    error: str | None
    detail: str

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


@dataclass(frozen=True)
class Presence:
    eligible: bool
    in_flight: int


@dataclass(frozen=True)
class Earnings:
    pending_wei: int
    pending_jobs: int


class ApiClient:
    def __init__(
        self,
        settings: WorkerSettings,
        account: LocalAccount,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        agent = f"{USER_AGENT} ({settings.name})" if settings.name else USER_AGENT
        self._http = httpx.Client(
            base_url=settings.api_url.rstrip("/"),
            timeout=settings.request_timeout_s,
            headers={"User-Agent": agent},
            transport=transport,
        )
        self._settings = settings
        self._account = account
        self._token: str | None = None
        self._token_expires_at = 0.0
        self.contributor: str | None = None
        self.failed_attempts = 0  # requests that failed and were retried or given up

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- endpoints -------------------------------------------------------------------------

    def sign_in(self, cancel: Cancel | None = None) -> None:
        cancel = cancel or Never()
        address = self._account.address
        challenge = self._call("POST", "/v1/auth/challenge", cancel, body={"address": address})
        message = _field(challenge, "message", str, "/v1/auth/challenge")
        nonce = _field(challenge, "nonce", str, "/v1/auth/challenge")
        signed = Account.sign_message(encode_defunct(text=message), private_key=self._account.key)
        body = {
            "address": address,
            "nonce": nonce,
            "signature": "0x" + bytes(signed.signature).hex(),
        }
        answer = self._call("POST", "/v1/auth/token", cancel, body=body)
        self._token = _field(answer, "token", str, "/v1/auth/token")
        self._token_expires_at = float(_field(answer, "expires_at", int, "/v1/auth/token"))
        contributor = answer.get("contributor")
        self.contributor = contributor if isinstance(contributor, str) else None
        logger.info("signed in as worker %s (contributor %s)", address, self.contributor)

    def chain(self, cancel: Cancel | None = None) -> Deployment:
        data = self._call("GET", "/v1/chain", cancel or Never())
        try:
            deployment = Deployment.from_dict({**data, "block": 0})
            deployment.registry_domain.as_dict()  # checks the addresses
        except (KeyError, TypeError, ValueError) as exc:
            raise BadResponse("/v1/chain", 200, f"not a deployment: {exc}") from exc
        return deployment

    def pull(self, max_items: int, cancel: Cancel | None = None, wait_s: float = 0.0) -> list[Any]:
        """Raw assignments (checked one by one by the caller); also the worker's heartbeat.
        ``wait_s``: with none open, the API answers once one is assigned or this runs out."""
        params: dict[str, Any] = {"max": max_items}
        if wait_s > 0:
            params["wait_s"] = wait_s
        data = self._call(
            "GET", "/v1/work", cancel or Never(), params=params, auth=True, waits_s=wait_s
        )
        assignments = _field(data, "assignments", list, "/v1/work")
        return list(assignments)

    def submit(
        self, results: list[dict[str, Any]], cancel: Cancel | None = None
    ) -> list[SubmitStatus]:
        path = "/v1/work/results"
        data = self._call("POST", path, cancel or Never(), body={"results": results}, auth=True)
        return _statuses(data, path)

    def submit_and_pull(
        self,
        results: list[dict[str, Any]],
        max_items: int,
        wait_s: float = 0.0,
        cancel: Cancel | None = None,
    ) -> tuple[list[SubmitStatus], list[Any] | None]:
        """Submit, then pull as ``pull(max_items, wait_s)`` would, in one exchange: the
        statuses, and the raw assignments (None from an API that does not pull there)."""
        path = "/v1/work/results"
        params: dict[str, Any] = {"max": max_items}
        if wait_s > 0:
            params["wait_s"] = wait_s
        data = self._call(
            "POST", path, cancel or Never(), body={"results": results}, params=params,
            auth=True, waits_s=wait_s,
        )  # fmt: skip
        pulled = data.get("assignments")
        if pulled is not None and not isinstance(pulled, list):
            raise BadResponse(path, 200, "assignments must be a list")
        return _statuses(data, path), pulled

    def release(self, job_ids: list[str], reason: str, cancel: Cancel | None = None) -> list[str]:
        """Hand assignments back; returns the ids the API took back."""
        path = "/v1/work/release"
        body = {"job_ids": job_ids, "reason": reason}
        data = self._call("POST", path, cancel or Never(), body=body, auth=True)
        return [str(j).lower() for j in _field(data, "released", list, path)]

    def heartbeat(self, cancel: Cancel | None = None) -> Presence:
        path = "/v1/work/heartbeat"
        data = self._call("POST", path, cancel or Never(), auth=True)
        return Presence(
            eligible=bool(_field(data, "eligible", bool, path)),
            in_flight=int(_field(data, "in_flight", int, path)),
        )

    def earnings(self, cancel: Cancel | None = None) -> Earnings:
        path = "/v1/work/earnings"
        data = self._call("GET", path, cancel or Never(), auth=True)
        try:
            pending_wei = int(_field(data, "pending_wei", str, path))
        except ValueError:
            raise BadResponse(path, 200, "pending_wei must be a decimal string") from None
        return Earnings(pending_wei, int(_field(data, "pending_jobs", int, path)))

    # --- plumbing --------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        cancel: Cancel,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        auth: bool = False,
        waits_s: float = 0.0,
    ) -> dict[str, Any]:
        signed_in_again = False
        while True:
            headers = {}
            if auth:
                if self._token is None or time.time() >= self._token_expires_at - self._margin:
                    self.sign_in(cancel)
                    signed_in_again = True
                headers["Authorization"] = f"Bearer {self._token}"
            response = self._send(method, path, cancel, body, params, headers, waits_s)
            if response.status_code == 401 and auth and not signed_in_again:
                logger.info("token refused on %s; signing in again", path)
                self._token = None
                continue
            return _decode(path, response, auth_endpoint=path.startswith("/v1/auth") or auth)

    @property
    def _margin(self) -> float:
        return self._settings.token_refresh_margin_s

    def _send(
        self,
        method: str,
        path: str,
        cancel: Cancel,
        body: dict[str, Any] | None,
        params: dict[str, Any] | None,
        headers: dict[str, str],
        waits_s: float = 0.0,
    ) -> httpx.Response:
        backoff = Backoff(self._settings.backoff_initial_s, self._settings.max_backoff_s)
        while True:
            try:
                response = self._http.request(
                    method,
                    path,
                    json=body,
                    params=params,
                    headers=headers,
                    timeout=self._settings.request_timeout_s + waits_s,  # a long poll's wait
                )
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 500 and response.status_code not in RETRY_STATUSES:
                    return response
                problem = f"HTTP {response.status_code} {_error_code(response)}"
            self.failed_attempts += 1
            delay = backoff.next_delay()
            if cancel.is_set():
                raise ApiUnavailable(path, backoff.attempts, problem)
            # warn on attempts 1, 2, 4, 8, ...: a long outage stays visible without flooding
            quiet = backoff.attempts & (backoff.attempts - 1)
            log = logger.debug if quiet else logger.warning
            log(
                "%s %s failed (%s); retry %d in %.2fs",
                method,
                path,
                problem,
                backoff.attempts,
                delay,
            )
            cancel.wait(delay)
            if cancel.is_set():
                raise ApiUnavailable(path, backoff.attempts, problem)


def _error_code(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def _decode(path: str, response: httpx.Response, *, auth_endpoint: bool) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        detail = data.get("detail") if isinstance(data, dict) else None
        cls = AuthRefused if auth_endpoint and response.status_code in (401, 403) else ApiError
        raise cls(path, response.status_code, str(error or "http_error"), str(detail or ""))
    if not isinstance(data, dict):
        raise BadResponse(path, response.status_code, "the answer is not a JSON object")
    return data


def _field(data: Any, name: str, kind: type[Any], path: str) -> Any:
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadResponse(path, 200, f"field {name!r} must be a {kind.__name__}")
    return value


def _statuses(data: dict[str, Any], path: str) -> list[SubmitStatus]:
    statuses = []
    for item in _field(data, "results", list, path):
        if not isinstance(item, dict):
            raise BadResponse(path, 200, "a result status must be an object")
        statuses.append(
            SubmitStatus(
                job_id=str(_field(item, "job_id", str, path)).lower(),
                status=_field(item, "status", str, path),
                error=item.get("error") if isinstance(item.get("error"), str) else None,
                detail=str(item.get("detail") or ""),
            )
        )
    return statuses

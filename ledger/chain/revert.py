"""Decode a contract revert into a ``ChainError`` named like the Solidity custom error
(httpx's ``map_httpcore_exceptions`` pattern: one context manager, ``raise ... from exc``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak
from web3.exceptions import ContractLogicError

from ledger.errors import ChainError


def _signature(item: dict[str, Any]) -> str:
    types = ",".join(_type(i) for i in item.get("inputs", []))
    return f"{item['name']}({types})"


def _type(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return str(param["type"])


class ErrorDecoder:
    def __init__(self, abis: Iterable[list[dict[str, Any]]]) -> None:
        self._errors: dict[bytes, tuple[str, list[str]]] = {}
        for abi in abis:
            for item in abi:
                if item.get("type") == "error":
                    selector = bytes(keccak(text=_signature(item)))[:4]
                    self._errors[selector] = (item["name"], [_type(i) for i in item["inputs"]])

    def decode(self, data: bytes) -> tuple[str, tuple[Any, ...]]:
        entry = self._errors.get(data[:4])
        if entry is None:
            return "", ()
        name, types = entry
        try:
            return name, tuple(abi_decode(types, data[4:]))
        except Exception:  # malformed revert data: keep the name
            return name, ()

    @contextmanager
    def mapped(self, what: str) -> Iterator[None]:
        try:
            yield
        except ContractLogicError as exc:
            # nodes differ: the revert data is a hex string, or (Hardhat) a dict's "data"
            raw = exc.data.get("data", "") if isinstance(exc.data, dict) else exc.data or ""
            raw = raw if isinstance(raw, str) and raw.startswith("0x") else ""
            data = bytes.fromhex(raw.removeprefix("0x")) if raw else b""
            name, args = self.decode(data)
            label = name or (exc.message or "revert")
            raise ChainError(
                f"{what} reverted: {label}{args if args else ''}", name=name, args=args
            ) from exc

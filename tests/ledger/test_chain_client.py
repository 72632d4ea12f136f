"""The settler's chain client on its own Hardhat node (automine switched off to hold
transactions): a stuck transaction is replaced with higher fees under the same nonce and
takes effect exactly once; a revert is decoded into the Solidity error's name."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3.types import RPCEndpoint

from inferledger.demo import dev_keys
from inferledger.procs import Processes, free_port, start_hardhat_node
from ledger.chain.client import ChainClient, connect
from ledger.chain.deploy import deploy
from ledger.config import REPO_ROOT
from ledger.errors import ChainError

ARTIFACTS = REPO_ROOT / "artifacts"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    with Processes(tmp_path_factory.mktemp("own-hardhat")) as procs:
        url = start_hardhat_node(procs, free_port(), REPO_ROOT)
        w3 = connect(url)
        keys = dev_keys(3)
        deployment, _ = deploy(
            w3,
            ARTIFACTS,
            keys[0],
            treasury=Account.from_key(keys[2]).address,
            min_stake_wei=1,
            challenge_window_s=1,
        )
        yield w3, deployment


def _rpc(w3: Any, method: str, *params: Any) -> Any:
    return w3.provider.make_request(RPCEndpoint(method), list(params))


def test_chain_client_replaces_a_stuck_transaction_and_it_takes_effect_once(
    node: tuple[Any, Any], tmp_path: Path
) -> None:
    w3, deployment = node
    admin_key = dev_keys(1)[0]
    client = ChainClient(
        w3, deployment, ARTIFACTS, admin_key, receipt_timeout_s=0.5, max_replacements=3
    )
    receiver = Account.create().address
    nonce_before = w3.eth.get_transaction_count(client.address)
    outcome: dict[str, Any] = {}
    _rpc(w3, "evm_setAutomine", False)
    try:
        thread = threading.Thread(
            target=lambda: outcome.update(
                receipt=client.transact(client.token.functions.mint(receiver, 5), "mint")
            )
        )
        thread.start()
        deadline = time.monotonic() + 30
        while client.replacements < 1:  # the first version sat unmined past its timeout
            assert time.monotonic() < deadline, "the client never replaced the stuck transaction"
            time.sleep(0.05)
        _rpc(w3, "evm_mine")
        thread.join(timeout=30)
    finally:
        _rpc(w3, "evm_setAutomine", True)
    receipt = outcome["receipt"]
    assert receipt["status"] == 1
    assert client.token.functions.balanceOf(receiver).call() == 5  # minted once, not per version
    assert w3.eth.get_transaction_count(client.address) == nonce_before + 1
    mined = w3.eth.get_transaction(receipt["transactionHash"])
    assert (
        mined["nonce"] == nonce_before
        and mined["maxFeePerGas"] > w3.eth.get_block("latest")["baseFeePerGas"]
    )
    _rpc(w3, "evm_mine")  # a later block does not mine another version of the nonce
    assert client.token.functions.balanceOf(receiver).call() == 5


def test_chain_client_names_the_solidity_error(node: tuple[Any, Any]) -> None:
    w3, deployment = node
    stranger = ChainClient(w3, deployment, ARTIFACTS, "0x" + bytes(Account.create().key).hex())
    with pytest.raises(ChainError) as caught:
        stranger.transact(
            stranger.settlement.functions.postEpoch(
                1, b"\x01" * 32, b"\x01" * 32, b"\x00" * 32, 0, 0
            ),
            "postEpoch",
        )
    assert caught.value.name == "AccessControlUnauthorizedAccount", caught.value.detail
    assert caught.value.revert_args[0].lower() == stranger.address.lower()


def test_call_many_answers_in_order_across_batches_and_names_a_revert(
    node: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    w3, deployment = node
    client = ChainClient(w3, deployment, ARTIFACTS)
    admin = Account.from_key(dev_keys(1)[0]).address
    fns = [
        client.token.functions.totalSupply(),
        client.token.functions.balanceOf(admin),
        client.token.functions.decimals(),
        client.settlement.functions.lastEpoch(),
        client.token.functions.balanceOf(Account.create().address),
    ]
    one_by_one = [client.call(fn) for fn in fns]
    assert len(set(one_by_one)) >= 3  # the order is seen
    monkeypatch.setattr("ledger.chain.client.CALL_BATCH", 2)  # three batches
    assert client.call_many(fns, "reads") == one_by_one
    assert client.call_many([], "reads") == []
    reverting = client.token.functions.transfer(admin, 1)  # from an account holding none
    with pytest.raises(ChainError) as caught:
        client.call_many([fns[0], reverting], "reads")
    assert caught.value.name == "ERC20InsufficientBalance", caught.value.detail

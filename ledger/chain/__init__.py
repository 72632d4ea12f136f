"""The web3.py chain client: contracts, transactions from the settler key, revert decoding."""

"""The HTTP API: client, worker and audit routes over the ledger's services."""

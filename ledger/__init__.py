"""The truth off chain: tables, the double-entry journal, scheduling, reconciliation, epochs,
the chain client and the Celery tasks. Never imports ``api`` or ``worker``."""

"""``python -m worker``: the same commands as ``inferledger worker``."""

from worker.cli import main

main()

"""``python -m worker``: the same commands as ``inferledger worker``."""

from worker.cli import main

if __name__ == "__main__":
    main()

"""pytest ends when its tests have: what a test left running cannot hold the run open.

After the summary, Python's own exit joins every non-daemon thread (a ``ThreadPoolExecutor``'s
workers, a ``ProcessPoolExecutor``'s manager) and every non-daemon ``multiprocessing`` child.
One of those left blocked by a test holds the finished run open until something outside kills
it: CI once printed "756 passed" and then waited out its 90 minutes. So, once the session has
finished, this plugin names what is still running (with every thread's stack), kills the
leftover ``multiprocessing`` children and ends the process with the session's own exit status;
with nothing left over, a watchdog still dumps the stacks and ends the process should Python's
exit take longer than ``EXIT_WATCHDOG_S``.

tests/conftest.py imports the hooks; ``pytest -p exit_guard`` loads them elsewhere
(tests/inferledger/test_exit_guard.py runs it over a test that leaks on purpose)."""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import sys
import threading

import pytest

EXIT_WATCHDOG_S = 120.0
_STATUS = pytest.StashKey[int]()


def _say(text: str) -> None:
    os.write(2, text.encode(errors="replace"))  # the real stderr: capture may still hold fd 2


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    status = config.stash.get(_STATUS, None)
    if status is None:  # no session ran (--help, --version, a usage error)
        return
    threads = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    children = multiprocessing.active_children()
    if not (threads or children):
        faulthandler.dump_traceback_later(EXIT_WATCHDOG_S, exit=True)
        return
    names = [f"thread {t.name!r}" for t in threads]
    names += [f"process {p.name!r} (pid {p.pid})" for p in children]
    _say(
        "\nexit_guard: the tests left running: " + ", ".join(names) + "; their stacks follow, "
        f"then the run ends with the session's exit status ({status})\n"
    )
    sys.stdout.flush()
    sys.stderr.flush()
    faulthandler.dump_traceback(all_threads=True)
    for child in children:
        child.kill()
        child.join(5)
    os._exit(status)

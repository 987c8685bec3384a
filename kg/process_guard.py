"""Worker processes that end when the process they work for dies.

A ``multiprocessing`` worker waits for tasks on a pipe whose write end it holds itself, so it never
sees end-of-file: when its parent is killed (``kill -9``, out of memory) the worker, reparented to
init, waits for ever and keeps its memory. :func:`exit_with` starts a watcher thread in the worker
that ends it as soon as the given process is gone. On Linux the watcher sleeps in ``select`` on a
pidfd (woken by the kernel the moment the process exits); elsewhere it checks once per
:data:`POLL_SECONDS`.
"""
from __future__ import annotations

import os
import select
import threading
import time

from kg.temporaries import process_alive

#: Seconds between checks where pidfds are not available.
POLL_SECONDS = 1.0
#: Exit status of a worker ended because its parent died.
ORPHAN_EXIT_STATUS = 3


def exit_with(pid: int) -> None:
    """End this process (without clean-up, as ``os._exit``) once process ``pid`` has exited.

    Call it early in a worker (a pool initializer) with the parent's pid, read in the parent: a
    worker of a forkserver has the fork server as its parent, not the process that wants the work.
    Returns at once; the watching is done by a daemon thread.
    """
    if not process_alive(pid):
        os._exit(ORPHAN_EXIT_STATUS)
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(ORPHAN_EXIT_STATUS)
    except (AttributeError, OSError):  # not Linux >= 5.3
        handle = None
    threading.Thread(target=_watch, args=(pid, handle), name="exit-with-parent", daemon=True).start()


def _watch(pid: int, handle: int | None) -> None:
    if handle is not None:
        select.select([handle], [], [])  # a pidfd turns readable when its process exits
    else:
        while process_alive(pid):
            time.sleep(POLL_SECONDS)
    # os._exit, not sys.exit: the main thread is blocked reading tasks and would never see an exception.
    os._exit(ORPHAN_EXIT_STATUS)

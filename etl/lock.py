"""One writer per repository: an exclusive, non-blocking file lock held for a whole run.

``fcntl.flock`` is released by the kernel when the process dies, even by SIGKILL, so a crashed
run never leaves a stale lock behind. The lock file records who holds it, for the message the
second runner prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RepositoryBusy(RuntimeError):
    """Another process holds the repository's run lock."""


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold ``REPO/.run.lock`` for the duration of the block, or raise RepositoryBusy at once."""
    path = Path(root) / ".run.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            try:
                who = json.loads(holder)
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(who["since"]))
                detail = f"pid {who['pid']} since {since}"
            except (ValueError, KeyError, TypeError):
                detail = "another process"
            raise RepositoryBusy(f"{root}: another skydp run is active ({detail}); nothing was changed") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": time.time()}).encode(), 0)
        yield
    finally:
        os.close(fd)

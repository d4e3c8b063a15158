"""Fault injection for the crash-safety tests: ``SKYDP_KILL_AT=<point>`` makes the process kill
itself with SIGKILL when it reaches that named point, exactly like a power cut or the OOM killer.
Unset (always, outside those tests) a checkpoint costs one dictionary lookup."""

from __future__ import annotations

import os
import signal


def checkpoint(point: str) -> None:
    """Die here if the environment asks for it."""
    if os.environ.get("SKYDP_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)

"""A minimal text progress bar on stderr (tqdm is not a dependency)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """``[#####-----] 12/40 label 0:07`` redrawn in place; silent when disabled.

    ``enabled=None`` shows the bar only when stderr is a terminal.
    """

    def __init__(self, total: int, label: str, enabled: bool | None = None, width: int = 30):
        self.total = max(int(total), 1)
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.width = width
        self.done = 0
        self.start = time.monotonic()

    def __enter__(self) -> "ProgressBar":
        self._draw()
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _draw(self) -> None:
        if not self.enabled:
            return
        filled = self.width * self.done // self.total
        elapsed = int(time.monotonic() - self.start)
        bar = "#" * filled + "-" * (self.width - filled)
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} {self.label} {elapsed // 60}:{elapsed % 60:02d}")
        sys.stderr.flush()

"""One progress line for a scoring run: scans done of all, rate, time left, failures so far.

On a terminal the line is rewritten in place; in a log (a cluster job) it is a log line every
``every_s`` seconds. Each scan's own line goes to the debug level; the summary stays with the caller.
"""

from __future__ import annotations

import logging
import sys
import time

from ..schema import ScanStatus

log = logging.getLogger("rayspine.progress")

RESULTS = (ScanStatus.OK, ScanStatus.NO_DISCS)  # statuses that are results; anything else counts as a failure


class Progress:
    def __init__(self, total: int, what: str = "scans", every_s: float = 10.0, stream=None):
        self.total, self.what, self.every_s = total, what, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.done = self.failed = 0
        self.started = time.perf_counter()
        self.first_result_s: float | None = None
        self._shown = float("-inf")  # the first show() always shows

    def add(self, scan_id: str, status: str, message: str = "") -> None:
        self.done += 1
        self.failed += status not in RESULTS
        if self.first_result_s is None:
            self.first_result_s = time.perf_counter() - self.started
            log.info("first %s result after %.1f s", self.what[:-1] if self.what.endswith("s") else self.what, self.first_result_s)
        log.debug("%s: %s %s", scan_id, status, message)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = _duration(left) if rate > 0 else "?"
        return f"{self.done}/{self.total} {self.what} ({100 * self.done / max(1, self.total):.0f} %), {rate:.2f}/s, ETA {eta}, {self.failed} failed"

    def show(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.tty:
            self.stream.write("\r" + self.line() + " " * 8)
            self.stream.flush()
        elif force or now - self._shown >= self.every_s:
            log.info(self.line())
        self._shown = now if (force or now - self._shown >= self.every_s) else self._shown

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()
        else:
            log.info(self.line())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"

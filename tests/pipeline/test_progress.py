"""The one progress line of `run` and `measure`: counts, failures, rate and time left."""

from __future__ import annotations

import io
import logging

from rayspine.pipeline.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_counts_results_and_failures(monkeypatch):
    clock = iter([0.0, 10.0, 10.0])  # started, then every later reading: 10 s on
    monkeypatch.setattr("rayspine.pipeline.progress.time.perf_counter", lambda: next(clock, 10.0))
    progress = Progress(10, stream=Terminal())
    for scan_id, status in [("1", "ok"), ("2", "no_discs"), ("3", "error"), ("4", "unreadable")]:
        progress.add(scan_id, status)
    assert progress.line() == "4/10 scans (40 %), 0.40/s, ETA 0:15, 2 failed"  # no_discs is a result, not a failure


def test_a_terminal_gets_the_line_rewritten_a_log_gets_lines(caplog):
    terminal = Terminal()
    progress = Progress(2, stream=terminal)
    progress.add("1", "ok")
    progress.show()
    progress.close()
    assert terminal.getvalue().startswith("\r1/2 scans") and terminal.getvalue().endswith("\n")
    with caplog.at_level(logging.INFO, logger="rayspine.progress"):
        logged = Progress(2, stream=io.StringIO(), every_s=3600)
        logged.add("1", "ok")
        logged.show()  # the first show logs; the next within every_s does not
        logged.show()
        logged.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("1/2")]
    assert len(lines) == 2 and "first scan result" in " ".join(r.getMessage() for r in caplog.records)

"""The errors a user can cause, in a module that imports nothing heavy (the CLI catches them)."""

from __future__ import annotations

import os


class ScanError(Exception):
    """A scan that cannot be used; ``status`` is one of ``schema.ScanStatus``."""

    def __init__(self, path: str | os.PathLike, status: str, reason: str):
        self.path = str(path)
        self.status = status
        self.reason = reason
        super().__init__(f"{self.path}: {status}: {reason}")


class ModelFileError(Exception):
    """A model folder whose weights or card cannot be trusted or used."""


USER_ERRORS = (FileExistsError, FileNotFoundError, NotADirectoryError, ValueError, ScanError, ModelFileError)


class InjectedFault(RuntimeError):
    """Raised on purpose by ``fail_at`` ({stage: scan_id}): the fault tests' stand-in for any bug or bad value."""


def inject_fault(fail_at: dict | None, stage: str, scan_id: str) -> None:
    """Raise ``InjectedFault`` when a test asked for this stage to fail on this scan; else nothing."""
    if fail_at and fail_at.get(stage) == scan_id:
        raise InjectedFault(f"injected at {stage} for {scan_id}")

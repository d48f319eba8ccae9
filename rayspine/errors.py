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

"""The one check every key directory's reader makes: its files are there, or one line says
which are missing and how to make them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cli.errors import UserError


def require(keys_dir: Path, directory: Path, files: Iterable[Path], what: str, remedy: str) -> None:
    """Raise a UserError naming the missing ones of `files` (or the whole `directory`)."""
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        which = ", ".join(missing) if directory.is_dir() else "the directory"
        raise UserError(f"{keys_dir}: no {what} in {directory} ({which} missing); {remedy}")

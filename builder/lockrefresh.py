"""`berth lock --refresh`: resolve the package lock again from unpinned mkosi runs of
the default configuration, one per engine, and write what they installed.

The runs are the build's own (builder/mkosirun.py), so the lock holds exactly what
mkosi installs, dependencies and the essential set included, not an approximation.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from builder import mkosirun, packagelock, provenance, settings
from builder.cli import DEFAULT_CONFIG
from cli.cache import cache_dir
from updater.atomic import atomic_write


def refresh(engines: Sequence[str], *, path: Path = packagelock.PATH, show: bool = True) -> list[str]:
    """Refresh the initrd's and each engine's section of the lock at `path` (other
    sections stay); return what changed, one line each."""
    old = packagelock.read(path)[0] if path.exists() else {}
    new = dict(old)
    cache = cache_dir()
    epoch = provenance.source(packagelock.REPO).epoch
    start = time.monotonic()

    def progress(message: str) -> None:
        if show:
            print(f"==> [{time.monotonic() - start:5.0f}s] {message}", file=sys.stderr)

    for engine in engines:
        chosen = settings.override(settings.load(DEFAULT_CONFIG), engine=engine)
        (cache / "lock").mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"refresh-{engine}-", dir=cache / "lock"))
        try:
            new[packagelock.INITRD], new[engine] = mkosirun.run(
                chosen,
                work,
                cache=cache,
                epoch=epoch,
                log=cache / "logs" / f"lock-refresh-{engine}.log",
                show=show,
                lock=None,
                progress=progress,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    atomic_write(path, packagelock.render(new).encode())
    return packagelock.changes(old, new)

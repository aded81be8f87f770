"""A private, throw-away PostgreSQL cluster for tests, the bench and simulations.

initdb + pg_ctl from Debian's /usr/lib/postgresql/<major>/bin, run as the
``postgres`` user when we are root (PostgreSQL refuses to run as root), on a
free 127.0.0.1 port with its socket in the cluster's own directory. Nothing
system-wide is started or changed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cli.errors import UserError
from updater.fleet.launch import free_port


def _bin_dir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise UserError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run make setup"
        )
    return Path(found[-1]).parent


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """Start a cluster in a new directory under /tmp, yield its URL, stop and delete it after."""
    bin_dir = _bin_dir()
    # Directly under /tmp, so the postgres user can reach it when we run as root.
    directory = Path(tempfile.mkdtemp(prefix="berth-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = directory / "data", free_port()
    log = directory / "postgres.log"
    subprocess.run(
        [
            *as_user,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    options = (
        f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=on"
        " -c max_connections=200 -c shared_buffers=128MB"
    )
    subprocess.run(
        [
            *as_user,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(directory, ignore_errors=True)

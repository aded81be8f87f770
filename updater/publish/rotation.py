"""`berth keys rotate`: replace one role's keys within a published repository.

A key that leaked (or a scheduled change) is replaced without a new repository:
a new root version names the role's new keys in place of the old ones, signed by
the root keys clients trust now (and, for the root role itself, by the new ones
too), so python-tuf's clients follow it from the root they pinned; then the role's
own metadata is signed again with the new keys, and the old private keys move to
``retired/``. From then on nothing the old keys sign is accepted.

Each step can be cut short and run again: the new keys are made whole in
``rotating/`` first (kept until the end, and every other `berth publish` refuses
while it exists); the root is written only if it does not name them yet; moving
the keys and signing again are repeatable.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.errors import UserError
from updater.publish.repository import RETIRED, ROLES, ROTATING, Repository, load_signers, make_keys

_ROLE_FILE = "role"


def _keyid(signer: Any) -> str:
    return str(signer.public_key.keyid)


def _staged_keys(keys_dir: Path, role: str, count: int) -> list[Any]:
    """The rotation's new keys: made now (whole, or not at all), or those of a run cut short."""
    staging = keys_dir / ROTATING
    if staging.is_dir():
        started = (staging / _ROLE_FILE).read_text().strip()
        if started != role:
            raise UserError(f"{keys_dir}: the rotation of the {started} keys was cut short;"
                            f" finish it first (--role {started})")
        return load_signers(staging, role)
    partial = keys_dir / f"{ROTATING}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(mode=0o700)
    make_keys(partial, role, count)
    (partial / _ROLE_FILE).write_text(role)
    os.replace(partial, staging)
    return load_signers(staging, role)


def _swap_private_keys(keys_dir: Path, role: str, new: list[Any], root_version: int) -> None:
    """Old keys of ``role`` to retired/, the new ones to their place (repeatable)."""
    new_ids = {_keyid(signer) for signer in new}
    retired = keys_dir / RETIRED / f"{role}-before-root-{root_version}"
    for signer, path in zip(load_signers(keys_dir, role), sorted(keys_dir.glob(f"{role}-*.pem")), strict=True):
        if _keyid(signer) not in new_ids:
            retired.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(path, retired / path.name)
    for path in sorted((keys_dir / ROTATING).glob(f"{role}-*.pem")):
        shutil.copy2(path, keys_dir / path.name)


def rotate_keys(repo_dir: Path, keys_dir: Path, role: str,
                progress: Callable[[str], None] = lambda _: None) -> int:
    """Replace ``role``'s keys in the repository; returns the new root's version."""
    if role not in ROLES:
        raise UserError(f"no role {role!r}: one of {', '.join(ROLES)}")
    repo = Repository(repo_dir, keys_dir, rotating=True)
    if not (repo.metadata_dir / "timestamp.json").is_file():
        raise UserError(f"{repo_dir}: no repository here yet (publish a release first)")
    new = _staged_keys(keys_dir, role, repo.thresholds[role])
    root = repo.load("root")
    if set(root.signed.roles[role].keyids) != {_keyid(signer) for signer in new}:
        progress(f"root {root.signed.version + 1}: the new {role} keys in place of the old")
        for keyid in list(root.signed.roles[role].keyids):
            root.signed.revoke_key(keyid, role)
        for signer in new:
            root.signed.add_key(signer.public_key, role)
        root.signed.version += 1
        root.signed.expires = repo.expiry("root")
        # Clients check a new root against the root keys they trust and against its own.
        repo.write("root", root, repo.signers["root"] + (new if role == "root" else []))
    _swap_private_keys(keys_dir, role, new, root.signed.version)
    repo = Repository(repo_dir, keys_dir, rotating=True)
    progress(f"signing {role} again with its new keys")
    if role == "targets":
        repo.update_targets(lambda _: None, None)
    elif role == "snapshot":
        repo.commit()
    elif role == "timestamp":
        repo.refresh_timestamp()
    shutil.rmtree(keys_dir / ROTATING)
    return int(root.signed.version)

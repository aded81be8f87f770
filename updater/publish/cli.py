"""`berth publish` and `berth keys`: the release repository's verbs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROLES = ("root", "targets", "snapshot", "timestamp")


def _threshold(text: str) -> tuple[str, int]:
    role, _, count = text.partition("=")
    if role not in ROLES or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected ROLE=N with ROLE one of {', '.join(ROLES)}, got {text!r}")
    return role, int(count)


def register(subparsers: Any) -> None:
    publish = subparsers.add_parser("publish", help="sign a built release into a TUF repository")
    publish.add_argument("artifact_dir", nargs="?", type=Path,
                         help="a `berth build` output directory (<image_id>_<version>/)")
    publish.add_argument("--repo", type=Path, required=True, help="repository directory (created if empty)")
    publish.add_argument("--keys", type=Path, required=True, help="key directory from `berth keys init`")
    publish.add_argument("--min-version", help="oldest version allowed to update straight to this one")
    publish.add_argument("--withdraw", metavar="VERSION", help="mark a published release withdrawn")
    publish.add_argument("--image-id", default="berth", help="image of --withdraw (default: berth)")
    publish.add_argument("--refresh-timestamp", action="store_true",
                         help="only re-sign the timestamp (run more often than it expires)")
    publish.add_argument("--timestamp-days", type=int, help="timestamp lifetime in days (default 1)")
    publish.add_argument("--frame-mib", type=int, default=8,
                         help="MiB of root image per zstd frame: the agent resumes at frame boundaries")
    publish.add_argument("--zstd-level", type=int, default=None, metavar="N",
                         help="zstd level of the slot images (default 19: minutes of CPU here, "
                              "about 20 MB less for every host; tests and labs pass 3)")
    publish.add_argument("--no-delta", dest="delta", action="store_false",
                         help="no block indexes or blobs: every host downloads this release whole "
                              "(less repository space; hosts short of CPU rather than bandwidth)")
    publish.set_defaults(handler=_publish)

    keys = subparsers.add_parser("keys", help="repository signing keys")
    verbs = keys.add_subparsers(dest="keys_verb", metavar="VERB", required=True)
    init = verbs.add_parser("init", help="make the keys of a new repository")
    init.add_argument("--keys", type=Path, required=True, help="directory for the private keys")
    init.add_argument("--threshold", type=_threshold, action="append", default=[], metavar="ROLE=N",
                      help="signatures a role needs (and keys made for it); default 1 each")
    init.add_argument("--secure-boot-from", type=Path, metavar="DIR",
                      help="import existing Secure Boot keys (db.key + db.crt; PK/KEK/db .auth files "
                           "or the key pairs to make them) instead of making PK, KEK and db")
    init.add_argument("--secure-boot-only", action="store_true",
                      help="add Secure Boot keys to a directory that already holds the TUF keys")
    init.add_argument("--pcr-key-from", type=Path, metavar="PEM",
                      help="import an existing PCR signing key (RSA 2048 PEM) instead of making one")
    init.add_argument("--measured-boot-only", action="store_true",
                      help="add only the PCR signing key to a directory that holds the other keys")
    init.set_defaults(handler=_keys_init)
    rotate = verbs.add_parser("rotate", help="replace one role's keys in a published repository")
    rotate.add_argument("--keys", type=Path, required=True, help="the repository's key directory")
    rotate.add_argument("--repo", type=Path, required=True, help="the repository directory")
    rotate.add_argument("--role", choices=ROLES, required=True,
                        help="whose keys: a new root version names the new ones; the old move to retired/")
    rotate.set_defaults(handler=_keys_rotate)
    rotate_db = verbs.add_parser("rotate-db", help="move the Secure Boot db key to a new one through two releases")
    rotate_db.add_argument("--keys", type=Path, required=True, help="the key directory (its secure-boot/)")
    rotate_db.add_argument("--switch", action="store_true",
                           help="second step: sign with the new key from now on (after every host "
                                "reported the new certificate in its firmware's db)")
    rotate_db.set_defaults(handler=_keys_rotate_db)


def _publish(args: argparse.Namespace) -> int:
    from cli.errors import UserError
    from updater.publish.repository import ZSTD_LEVEL, Repository

    repo = Repository(args.repo, args.keys)
    actions = [bool(args.artifact_dir), bool(args.withdraw), args.refresh_timestamp]
    if sum(actions) != 1:
        raise UserError("publish needs exactly one of ARTIFACT_DIR, --withdraw VERSION, --refresh-timestamp")
    if args.refresh_timestamp:
        repo.refresh_timestamp(args.timestamp_days)
        print(f"re-signed {args.repo}/metadata/timestamp.json")
    elif args.withdraw:
        repo.withdraw(args.image_id, args.withdraw, args.timestamp_days)
        print(f"withdrew {args.image_id} {args.withdraw}")
    else:
        release = repo.publish(args.artifact_dir, args.min_version, args.timestamp_days,
                               args.frame_mib << 20, lambda step: print(f"publish: {step}", file=sys.stderr),
                               delta=args.delta, zstd_level=ZSTD_LEVEL if args.zstd_level is None else args.zstd_level)
        sizes = ", ".join(f"{a.target_path} {a.length >> 20} MiB" for a in release.artifacts.values())
        print(f"published {release.image_id} {release.version}: {sizes}")
    return 0


def _keys_init(args: argparse.Namespace) -> int:
    """The TUF keys, the Secure Boot keys, then the PCR signing key (only the last two with
    --secure-boot-only, the last with --measured-boot-only: for a key directory made before
    berth signed images or their PCR policy)."""
    from builder import pcrkey, sbkeys
    from updater.publish.repository import init_keys

    made = []
    if not (args.secure_boot_only or args.measured_boot_only):
        thresholds = {role: 1 for role in ROLES} | dict(args.threshold)
        init_keys(args.keys, thresholds)
        made.append(f"TUF keys (thresholds {thresholds})")
    if not args.measured_boot_only:
        if args.secure_boot_from:
            secure = sbkeys.import_from(args.keys, args.secure_boot_from)
            made.append(f"Secure Boot keys imported from {args.secure_boot_from} into {secure.directory}")
        else:
            secure = sbkeys.make(args.keys)
            made.append(f"Secure Boot keys PK, KEK, db in {secure.directory}")
    if args.pcr_key_from:
        pcr = pcrkey.import_from(args.keys, args.pcr_key_from)
        made.append(f"PCR signing key imported from {args.pcr_key_from} into {pcr.directory}")
    else:
        pcr = pcrkey.make(args.keys)
        made.append(f"PCR signing key in {pcr.directory}")
    print(f"keys in {args.keys}: {'; '.join(made)}; keep root keys and PK offline")
    return 0


def _keys_rotate_db(args: argparse.Namespace) -> int:
    from builder import sbrotate

    if args.switch:
        done = sbrotate.switch(args.keys)
        print(f"db key switched: builds sign with {done.signing}; the old pair is in "
              f"{done.signing.parent / sbrotate.RETIRED}; db.auth now holds only the new certificate")
    else:
        done = sbrotate.begin(args.keys)
        print(f"new db key {done.incoming} and {done.append}: the next build is the transition "
              f"release (signed by the old key, trusting both); once every host reports the new "
              f"certificate in its firmware's db, `berth keys rotate-db --keys {args.keys} --switch`")
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    from updater.publish.rotation import rotate_keys

    version = rotate_keys(args.repo, args.keys, args.role, lambda step: print(f"rotate: {step}", file=sys.stderr))
    print(f"{args.role} keys replaced: root version {version} names the new ones;"
          f" the old are in {args.keys / 'retired'}")
    return 0

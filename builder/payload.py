"""What of berth's own Python ships on a host, and the rule the lint holds the root to.

A host runs the agent and nothing else of berth: `cli/` (the dispatcher),
`updater/` (wire types, release layout, client, disk contract, the agent) minus
the rooms that run elsewhere: the fleet server and simulator (`updater/fleet/`),
the publisher (`updater/publish/`), the build cache helper (`cli/cache.py`) and
the agent's root overlay (`updater/agent/image/`, copied as a tree of its own).
The image's python3 byte-compiles what is staged here (mkosi.postinst), so a
read-only root never needs to write a .pyc.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

from builder.driver import REPO

PYTHON_DIR = "usr/lib/berth/python"
AGENT_TREE = REPO / "updater" / "agent" / "image"
HOST_PACKAGES = ("cli", "updater")
# Paths relative to the repository, inside HOST_PACKAGES, that never ship.
OFF_HOST = ("cli/cache.py", "updater/fleet", "updater/publish", "updater/agent/image")
# Top-level packages of the repository that are not host code at all.
NOT_SHIPPED = ("builder", "qemu", "tests", "bench", "scripts")
# Test modules, wherever they are: nothing on a host runs pytest.
TEST_FILES = ("test_*.py", "*_test.py", "conftest.py")
WRAPPER = """#!/usr/bin/python3
import sys
sys.path.insert(0, "/usr/lib/berth/python")
from cli.main import main
sys.exit(main())
"""


def _ignore(directory: str, names: list[str]) -> set[str]:
    rel = Path(directory).relative_to(REPO)
    return {
        name
        for name in names
        if name in ("__pycache__", ".mypy_cache")
        or name.endswith(".pyc")
        or (rel / name).as_posix() in OFF_HOST
        or any(fnmatch.fnmatchcase(name, pattern) for pattern in TEST_FILES)
    }


def stage(tree: Path) -> list[Path]:
    """Extra trees for mkosi: the host's Python packages and `berth` wrapper under
    ``tree``, plus the agent's root overlay."""
    python = tree / PYTHON_DIR
    for package in HOST_PACKAGES:
        shutil.copytree(REPO / package, python / package, ignore=_ignore)
    wrapper = tree / "usr/bin/berth"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    return [tree, AGENT_TREE] if AGENT_TREE.is_dir() else [tree]


def findings(root: Path) -> list[str]:
    """What breaks the payload rule in an extracted root: off-host or test code under
    PYTHON_DIR, and any .py under /usr/lib/berth without the .pyc compiled from it."""
    found: list[str] = []
    python = root / PYTHON_DIR
    if python.is_dir():
        for top in sorted(python.iterdir()):
            if top.name in NOT_SHIPPED:
                found.append(f"not host code: /{PYTHON_DIR}/{top.name}")
        for rel in OFF_HOST:
            if (python / rel).exists():
                found.append(f"not host code: /{PYTHON_DIR}/{rel}")
    berth = root / "usr/lib/berth"
    for path in sorted(berth.rglob("*.py")) if berth.is_dir() else []:
        shown = "/" + path.relative_to(root).as_posix()
        if any(fnmatch.fnmatchcase(path.name, pattern) for pattern in TEST_FILES):
            found.append(f"test module: {shown}")
        if not list((path.parent / "__pycache__").glob(f"{path.stem}.cpython-*.pyc")):
            found.append(f"not byte-compiled: {shown}")
    return found

"""The host payload: what of berth's Python a host carries, and what byte-compiling it
at build time saves at each start of `berth` on a host.

    ~/.cache/berth/venv/bin/python bench/payload.py ARTIFACT_DIR [--runs 10] [--json FILE]

From the repository: the files and bytes of `cli/` + `updater/` (what images
carried before builder/payload.py) against the staged payload. From the built
image (its root.erofs, extracted): .py and .pyc counts and bytes, and the median wall
and CPU time of `berth --help` and of importing the agent's service module with the image's
own python3 (in a chroot of the extracted root), once with the build's .pyc and
once with them removed and writing none (PYTHONDONTWRITEBYTECODE), which is what
a read-only root without them would pay at every start.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder import artifacts, payload
from updater import contract

CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
IMPORT_AGENT = 'import sys; sys.path.insert(0, "/usr/lib/berth/python"); import updater.agent.service'


def _tree_size(paths: list[Path]) -> tuple[int, int]:
    files = [p for p in paths if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _cpu(root: Path, command: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    """Median wall and CPU (user + system) seconds of ``command`` in the chroot. CPU time
    is the figure to read on a loaded machine: wall time there is mostly waiting."""
    walls, cpus = [], []
    for _ in range(runs):
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        # The image's PATH inside the chroot; chroot itself is found on this machine's.
        subprocess.run([CHROOT, str(root), *command], check=True, capture_output=True,
                       env={"PATH": "/usr/bin:/bin", **env})
        walls.append(time.perf_counter() - start)
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime)
    return {"wall_s": round(statistics.median(walls), 3), "cpu_s": round(statistics.median(cpus), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="a berth build output directory")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    before = [p for pkg in payload.HOST_PACKAGES for p in (REPO / pkg).rglob("*.py")
              if "agent/image" not in p.as_posix()]
    with tempfile.TemporaryDirectory(prefix="berth-bench-payload-") as tmp:
        staged = Path(tmp) / "staged"
        payload.stage(staged)
        after = list((staged / payload.PYTHON_DIR).rglob("*.py"))
        root = Path(tmp) / "root"
        artifacts.extract_root(args.artifact / contract.ROOT_IMAGE, root)
        python = root / payload.PYTHON_DIR
        figures: dict[str, object] = {
            "repository_cli_updater_py": _tree_size(before),
            "host_payload_py": _tree_size(after),
            "image_py": _tree_size(list(python.rglob("*.py"))),
            "image_pyc": _tree_size(list(python.rglob("*.pyc"))),
        }
        help_cmd = ["/usr/bin/berth", "--help"]
        agent_cmd = ["/usr/bin/python3", "-c", IMPORT_AGENT]
        figures["with_pyc_s"] = {
            "berth --help": _cpu(root, help_cmd, args.runs, {}),
            "import updater.agent.service": _cpu(root, agent_cmd, args.runs, {}),
        }
        for cache in python.rglob("__pycache__"):
            shutil.rmtree(cache)
        no_write = {"PYTHONDONTWRITEBYTECODE": "1"}
        figures["without_pyc_s"] = {
            "berth --help": _cpu(root, help_cmd, args.runs, no_write),
            "import updater.agent.service": _cpu(root, agent_cmd, args.runs, no_write),
        }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

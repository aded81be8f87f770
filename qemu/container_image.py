"""A tiny container image made on the host, for a guest that reaches no registry.

The image is one layer holding Debian's static busybox (package busybox-static)
and a few applet links, packed as a docker-archive tar (manifest.json, config,
layer): the format both ``docker load`` and ``podman load`` read.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
TAG = "localhost/berth-busybox:latest"
APPLETS = ("sh", "echo", "cat", "ls", "sleep", "uname", "id", "true", "false")


def _add(archive: tarfile.TarFile, info: tarfile.TarInfo, data: bytes | None = None) -> None:
    info.mtime = 0  # reproducible: the same inputs give the same image ID
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    archive.addfile(info, io.BytesIO(data) if data is not None else None)


def _busybox_layer(busybox: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for directory in ("bin", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            _add(layer, info)
        binary = tarfile.TarInfo("bin/busybox")
        binary.size, binary.mode = len(busybox), 0o755
        _add(layer, binary, busybox)
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            _add(layer, link)
    return buffer.getvalue()


def write_busybox_archive(path: Path, tag: str = TAG, busybox: Path = BUSYBOX) -> str:
    """Write the image to ``path`` as a docker-archive tar; return its tag."""
    layer = _busybox_layer(busybox.read_bytes())
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "berth: busybox-static from the build host"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]).encode()
    with tarfile.open(path, mode="w") as archive:
        for name, data in ((layer_name, layer), (config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            _add(archive, info, data)
    return tag

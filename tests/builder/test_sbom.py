"""The SBOM's pure parts: Debian licenses to SPDX, the package list, and a whole document
that the SPDX project's own library (spdx-tools) parses and validates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from builder import sbom

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: zstd

Files: *
Copyright: Meta Platforms, Inc.
License: BSD-3-clause or GPL-2

Files: zlibWrapper/*
Copyright: Jean-loup Gailly
License: zlib

Files: debian/*
Copyright: someone
License: GPL-2+

License: GPL-2+
 This program is free software ...
"""

STATUS = """Package: libzstd1
Status: install ok installed
Maintainer: Debian Med <debian-med@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: libzstd (1.5.7+dfsg-1)
Version: 1.5.7+dfsg-1+b1

Package: bsdutils
Status: install ok installed
Maintainer: util-linux packagers <util-linux@packages.debian.org>
Architecture: amd64
Source: util-linux
Version: 1:2.41.5-0+deb13u1

Package: apt
Status: install ok installed
Architecture: amd64
Version: 3.0.3

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1
"""


@pytest.mark.parametrize(
    ("debian", "spdx"),
    [
        ("GPL-2", "GPL-2.0-only"),
        ("GPL-2+", "GPL-2.0-or-later"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("GPL-2.0+", "GPL-2.0-or-later"),
        ("Expat", "MIT"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("Apache-2", "Apache-2.0"),
        ("GPL-2 with Linux-syscall-note exception", "GPL-2.0-only WITH Linux-syscall-note"),
        ("public-domain", "LicenseRef-Debian-public-domain"),
        ("GFDL-NIV-1.3+", "LicenseRef-Debian-GFDL-NIV-1.3-or-later"),
    ],
)
def test_debian_license_names_become_spdx(debian: str, spdx: str) -> None:
    assert sbom.spdx_license(debian) == spdx


def test_expressions_keep_their_operators() -> None:
    assert sbom.spdx_expression("BSD-3-clause or GPL-2") == "BSD-3-Clause OR GPL-2.0-only"
    assert sbom.spdx_expression("GPL-2+ or AFL-2.1, and Expat") == (
        "GPL-2.0-or-later OR LicenseRef-Debian-AFL-2.1 AND MIT"
    )


def test_declared_license_joins_the_files_paragraphs_only() -> None:
    assert sbom.declared_license(DEP5) == (
        "(BSD-3-Clause OR GPL-2.0-only) AND (Zlib) AND (GPL-2.0-or-later)"
    )
    assert (
        sbom.declared_license("This is not DEP-5.\n\nGPL, see /usr/share/common-licenses") is None
    )


def test_packages_are_the_final_roots_with_their_origin_of_checksum() -> None:
    deb = sbom.deb_file_name("bsdutils", "1:2.41.5-0+deb13u1", "amd64")
    assert deb == "bsdutils_1%3a2.41.5-0+deb13u1_amd64.deb"
    found = sbom.packages(
        STATUS,
        keep=["libzstd1", "bsdutils", "gone"],  # apt was removed after the postinst
        copyrights={"libzstd1": DEP5},
        md5sums={"libzstd1": b"abc  usr/lib/x\n"},
        deb_sha256={deb: "d" * 64},
    )
    assert [p.name for p in found] == ["bsdutils", "libzstd1"]
    bsdutils, zstd = found
    assert (bsdutils.source, bsdutils.source_version) == ("util-linux", "1:2.41.5-0+deb13u1")
    assert (bsdutils.sha256, bsdutils.from_deb, bsdutils.license) == ("d" * 64, True, None)
    assert (zstd.source, zstd.source_version) == ("libzstd", "1.5.7+dfsg-1")
    assert zstd.sha256 == hashlib.sha256(b"abc  usr/lib/x\n").hexdigest()
    assert not zstd.from_deb
    assert zstd.license is not None and "Zlib" in zstd.license


def _document() -> dict:
    debs = sbom.packages(
        STATUS,
        keep=["libzstd1", "bsdutils"],
        copyrights={"libzstd1": DEP5, "bsdutils": DEP5.replace("zlib", "public-domain")},
        md5sums={},
        deb_sha256={},
    )
    return sbom.document(
        image="berth_1.0.0",
        version="1.0.0",
        roothash="ab" * 32,
        root_sha256="cd" * 32,
        created=1796125339,
        distro="debian-trixie",
        berth_version="0.1.0",
        commit="64223cea2ff616052d0122cc0f9455c98cb4e99f",
        debs=debs,
    )


def test_the_document_validates_with_spdx_tools(tmp_path: Path) -> None:
    path = tmp_path / sbom.FILE_NAME
    path.write_text(json.dumps(_document()))
    document = parse_file(str(path))
    assert validate_full_spdx_document(document) == []
    names = {p.name: p for p in document.packages}
    assert set(names) == {"berth_1.0.0", "berth", "libzstd1", "bsdutils"}
    assert names["bsdutils"].version == "1:2.41.5-0+deb13u1"
    assert str(names["berth"].license_declared) == "Apache-2.0"
    assert "LicenseRef-Debian-public-domain" in {
        e.license_id for e in document.extracted_licensing_info
    }


def test_the_document_is_a_function_of_its_inputs() -> None:
    assert json.dumps(_document()) == json.dumps(_document())
    assert _document()["creationInfo"]["created"] == "2026-12-01T11:42:19Z"


def test_the_kernel_package_says_the_root_holds_it_pruned() -> None:
    """The record prune-modules.finalize leaves lands on the package whose files are that
    kernel's modules, and only there."""
    record = {"script": "builder/mkosi/prune-modules.finalize",
              "subtrees": ["kernel/drivers/comedi/*", "kernel/fs/bcachefs/*"],
              "kernels": {"6.12.0-cloud-amd64": {"modules": 237, "bytes": 5918832}}}
    md5sums = {"linux-image-6.12.0-cloud-amd64": b"aa  boot/vmlinuz-6.12.0-cloud-amd64\n"
               b"bb  usr/lib/modules/6.12.0-cloud-amd64/kernel/fs/erofs/erofs.ko.xz\n",
               "libzstd1": b"abc  usr/lib/x\n"}
    notes = sbom.pruned_notes(record, md5sums)
    assert list(notes) == ["linux-image-6.12.0-cloud-amd64"]
    note = notes["linux-image-6.12.0-cloud-amd64"]
    assert "237 of its kernel modules (5918832 bytes) removed" in note
    assert "kernel/drivers/comedi/*, kernel/fs/bcachefs/*" in note and "vmlinuz is in the UKI" in note
    (zstd,) = sbom.packages(STATUS, keep=["libzstd1"], copyrights={}, md5sums=md5sums,
                            deb_sha256={}, notes={"libzstd1": "pruned"})
    document = sbom.document(image="b", version="1", roothash="ab" * 32, root_sha256="cd" * 32,
                             created=0, distro="debian-trixie", berth_version="0", commit=None,
                             debs=[zstd])
    (item,) = [p for p in document["packages"] if p["name"] == "libzstd1"]
    assert item["comment"] == f"{sbom.MD5SUMS_COMMENT}; pruned"

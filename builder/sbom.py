"""The root's SBOM: an SPDX 2.3 JSON document of every Debian package in it, plus berth.

Input comes from builder/mkosi/sbom.postinst, which copies the package database
and the DEP-5 copyright files out of the root before RemoveFiles= deletes them.
Each package gets its version, source package, arch, a purl, a SHA256 and the
license its copyright file declares, as an SPDX expression. The SHA256 is the
.deb's own from mkosi's package cache (comment "sha256 of the .deb"); a package
whose .deb is not in the cache gets the sha256 of its md5sums list instead, and
says so. The kernel package's comment also says what the root lacks of it: the
modules builder/mkosi/prune-modules.finalize removed (its record, pruned-modules.json)
and the vmlinuz, which is the UKI's. The document is a function of the build's inputs:
its time is SOURCE_DATE_EPOCH, its namespace derives from the root hash.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from updater import contract

FILE_NAME = contract.SBOM
DEB_COMMENT = "sha256 of the .deb from mkosi's package cache"
MD5SUMS_COMMENT = "no .deb in mkosi's package cache: sha256 of the package's md5sums list"
# Written beside sbom.postinst's copies by builder/mkosi/prune-modules.finalize.
PRUNED_RECORD = "pruned-modules.json"

# Debian copyright short names -> SPDX identifiers (those the rules below miss).
_NAMES = {
    "expat": "MIT",
    "mit": "MIT",
    "mit/x11": "MIT",
    "x11": "X11",
    "isc": "ISC",
    "zlib": "Zlib",
    "apache-2": "Apache-2.0",
    "apache-2.0": "Apache-2.0",
    "cc0-1.0": "CC0-1.0",
    "cc0": "CC0-1.0",
    "0bsd": "0BSD",
    "fsfap": "FSFAP",
    "fsful": "FSFUL",
    "fsfullr": "FSFULLR",
    "artistic": "Artistic-1.0-Perl",
    "artistic-2.0": "Artistic-2.0",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause",
    "bsl-1.0": "BSL-1.0",
    "mpl-2.0": "MPL-2.0",
    "psf-2": "PSF-2.0",
    "python": "Python-2.0",
    "openssl": "OpenSSL",
    "curl": "curl",
    "unicode-dfs-2016": "Unicode-DFS-2016",
    "wtfpl": "WTFPL",
}
_EXCEPTIONS = {
    "linux-syscall-note": "Linux-syscall-note",
    "bison": "Bison-exception-2.2",
    "autoconf": "Autoconf-exception-3.0",
    "gcc": "GCC-exception-3.1",
    "openssl": "openvpn-openssl-exception",
}
_GNU = re.compile(r"^(a?gpl|lgpl|gfdl)-?([0-9](?:\.[0-9])?)(\+)?$", re.IGNORECASE)
_WITH = re.compile(r"^(.+?)\s+with\s+(\S+)\s+exception$", re.IGNORECASE)
_OPERATOR = re.compile(r",?\s+(or|and)\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str
    source: str
    source_version: str
    supplier: str  # the Maintainer field
    license: str | None  # SPDX expression, None when the package declares none (no DEP-5)
    sha256: str
    from_deb: bool  # sha256 is the .deb's (else of the md5sums list)
    note: str = ""  # what the root lacks of the package's files, when berth removed some


def _spdx_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", text)


def license_ref(debian: str) -> str:
    """The LicenseRef- an SPDX document declares for a name SPDX does not list."""
    name = re.sub(r"\+$", "-or-later", debian.strip())
    return "LicenseRef-Debian-" + _spdx_id(name).strip("-")


def spdx_license(debian: str) -> str:
    """One Debian license name ("GPL-2+", "Expat", "GPL-2 with Linux-syscall-note
    exception") as an SPDX license (or LicenseRef-) with its exception."""
    name = debian.strip()
    match = _WITH.match(name)
    if match and match.group(2).lower() in _EXCEPTIONS:
        return f"{spdx_license(match.group(1))} WITH {_EXCEPTIONS[match.group(2).lower()]}"
    gnu = _GNU.match(name)
    if gnu:
        family, number, later = gnu.groups()
        number = number if "." in number else f"{number}.0"
        if family.lower() == "gfdl":
            return license_ref(name)
        return f"{family.upper()}-{number}-{'or-later' if later else 'only'}"
    if name.lower() in _NAMES:
        return _NAMES[name.lower()]
    return license_ref(name)


def spdx_expression(debian: str) -> str:
    """A DEP-5 License: expression ("BSD-3-clause or GPL-2", "GPL-2+ and Expat") in SPDX."""
    words = _OPERATOR.split(debian.strip())
    out = [spdx_license(words[0])]
    for operator, name in zip(words[1::2], words[2::2], strict=True):
        out += [operator.upper(), spdx_license(name)]
    return " ".join(out)


def declared_license(copyright_text: str) -> str | None:
    """The licenses a DEP-5 copyright file declares for the package's files, as one SPDX
    expression (each Files paragraph's license, ANDed); None unless the file is DEP-5."""
    paragraphs = re.split(r"\n\s*\n", copyright_text.strip())
    if not paragraphs or not paragraphs[0].startswith("Format:"):
        return None
    found: list[str] = []
    for paragraph in paragraphs[1:]:
        fields = _fields(paragraph)
        if "Files" in fields and fields.get("License", "").strip():
            expression = spdx_expression(fields["License"].splitlines()[0])
            if expression not in found:
                found.append(expression)
    if not found:
        return None
    return found[0] if len(found) == 1 else " AND ".join(f"({e})" for e in found)


def _fields(paragraph: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in paragraph.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    return fields


def installed(status: str) -> list[dict[str, str]]:
    """Paragraphs of a dpkg status file for installed packages."""
    found = []
    for paragraph in re.split(r"\n\s*\n", status.strip()):
        fields = _fields(paragraph)
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            found.append(fields)
    return found


def deb_file_name(name: str, version: str, arch: str) -> str:
    """apt's archive file name for a package (the epoch's ':' is %3a)."""
    return f"{name}_{urllib.parse.quote(version, safe='+~.-')}_{arch}.deb".replace("%3A", "%3a")


def packages(
    status: str,
    keep: Iterable[str],
    copyrights: Mapping[str, str],
    md5sums: Mapping[str, bytes],
    deb_sha256: Mapping[str, str],
    notes: Mapping[str, str] | None = None,
) -> list[Package]:
    """The SBOM's packages: those of `status` named in `keep` (the final root's, after
    RemovePackages=). `md5sums` by package name, `deb_sha256` by .deb file name, `notes`
    (pruned_notes) by package name."""
    wanted = set(keep)
    found = []
    for fields in installed(status):
        name = fields["Package"]
        if name not in wanted:
            continue
        source, _, source_version = fields.get("Source", name).partition(" ")
        version = fields["Version"]
        arch = fields.get("Architecture", "all")
        deb = deb_sha256.get(deb_file_name(name, version, arch))
        found.append(
            Package(
                name=name,
                version=version,
                arch=arch,
                source=source,
                source_version=source_version.strip("()") or version,
                supplier=fields.get("Maintainer", ""),
                license=(declared_license(copyrights[name]) if name in copyrights else None),
                sha256=deb or hashlib.sha256(md5sums.get(name, b"")).hexdigest(),
                from_deb=deb is not None,
                note=(notes or {}).get(name, ""),
            )
        )
    return sorted(found, key=lambda p: p.name)


def pruned_notes(record: Mapping[str, Any], md5sums: Mapping[str, bytes]) -> dict[str, str]:
    """For the package that installed each pruned kernel's modules (its md5sums list files
    under usr/lib/modules/<version>/kernel/): what the root lacks of it, from
    prune-modules.finalize's record."""
    notes: dict[str, str] = {}
    for version, pruned in sorted(record.get("kernels", {}).items()):
        prefix = f"  usr/lib/modules/{version}/kernel/".encode()
        for name, listing in sorted(md5sums.items()):
            if prefix in listing:
                notes[name] = (
                    f"pruned in the root: {pruned['modules']} of its kernel modules "
                    f"({pruned['bytes']} bytes) removed by berth ({record['script']}; "
                    f"dropped subtrees: {', '.join(record['subtrees'])}) and depmod re-run; "
                    "its vmlinuz is in the UKI, not in the root"
                )
    return notes


def _purl(p: Package, distro: str) -> str:
    version = urllib.parse.quote(p.version, safe="+~.-")
    qualifiers = f"arch={p.arch}&distro={distro}"
    if p.source != p.name:
        qualifiers += f"&upstream={urllib.parse.quote(p.source)}"
    return f"pkg:deb/debian/{p.name}@{version}?{qualifiers}"


def document(
    *,
    image: str,
    version: str,
    roothash: str,
    root_sha256: str,
    created: int,
    distro: str,
    berth_version: str,
    commit: str | None,
    debs: list[Package],
) -> dict[str, Any]:
    """The SPDX 2.3 document: the image's root, berth and every package, the root
    CONTAINS each. `created` is SOURCE_DATE_EPOCH, so two builds write the same bytes."""
    image_id = f"SPDXRef-Image-{_spdx_id(image)}"
    berth = {
        "SPDXID": "SPDXRef-Package-berth",
        "name": "berth",
        "versionInfo": berth_version,
        "supplier": "Organization: berth",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "Apache-2.0",
        "copyrightText": "NOASSERTION",
        "comment": f"git commit {commit}" if commit else "not built from a git checkout",
        "primaryPackagePurpose": "APPLICATION",
    }
    items = [
        {
            "SPDXID": f"SPDXRef-Package-deb-{_spdx_id(p.name)}",
            "name": p.name,
            "versionInfo": p.version,
            "supplier": f"Person: {p.supplier}" if p.supplier else "NOASSERTION",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
            "sourceInfo": f"built from Debian source package {p.source} {p.source_version}",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": p.license or "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "comment": (DEB_COMMENT if p.from_deb else MD5SUMS_COMMENT) + (f"; {p.note}" if p.note else ""),
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": _purl(p, distro),
                }
            ],
        }
        for p in debs
    ]
    refs = sorted(
        {ref for p in debs for ref in re.findall(r"LicenseRef-[A-Za-z0-9.-]+", p.license or "")}
    )
    root = {
        "SPDXID": image_id,
        "name": image,
        "versionInfo": version,
        "supplier": "Organization: berth",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "checksums": [{"algorithm": "SHA256", "checksumValue": root_sha256}],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "comment": f"root file system (erofs, dm-verity root hash {roothash})",
        "primaryPackagePurpose": "OPERATING-SYSTEM",
    }
    contained = [berth["SPDXID"], *(item["SPDXID"] for item in items)]
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{image} root",
        "documentNamespace": (
            f"https://spdx.org/spdxdocs/{image}-{uuid.uuid5(uuid.NAMESPACE_URL, roothash)}"
        ),
        "creationInfo": {
            "created": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "creators": [f"Tool: berth-{berth_version}"],
        },
        "packages": [root, berth, *items],
        "hasExtractedLicensingInfos": [
            {
                "licenseId": ref,
                "name": ref.removeprefix("LicenseRef-Debian-"),
                "extractedText": (
                    f"The license named {ref.removeprefix('LicenseRef-Debian-')!r} in the "
                    "package's Debian copyright file (DEP-5), which has no SPDX identifier."
                ),
            }
            for ref in refs
        ],
        "relationships": [
            {
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": image_id,
            },
            *(
                {"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": c}
                for c in contained
            ),
        ],
    }


# I/O edge: the postinst's copies and mkosi's package cache.


def read_input(directory: Path) -> tuple[str, dict[str, str], dict[str, bytes]]:
    """(dpkg status, copyright text by package, md5sums by package) from sbom.postinst."""
    copyrights = {
        f.name: f.read_text(errors="replace") for f in sorted((directory / "copyright").iterdir())
    }
    md5sums = {
        f.name.removesuffix(".md5sums").split(":", 1)[0]: f.read_bytes()
        for f in sorted((directory / "md5sums").iterdir())
    }
    return (directory / "status").read_text(errors="replace"), copyrights, md5sums


def collect(directory: Path, *, keep: Iterable[str], archives: Path) -> list[Package]:
    """The SBOM's packages from sbom.postinst's copies in `directory` and the .debs
    in apt's `archives` directory."""
    status, copyrights, md5sums = read_input(directory)
    names = [
        deb_file_name(f["Package"], f["Version"], f.get("Architecture", "all"))
        for f in installed(status)
    ]
    pruned = directory / PRUNED_RECORD
    notes = pruned_notes(json.loads(pruned.read_text()), md5sums) if pruned.is_file() else {}
    return packages(status, keep, copyrights, md5sums, deb_hashes(archives, names), notes)


def deb_hashes(archives: Path, names: Iterable[str]) -> dict[str, str]:
    """sha256 of each named .deb present in apt's archive directory."""
    found = {}
    for name in names:
        path = archives / name
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            found[name] = digest.hexdigest()
    return found

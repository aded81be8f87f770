"""The TUF client side: a requests-based fetcher for python-tuf's ngclient, and
resumable streams of verified targets.

ngclient verifies the metadata (signatures, thresholds, expiry, rollback,
mix-and-match). Its own download_target stages a whole file, which the agent
must not do for a root image, so targets are streamed here instead and checked
against the TargetFile ngclient returned (length while streaming, sha256 at
the end, and the installed hashes by the writer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import requests
from tuf.api.exceptions import DownloadError, DownloadHTTPError
from tuf.api.metadata import TargetFile
from tuf.ngclient import FetcherInterface, Updater

from updater.agent.statefile import atomic_write
from updater.release import Release, releases_from_targets, stored_target_path

CHUNK = 1 << 20


class RequestsFetcher(FetcherInterface):
    def __init__(self, timeout_s: float = 30.0, verify: str | bool = True) -> None:
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "berth-agent"
        self.timeout_s = timeout_s
        # A CA file for a fleet server with a private CA; given with each request,
        # since requests lets $REQUESTS_CA_BUNDLE override a session's own setting.
        self.verify = verify

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self.stream(url, 0)

    def stream(self, url: str, offset: int) -> Iterator[bytes]:
        """The bytes of ``url`` from ``offset`` on (an HTTP Range request when offset > 0;
        from a server that ignores ranges the first ``offset`` bytes are skipped)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self.session.get(
            url, stream=True, timeout=self.timeout_s, headers=headers, verify=self.verify
        )
        if response.status_code >= 400:
            response.close()
            raise DownloadHTTPError(f"{url}: HTTP {response.status_code}", response.status_code)
        skip = offset if offset and response.status_code != 206 else 0
        return self._chunks(response, skip)

    def range(self, url: str, start: int, end: int) -> bytes | None:
        """Bytes ``start`` to ``end`` (exclusive) of ``url``; None from a server that ignores range
        requests (it would send the whole blob: a delta never reads one whole)."""
        response = self.session.get(
            url, timeout=self.timeout_s, headers={"Range": f"bytes={start}-{end - 1}"}, verify=self.verify,
            stream=True,
        )
        with response:
            if response.status_code == 200:
                return None
            if response.status_code != 206:
                raise DownloadHTTPError(f"{url}: HTTP {response.status_code} to a range request",
                                        response.status_code)
            data = response.raw.read(end - start + 1, decode_content=True)
        if len(data) != end - start:
            raise DownloadError(f"{url}: {len(data)} bytes for the range {start}-{end - 1}")
        return bytes(data)

    @staticmethod
    def _chunks(response: requests.Response, skip: int) -> Iterator[bytes]:
        with response:
            for chunk in response.iter_content(CHUNK):
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                yield chunk[skip:]
                skip = 0


class TufRepository:
    """One refresh of the repository's metadata, and the releases it signs."""

    def __init__(
        self, metadata_dir: Path, repo_url: str, trusted_root: bytes, verify: str | bool = True
    ) -> None:
        metadata_dir.mkdir(parents=True, exist_ok=True)
        self.metadata_dir = metadata_dir
        self.fetcher = RequestsFetcher(verify=verify)
        self.targets_url = f"{repo_url}/targets/"
        local_root = metadata_dir / "root.json"
        if not local_root.exists():
            # First run: trust the root baked into the image (or its credential);
            # afterwards the cached, possibly rotated, root wins.
            atomic_write(local_root, trusted_root)
        self.updater = Updater(
            metadata_dir=str(metadata_dir),
            metadata_base_url=f"{repo_url}/metadata/",
            target_base_url=self.targets_url,
            fetcher=self.fetcher,
        )

    def refresh(self) -> list[Release]:
        """Verify the newest metadata and return the signed releases."""
        self.updater.refresh()
        # ngclient persists targets.json only after it verified it.
        signed = json.loads((self.metadata_dir / "targets.json").read_bytes())["signed"]
        return releases_from_targets(signed)

    def target(self, path: str) -> TargetFile:
        info = self.updater.get_targetinfo(path)
        if info is None:
            raise LookupError(f"{path}: not a signed target")
        return info

    def optional_target(self, path: str) -> TargetFile | None:
        """The signed target ``path``, or None when the repository signs none (an optional one)."""
        return self.updater.get_targetinfo(path)

    def read_target(self, info: TargetFile) -> bytes:
        """A small target whole, checked against its signed length and sha256."""
        data = bytearray()
        for chunk in self.stream(info, 0):
            data += chunk
            if len(data) > info.length:
                break
        info.verify_length_and_hashes(bytes(data))  # raises LengthOrHashMismatchError
        return bytes(data)

    def read_range(self, path: str, sha256: str, start: int, end: int) -> bytes | None:
        """Bytes ``start`` to ``end`` of a blob kept beside the targets under its consistent-snapshot
        name (its sha256); None when the server ignores range requests."""
        return self.fetcher.range(f"{self.targets_url}{stored_target_path(path, sha256)}", start, end)

    def url(self, info: TargetFile) -> str:
        root = json.loads((self.metadata_dir / "root.json").read_bytes())["signed"]
        if root.get("consistent_snapshot"):
            return f"{self.targets_url}{stored_target_path(info.path, info.hashes['sha256'])}"
        return f"{self.targets_url}{info.path}"

    def stream(self, info: TargetFile, offset: int) -> Iterator[bytes]:
        return self.fetcher.stream(self.url(info), offset)

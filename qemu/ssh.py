"""Commands in the guest over SSH, with a key handed in as a systemd credential.

The same path serves production debugging: any host whose provisioning passes
``ssh.authorized_keys.root`` is reachable this way, and nothing test-only is
baked into the image. The VM's host key is throwaway, so it is not checked.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

AUTHORIZED_KEYS_CREDENTIAL = "ssh.authorized_keys.root"


class GuestCommandError(RuntimeError):
    """A command in the guest failed (or SSH could not reach it)."""


def ensure_key(private_key: Path) -> bytes:
    """Create an ed25519 key pair at ``private_key`` once; return the public key line."""
    if not private_key.exists():
        private_key.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "berth-vm", "-f", str(private_key)],
            check=True,
        )
    return private_key.with_suffix(".pub").read_bytes()


@dataclass(frozen=True)
class SshTarget:
    port: int
    private_key: Path
    user: str = "root"
    host: str = "127.0.0.1"

    def argv(self, *command: str, connect_timeout: int = 10) -> list[str]:
        """The ssh command line reaching the guest (printable for a user, too)."""
        return [
            "ssh", "-i", str(self.private_key), "-p", str(self.port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"ConnectTimeout={connect_timeout}",
            f"{self.user}@{self.host}", *command,
        ]

    def run(
        self, command: str, *, input: bytes | None = None, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command line in the guest; stdout/stderr come back as text."""
        result = subprocess.run(
            self.argv(command), check=False, input=input, capture_output=True, timeout=timeout
        )
        completed = subprocess.CompletedProcess(
            result.args, result.returncode,
            result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace"),
        )
        if check and completed.returncode != 0:
            raise GuestCommandError(
                f"guest command {command!r} exited {completed.returncode}: "
                f"{completed.stderr.strip() or completed.stdout.strip()}"
            )
        return completed

    def copy_in(self, local: Path, remote: str, timeout: float = 300.0) -> None:
        """Copy a host file into the guest (streamed through ssh; needs no sftp server)."""
        with local.open("rb") as source:
            result = subprocess.run(
                self.argv(f"cat > '{remote}'"),
                check=False, stdin=source, capture_output=True, timeout=timeout,
            )
        if result.returncode != 0:
            raise GuestCommandError(
                f"copying {local} to the guest's {remote} failed: {result.stderr.decode().strip()}"
            )

    def wait(self, timeout: float) -> None:
        """Wait until sshd in the guest accepts our key."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                result = self.run("true", timeout=30, check=False)
            except subprocess.TimeoutExpired:
                continue
            if result.returncode == 0:
                return
            last = result.stderr.strip()
            time.sleep(1)
        raise GuestCommandError(f"SSH to the guest on port {self.port} not ready in {timeout:.0f} s: {last}")

"""qemu/swtpm.py: a real swtpm, its state in the VM's directory, outliving its clients."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from qemu.swtpm import Swtpm, swtpm_command

# swtpm's control channel: CMD_GET_CAPABILITY (1) answers its capability flags; CMD_INIT (2)
# starts the TPM (what QEMU sends at each machine start).
CMD_GET_CAPABILITY, CMD_INIT = 1, 2


def control(path: Path, command: int, payload: bytes = b"") -> bytes:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(5)
        conn.connect(str(path))
        conn.sendall(struct.pack(">I", command) + payload)
        return conn.recv(64)


def test_the_command_is_a_tpm2_with_its_state_and_control_socket() -> None:
    argv = swtpm_command(Path("/vm/tpm"), Path("/run/vm/swtpm.sock"), Path("/vm/tpm/swtpm.log"))
    assert argv[:3] == ["swtpm", "socket", "--tpm2"]
    assert "dir=/vm/tpm" in argv and "type=unixio,path=/run/vm/swtpm.sock" in argv
    assert "--terminate" not in argv  # it must serve QEMU again after a power cut


def test_swtpm_serves_one_client_after_another_and_keeps_its_state(tmp_path: Path) -> None:
    tpm = Swtpm(tmp_path / "vm" / "tpm", tmp_path / "swtpm.sock")
    tpm.start()
    try:
        for _ in range(2):  # QEMU connects, goes away (power cut), connects again
            assert len(control(tpm.socket, CMD_GET_CAPABILITY)) >= 4
            assert control(tpm.socket, CMD_INIT, struct.pack(">I", 0))[:4] == bytes(4)  # TPM_SUCCESS
        assert tpm.running()
        tpm.start()  # a no-op while it runs
    finally:
        tpm.stop()
    assert not tpm.running()
    assert any((tmp_path / "vm" / "tpm").glob("tpm2-00.permall"))  # the TPM's persistent state

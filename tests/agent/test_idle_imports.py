"""What the agent service loads before its loop is what every host keeps resident while
idle (each update step runs in a forked child, whose imports go when it ends): the
update-only code (delta assembly, the Authenticode check, TUF) and the provisioning code
(`berth agent status` only) must not be among it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UPDATE_ONLY = ("updater.agent.delta", "updater.agent.deltaplan", "updater.agent.authenticode",
               "updater.provision.apply", "tuf", "cryptography")


def test_the_idle_service_loads_no_update_only_code() -> None:
    probe = "import sys, updater.agent.service; print('\\n'.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout.split())
    assert "updater.agent.agent" in loaded  # the probe imported the service for real
    assert sorted(loaded & set(UPDATE_ONLY)) == []

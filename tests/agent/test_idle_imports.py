"""What the agent service loads before its loop is what every host keeps resident while
idle (each update step runs in a forked child, whose imports go when it ends): the
update-only code (delta assembly, the Authenticode check, TUF) and the provisioning code
(`berth agent status` only) must not be among it; nor requests, which the resident fleet
client does without (updater/transport.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UPDATE_ONLY = ("updater.agent.delta", "updater.agent.deltaplan", "updater.agent.authenticode",
               "updater.provision.apply", "tuf", "cryptography", "requests", "urllib3")


def test_the_idle_service_loads_no_update_only_code() -> None:
    # The fleet client is what the service imports before its loop when it has a server.
    probe = "import sys, updater.agent.service, updater.client; print('\\n'.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout.split())
    assert {"updater.agent.agent", "updater.client"} <= loaded  # the probe imported them for real
    assert sorted(loaded & set(UPDATE_ONLY)) == []

"""The agent's state file on /var, replaced atomically."""

from __future__ import annotations

import json
from pathlib import Path

from updater import atomic
from updater.agent.updatestate import AgentState
from updater.failpoint import durable


def atomic_write(path: Path, data: bytes) -> None:
    """updater.atomic's write, counted as one durable step."""
    atomic.atomic_write(path, data)
    durable(f"write {path.name}")


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "state.json"

    def load(self) -> AgentState:
        if not self.path.exists():
            return AgentState()
        return AgentState.from_json(json.loads(self.path.read_text()))

    def save(self, state: AgentState) -> AgentState:
        atomic_write(self.path, json.dumps(state.to_json(), indent=1).encode())
        return state

"""berth's mkosi scripts (builder/mkosi/) loaded as modules: they are self-contained files
with no .py suffix, run by mkosi on the build host."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from types import ModuleType

from builder import driver


def load(name: str) -> ModuleType:
    """builder/mkosi/<name> as a module (``normalize-times.finalize`` -> ``normalize_times``)."""
    module_name = name.split(".", 1)[0].replace("-", "_")
    loader = importlib.machinery.SourceFileLoader(module_name, str(driver.SCRIPTS / name))
    spec = importlib.util.spec_from_loader(module_name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module

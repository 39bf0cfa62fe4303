"""Every module of the package imports on its own, whatever was imported before it.

A circular import only shows when the modules in the cycle are imported in one particular order, and the
entry points always use the same order. So each module here is imported first, in one fresh interpreter,
with every ``edge`` module forgotten before the next one (third-party packages stay loaded, which keeps
this fast).
"""

from __future__ import annotations

import json
import subprocess
import sys

from edge.paths import PROJECT_ROOT

# Modules that need TensorFlow (the optional ``train`` extra) are skipped where it is not installed.
_SCRIPT = r"""
import importlib, json, pkgutil, sys
import edge

names = sorted(m.name for m in pkgutil.walk_packages(edge.__path__, "edge.") if m.name != "edge.__main__")
failures, skipped = {}, []
for name in names:
    for loaded in [m for m in sys.modules if m == "edge" or m.startswith("edge.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name in ("tensorflow", "keras"):
            skipped.append(name)
        else:
            failures[name] = repr(error)
    except Exception as error:
        failures[name] = repr(error)
print(json.dumps({"names": names, "failures": failures, "skipped": skipped}))
"""


def test_every_module_imports_first():
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failures"] == {}
    # The walk found the package, not an empty tree: the modules every entry point relies on are in it.
    for name in ("edge.vision.preprocess", "edge.inference.classifier", "edge.kiosk.app", "edge.daemon"):
        assert name in report["names"]
        assert name not in report["skipped"]

"""The daemon end of model updates: `edge admin pack-update` builds what a device installs, and the daemon
loads the installed pack on its next start (and commits it after a healthy run)."""

from __future__ import annotations

import json
import shutil
import threading

from conftest import run_edge
from edge.config import load_settings
from edge.daemon import Daemon
from edge.mqtt.signing import load_admin_keys
from edge.updates import ModelStore


def test_pack_update_then_install_then_the_daemon_loads_it(tmp_path, imagenet_pack):
    key = tmp_path / "admin.key"
    keygen = run_edge("admin", "keygen", str(key))
    assert keygen.returncode == 0, keygen.stderr
    public = keygen.stdout.strip().splitlines()[-1]
    pack = tmp_path / "pack"
    shutil.copytree(imagenet_pack, pack)
    built = run_edge("admin", "pack-update", str(pack), "--key", str(key), "--out", str(tmp_path / "pack.tar.gz"))
    assert built.returncode == 0, built.stderr
    args = json.loads(built.stdout)
    assert set(args) >= {"source", "sha256", "manifest_signature"}

    settings = load_settings(None, {"state_dir": str(tmp_path / "state"), "camera": {"source": "none"},
                                    "kiosk": {"enabled": False}, "assistant": {"enabled": False}})
    store = ModelStore.from_settings(settings)
    installed = store.install(args["source"], args["sha256"], args["manifest_signature"], load_admin_keys([public]))
    assert installed.name == "imagenet-mobilenetv2-int8"

    daemon = Daemon(settings)
    assert daemon.pipeline.classifier is not None
    assert daemon.pipeline.classifier.pack.root.resolve() == installed.path.resolve()
    stop = threading.Event()
    stop.set()  # run() returns at once: the trial pack opened, so it is not rolled back
    daemon.run(stop)
    assert daemon.exit_code == 0
    assert store.current().resolve() == installed.path.resolve()

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


def test_a_pack_on_trial_is_judged_by_what_the_daemon_does(tmp_path, imagenet_pack, ham_images):
    """The daemon's verdict for committing a pack on trial: frames that fail with none classified keep it on
    trial (the boot counter decides); frames that are classified let it through."""
    import cv2
    import numpy as np

    def daemon_on(folder):
        settings = load_settings(None, {
            "state_dir": str(tmp_path / "state"), "camera": {"source": f"file:{folder}", "fps": 100},
            "inference": {"model_dir": str(imagenet_pack), "backend": "cpu"}, "pipeline": {"auto_classify": True},
            "kiosk": {"enabled": False}, "assistant": {"enabled": False}})
        return Daemon(settings)

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    cv2.imwrite(str(tiny / "a.png"), np.full((12, 12, 3), 128, np.uint8))  # decodes, too small to assess
    daemon = daemon_on(tiny)
    daemon.pipeline.run(threading.Event(), max_frames=3)
    verdict = daemon._trial_health()
    daemon.close()
    assert verdict == (False, "3 frames failed and none was classified")

    good = tmp_path / "good"
    good.mkdir()
    for path in ham_images[:2]:
        shutil.copy(path, good / path.name)
    daemon = daemon_on(good)
    daemon.pipeline.run(threading.Event(), max_frames=2)
    ok, why = daemon._trial_health()
    daemon.close()
    assert ok, why


def test_doctor_and_classify_inspect_the_pack_the_daemon_runs(tmp_path, imagenet_pack, ham_images):
    """After a model update the daemon loads the installed pack, not inference.model_dir: `edge doctor` and
    `edge classify` look at that same pack (and still honour an explicit --model)."""
    key = tmp_path / "admin.key"
    public = run_edge("admin", "keygen", str(key)).stdout.strip().splitlines()[-1]
    built = run_edge("admin", "pack-update", str(imagenet_pack), "--key", str(key),
                     "--out", str(tmp_path / "pack.tar.gz"))
    args = json.loads(built.stdout)
    state = tmp_path / "state"
    settings = load_settings(None, {"state_dir": str(state)})
    ModelStore.from_settings(settings).install(args["source"], args["sha256"], args["manifest_signature"],
                                               load_admin_keys([public]))
    doctor = run_edge("doctor", "--state-dir", str(state))
    assert "imagenet-mobilenetv2-int8" in doctor.stdout, doctor.stdout
    classified = run_edge("classify", "--json", "--state-dir", str(state), str(ham_images[0]))
    assert json.loads(classified.stdout.splitlines()[0])["model"]["name"] == "imagenet-mobilenetv2-int8"
    from edge.paths import default_model_dir

    explicit = run_edge("classify", "--json", "--state-dir", str(state), "--model", str(default_model_dir()),
                        str(ham_images[0]))
    assert json.loads(explicit.stdout.splitlines()[0])["model"]["name"] == "ham10000-mobilenetv2-int8"


def test_the_journal_line_of_a_screening_says_neither_its_result_nor_its_id(tmp_path, imagenet_pack, ham_images,
                                                                            caplog):
    """The journal outlives a purge: its per-screening line held the label, urgency and the result id that
    joins it to the history's note (a name) and to the printed report."""
    import logging

    folder = tmp_path / "replay"
    folder.mkdir()
    shutil.copy(ham_images[0], folder / ham_images[0].name)
    settings = load_settings(None, {
        "state_dir": str(tmp_path / "state"), "camera": {"source": f"file:{folder}", "fps": 100},
        "inference": {"model_dir": str(imagenet_pack), "backend": "cpu"}, "pipeline": {"auto_classify": True},
        "kiosk": {"enabled": False}, "assistant": {"enabled": False}})
    daemon = Daemon(settings)
    results = []
    daemon.pipeline.subscribe(results.append)
    caplog.set_level(logging.INFO, logger="edge")
    daemon.pipeline.run(threading.Event(), max_frames=2)
    daemon.close()
    assert results
    info = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert info.count("screening done in") == len(results)
    for result in results:
        assert result.id[:8] not in info and result.label not in info and f"urgency={result.urgency.value}" not in info

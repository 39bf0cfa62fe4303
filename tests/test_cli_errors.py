"""The CLI meets a user's mistakes with one clear line and the right exit code, never a traceback."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

from conftest import PRETRAINED, PROJECT_ROOT, run_edge


def assert_clear(result, exit_code: int, *phrases: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == exit_code and "Traceback" not in out, out
    for phrase in phrases:
        assert phrase in out, (phrase, out)


def test_classify_saliency_problems_are_reported_per_image_and_names_never_collide(imagenet_pack, tmp_path):
    first, second = tmp_path / "a" / "x.bmp", tmp_path / "b" / "x.bmp"
    for path in (first, second):
        path.parent.mkdir()
        shutil.copy(PRETRAINED / "grace_hopper.bmp", path)
    folder = tmp_path / "overlays"
    result = run_edge("classify", "--json", "--model", str(imagenet_pack), "--saliency", str(folder),
                      str(first), str(second))
    assert_clear(result, 0)
    assert sorted(p.name for p in folder.iterdir()) == ["x-2.saliency.png", "x.saliency.png"]
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    result = run_edge("classify", "--model", str(imagenet_pack), "--saliency", str(blocked), str(first), str(second))
    assert_clear(result, 1, "cannot write the saliency overlay")
    assert result.stdout.count("military uniform") == 2  # both images were still classified


def test_classify_refuses_a_device_file_and_survives_a_closed_pipe(imagenet_pack):
    result = run_edge("classify", "--model", str(imagenet_pack), "/dev/zero")
    assert_clear(result, 1, "/dev/zero: not a regular file")
    image = str(PRETRAINED / "grace_hopper.bmp")
    piped = subprocess.run(f"{sys.executable} -m edge classify --model {imagenet_pack} {image} {image} {image} "
                           "| head -c 1", shell=True, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr


def test_admin_send_checks_the_device_id_and_the_json_arguments(tmp_path):
    key = tmp_path / "admin.pem"
    assert_clear(run_edge("admin", "keygen", str(key)), 0)
    common = ("admin", "send", "--host", "127.0.0.1", "--key", str(key))
    assert_clear(run_edge(*common, "--device", "dev+1", "status"), 1, "a device id is 16 hex digits")
    assert_clear(run_edge(*common, "--device", "0123456789abcdef", "--args", "{bad", "status"), 1,
                 "--args is not valid JSON")
    assert_clear(run_edge(*common, "--device", "0123456789abcdef", "--args", "[1]", "status"), 1,
                 "--args: expected a JSON object")
    assert_clear(run_edge("admin", "keygen", "/etc/passwd/admin.pem"), 1, "cannot write the private key")


def test_config_check_judges_the_file_alone(tmp_path):
    config = tmp_path / "device.toml"
    config.write_text('[camera]\nfps = "fast"\n')
    assert_clear(run_edge("config", "check", str(config), env={"EDGE_CAMERA__FPS": "10"}), 2, "camera.fps")
    config.write_text("[camera]\nfps = 5\n")
    assert_clear(run_edge("config", "check", str(config), env={"EDGE_CAMERA__FPS": "abc"}), 0, ": ok")


def test_a_remote_settings_file_that_is_not_utf8_is_ignored_not_fatal(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "remote-config.toml").write_bytes(b"# caf\xe9\n")
    assert_clear(run_edge("config", "show", "--state-dir", str(state), "--log-level", "ERROR"), 0,
                 "remote-config.toml unreadable")


def test_model_add_variant_refuses_a_missing_or_wrong_file(imagenet_pack, tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(imagenet_pack, pack)
    assert_clear(run_edge("model", "add-variant", str(pack), "coral", str(tmp_path / "absent.tflite")), 1,
                 "no such model file")
    assert_clear(run_edge("model", "add-variant", str(pack), "coral", str(PRETRAINED / "cat.bmp")), 1,
                 "is not a TFLite model")
    assert "coral" not in json.loads((pack / "model.json").read_text())["files"]


def test_evaluate_and_bench_arguments(imagenet_pack, tmp_path):
    assert_clear(run_edge("evaluate", "--model", str(imagenet_pack), "--folder", str(tmp_path / "absent")), 1,
                 "not a folder")
    table = tmp_path / "set.csv"
    table.write_text("file,dx\nx.jpg,nv\n")
    assert_clear(run_edge("evaluate", "--model", str(imagenet_pack), "--csv", str(table)), 1,
                 "needs the columns image, label")
    assert_clear(run_edge("evaluate", "--model", str(imagenet_pack), "--limit", "0"), 2, "must be at least 1")
    assert_clear(run_edge("bench", "--frames", "0"), 2, "must be at least 1")
    assert_clear(run_edge("bench", "--frames", "5", "--source", "opencv:/dev/video9"), 1,
                 "the benchmark replays files")


def test_run_says_plainly_when_the_kiosk_port_is_taken(imagenet_pack, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_edge("run", "--source", "none", "--model", str(imagenet_pack), "--state-dir",
                          str(tmp_path / "state"), env={"EDGE_KIOSK__PORT": str(port), "EDGE_ASSISTANT__ENABLED": "false"},
                          timeout=60)
    assert_clear(result, 1, f"the kiosk cannot listen on 127.0.0.1:{port}")

"""Safe model updates with real files, the real skin model, real subprocesses killed with SIGKILL and a real
broker: a good signed pack is installed and switched atomically; every bad one is refused with a reason and
changes nothing; a crash loop rolls back; an install killed at any moment leaves a pack that loads."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import HAM_IMAGES
from edge.config import load_settings
from edge.inference import Classifier, load_pack
from edge.inference.manifest import sha256_file, write_pack
from edge.mqtt import admin
from edge.mqtt.publisher import MqttService
from edge.mqtt.signing import load_admin_keys, public_key_b64
from edge.paths import PROJECT_ROOT, default_model_dir
from edge.updates import (PENDING_FILE, ROLLBACK_FILE, ModelStore, UpdateFailed, add_selftest, build_update,
                          check_pack, extract, fetch, pack_archive, resolve_model_dir, sign_manifest, watch_trial)
from mqtt_broker import broker, device_settings, wait_until  # noqa: F401

HAM_PACK = default_model_dir()
INSTALL_STEPS = ("downloaded", "extracted", "verified", "in_place", "previous_linked", "pending_written", "switched")


# -- packs and archives ----------------------------------------------------------------------------------------

def make_pack(folder: Path, version: str, *, model: Path | None = None, labels: list[str] | None = None,
              selftest: int = 0, padding_mb: int = 0) -> Path:
    """A pack around the shipped skin model (cpu variant only, to keep archives small)."""
    ham = load_pack(HAM_PACK).manifest
    write_pack(folder, model_files={"cpu": model or HAM_PACK / "model.tflite"}, labels=labels or list(ham.labels),
               name="skin-test", version=version, licence="test", input_spec=ham.input, output=ham.output,
               decision=ham.decision if labels is None else None, urgency=dict(ham.urgency) if labels is None else None)
    if selftest:
        add_selftest(folder, sorted(HAM_IMAGES.glob("*.jpg"))[:selftest])
    if padding_mb:  # not listed in the manifest: only widens the download and extract windows
        (folder / "padding.bin").write_bytes(os.urandom(padding_mb << 20))
    return folder


def tar_gz(out: Path, pack_dir: Path | None, extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> str:
    """A .tar.gz of ``pack_dir``'s files plus hand-made members (links, traversal, devices); its sha256."""
    with tarfile.open(out, "w:gz") as tar:
        if pack_dir is not None:
            for path in sorted(pack_dir.rglob("*")):
                tar.add(path, arcname=path.relative_to(pack_dir).as_posix(), recursive=False)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return sha256_file(out)


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, linkname
    return info, data if kind == tarfile.REGTYPE else None


class Update:
    """A signed update: the ``model_update`` arguments and the pack they came from."""

    def __init__(self, pack_dir: Path, args: dict[str, str]) -> None:
        self.pack_dir, self.args = pack_dir, args

    def install(self, store: ModelStore, keys, **overrides):
        args = {**self.args, **overrides}
        return store.install(args["source"], args["sha256"], args["manifest_signature"], keys,
                             manifest_key_id=args.get("manifest_key_id"))


@pytest.fixture(scope="module")
def admin_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def keys(admin_key):
    return load_admin_keys([public_key_b64(admin_key.public_key())])


@pytest.fixture(scope="module")
def updates(tmp_path_factory, admin_key) -> dict[str, Update]:
    folder = tmp_path_factory.mktemp("updates")
    made = {}
    for version, selftest in (("1.0.0", 0), ("2.0.0", 2)):
        pack_dir = make_pack(folder / f"v{version}", version, selftest=selftest)
        made[version] = Update(pack_dir, build_update(pack_dir, folder / f"v{version}.tar.gz", admin_key))
    return made


def settings_for(tmp_path: Path, **values):
    return load_settings(None, {"state_dir": str(tmp_path / "state"),
                                "inference": {"model_dir": str(HAM_PACK), "backend": "cpu"}, **values})


@pytest.fixture
def settings(tmp_path):
    return settings_for(tmp_path)


@pytest.fixture
def store(settings) -> ModelStore:
    return ModelStore.from_settings(settings)


def snapshot(store: ModelStore) -> dict:
    """Everything a refused update must leave as it was."""
    root = store.root
    return {"current": store.current(), "previous": store.previous(),
            "pending": (root / PENDING_FILE).read_bytes() if (root / PENDING_FILE).exists() else None,
            "packs": sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink()
                            and not p.name.startswith(".")) if root.exists() else []}


def staging_is_empty(store: ModelStore) -> bool:
    staging = store.root / ".staging"
    return not staging.exists() or not any(staging.iterdir())


def assert_loads(pack_dir: Path, settings) -> None:
    pack = check_pack(pack_dir)
    classifier = Classifier.open(pack, "cpu", settings.inference)
    classifier.close()


# -- installing -----------------------------------------------------------------------------------------------

def test_a_good_pack_is_installed_switched_atomically_and_committed(store, settings, keys, updates):
    installed = updates["2.0.0"].install(store, keys)
    assert (installed.name, installed.version, installed.already_current) == ("skin-test", "2.0.0", False)
    assert installed.archive_sha256 == updates["2.0.0"].args["sha256"] and installed.previous is None
    link = store.root / "current"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))  # relative, replaced with os.replace
    assert store.current() == installed.path and not (store.root / "current.tmp").exists()
    assert load_pack(installed.path).manifest.version == "2.0.0"
    assert (installed.path / "selftest" / "expected.json").is_file() and staging_is_empty(store)
    assert store.trial().boots == 0 and store.trial().previous is None

    started = resolve_model_dir(settings)  # the daemon's next start: counted
    assert started == installed.path.resolve() and store.trial().boots == 1
    assert_loads(started, settings)
    assert store.commit(started) and store.trial() is None
    assert resolve_model_dir(settings) == started and store.trial() is None  # committed: no more counting


def test_the_next_update_keeps_the_known_good_pack_for_rollback(store, keys, updates):
    first = updates["1.0.0"].install(store, keys)
    assert store.commit()
    second = updates["2.0.0"].install(store, keys)
    assert second.previous == first.path.name and store.previous() == first.path
    assert store.trial().previous == first.path.name
    again = updates["2.0.0"].install(store, keys)  # the same command twice: nothing changes
    assert again.already_current and store.current() == second.path and store.previous() == first.path


def test_an_update_on_trial_does_not_become_the_rollback_target(store, keys, updates, tmp_path, admin_key):
    first = updates["1.0.0"].install(store, keys)
    store.commit()
    updates["2.0.0"].install(store, keys)  # on trial, never confirmed healthy
    third_dir = make_pack(tmp_path / "v3", "3.0.0")
    third = Update(third_dir, build_update(third_dir, tmp_path / "v3.tar.gz", admin_key)).install(store, keys)
    assert third.previous == first.path.name and store.previous() == first.path  # not the untested 2.0.0


def corrupt_copy(update: Update, tmp_path: Path) -> dict:
    data = bytearray(Path(update.args["source"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "corrupt.tar.gz").write_bytes(bytes(data))
    return {"source": str(tmp_path / "corrupt.tar.gz")}


def tampered_model(update: Update, tmp_path: Path, admin_key) -> dict:
    """A pack whose model file no longer matches the sha256 in its (validly signed) manifest."""
    pack_dir = tmp_path / "tampered"
    shutil.copytree(update.pack_dir, pack_dir)
    model = bytearray((pack_dir / "model.tflite").read_bytes())
    model[-100] ^= 0x01
    (pack_dir / "model.tflite").write_bytes(bytes(model))
    signature, kid = sign_manifest(pack_dir, admin_key)
    sha = tar_gz(tmp_path / "tampered.tar.gz", pack_dir)
    return {"source": str(tmp_path / "tampered.tar.gz"), "sha256": sha, "manifest_signature": signature,
            "manifest_key_id": kid}


def edited_manifest(update: Update, tmp_path: Path) -> dict:
    """The manifest changed after the admin signed it (the archive's sha256 is the attacker's)."""
    pack_dir = tmp_path / "edited"
    shutil.copytree(update.pack_dir, pack_dir)
    manifest = pack_dir / "model.json"
    manifest.write_text(manifest.read_text().replace('"2.0.0"', '"9.9.9"'))
    return {"source": str(tmp_path / "edited.tar.gz"), "sha256": tar_gz(tmp_path / "edited.tar.gz", pack_dir)}


def with_members(update: Update, tmp_path: Path, *extra) -> dict:
    sha = tar_gz(tmp_path / "crafted.tar.gz", update.pack_dir, list(extra))
    return {"source": str(tmp_path / "crafted.tar.gz"), "sha256": sha}


def signed_pack(tmp_path: Path, admin_key, **pack_options) -> dict:
    pack_dir = make_pack(tmp_path / "custom", "5.0.0", **pack_options.pop("make", {}))
    for edit in pack_options.pop("edits", ()):
        edit(pack_dir)
    return build_update(pack_dir, tmp_path / "custom.tar.gz", admin_key)


def wrong_selftest_label(pack_dir: Path) -> None:
    expected = json.loads((pack_dir / "selftest" / "expected.json").read_text())
    expected = {name: ("mel" if label != "mel" else "nv") for name, label in expected.items()}
    (pack_dir / "selftest" / "expected.json").write_text(json.dumps(expected))


def whole_frame_input(pack_dir: Path) -> None:
    """A manifest for a 4:3 model around the 160x160 model file: a pack built wrong."""
    manifest = json.loads((pack_dir / "model.json").read_text())
    manifest["input"].update(width=192, height=144, crop="center")
    (pack_dir / "model.json").write_text(json.dumps(manifest))


def bomb(tmp_path: Path, update: Update) -> dict:
    """Small archive, huge when unpacked: 64 MB of zeros beside the pack (limit below is 48 MB)."""
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(update.pack_dir, arcname=".")
        info = tarfile.TarInfo("zeros.bin")
        info.size = 64 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    return {"source": str(path), "sha256": sha256_file(path)}


REFUSED = {
    "corrupted archive": ("checksum", "sha256", lambda u, t, k: corrupt_copy(u, t)),
    "wrong sha256": ("checksum", "sha256", lambda u, t, k: {"sha256": "ab" * 32}),
    "not a tar.gz": ("archive", "not a valid", lambda u, t, k: (
        (t / "junk").write_bytes(os.urandom(5000)), {"source": str(t / "junk"), "sha256": sha256_file(t / "junk")})[1]),
    "missing file": ("download", "No such file", lambda u, t, k: {"source": str(t / "absent.tar.gz")}),
    "relative path": ("download", "absolute path", lambda u, t, k: {"source": "pack.tar.gz"}),
    "tampered model file": ("pack", "refusing to load", lambda u, t, k: tampered_model(u, t, k)),
    "manifest edited after signing": ("signature", "bad signature", lambda u, t, k: edited_manifest(u, t)),
    "no signature": ("signature", "no manifest signature", lambda u, t, k: {"manifest_signature": ""}),
    "garbage signature": ("signature", "not valid base64", lambda u, t, k: {"manifest_signature": "!!"}),
    "unknown key": ("signature", "does not trust", lambda u, t, k: {
        "manifest_signature": sign_manifest(u.pack_dir, stranger())[0],
        "manifest_key_id": sign_manifest(u.pack_dir, stranger())[1]}),
    "unknown key without key id": ("signature", "bad signature", lambda u, t, k: {
        "manifest_signature": sign_manifest(u.pack_dir, stranger())[0], "manifest_key_id": None}),
    "path traversal": ("archive", "unsafe path", lambda u, t, k: with_members(
        u, t, member("../../escaped.txt", data=b"owned"))),
    "absolute path": ("archive", "unsafe path", lambda u, t, k: with_members(
        u, t, member(str(t / "escaped.txt"), data=b"owned"))),
    "symlink member": ("archive", "is a link", lambda u, t, k: with_members(
        u, t, member("selftest/passwd", tarfile.SYMTYPE, linkname="/etc/passwd"))),
    "hard link member": ("archive", "is a link", lambda u, t, k: with_members(
        u, t, member("copy.tflite", tarfile.LNKTYPE, linkname="model.tflite"))),
    "device member": ("archive", "not a regular file", lambda u, t, k: with_members(
        u, t, member("dev-null", tarfile.CHRTYPE))),
    "decompression bomb": ("archive", "unpacks to more than", lambda u, t, k: bomb(t, u)),
    "no model.json": ("archive", "no model.json", lambda u, t, k: {
        "source": str(t / "crafted.tar.gz"),
        "sha256": tar_gz(t / "crafted.tar.gz", None, [member("readme.txt", data=b"hi")])}),
    "model does not load": ("selftest", "does not load", lambda u, t, k: signed_pack(
        t, k, make={"model": garbage_model(t)})),
    "labels do not match the model": ("selftest", "outputs", lambda u, t, k: signed_pack(
        t, k, make={"labels": ["a", "b", "c"]})),
    "self-test label mismatch": ("selftest", "expected", lambda u, t, k: signed_pack(
        t, k, make={"selftest": 2}, edits=[wrong_selftest_label])),
    "input size does not match the model": ("selftest", "192x144 does not match the model's 160x160",
                                            lambda u, t, k: signed_pack(t, k, edits=[whole_frame_input])),
}


def stranger() -> Ed25519PrivateKey:
    return _STRANGER


_STRANGER = Ed25519PrivateKey.generate()


def garbage_model(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.tflite"
    path.write_bytes(os.urandom(4096))
    return path


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_update_is_refused_with_a_reason_and_changes_nothing(case, store, keys, updates, tmp_path, admin_key):
    updates["1.0.0"].install(store, keys)
    store.commit()
    before = snapshot(store)
    step, reason, make = REFUSED[case]
    overrides = make(updates["2.0.0"], tmp_path, admin_key)
    with pytest.raises(UpdateFailed) as failure:
        updates["2.0.0"].install(store, keys, **overrides) if case != "decompression bomb" else \
            store.install(overrides["source"], overrides["sha256"], updates["2.0.0"].args["manifest_signature"],
                          keys, max_bytes=48 << 20)
    assert failure.value.step == step and reason in str(failure.value), (case, failure.value.step, failure.value)
    assert snapshot(store) == before, case
    assert staging_is_empty(store) and not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_only_http_redirects_are_followed_and_http_sources_work(store, keys, updates, tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    shutil.copy(updates["2.0.0"].args["source"], served / "pack.tar.gz")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path in ("/to-file", "/to-ftp"):
                self.send_response(302)
                self.send_header("Location", f"file://{served / 'pack.tar.gz'}" if self.path == "/to-file"
                                 else "ftp://127.0.0.1/pack.tar.gz")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(UpdateFailed, match="is not allowed"):  # refused by urllib itself
            updates["2.0.0"].install(store, keys, source=f"{base}/to-file")
        with pytest.raises(UpdateFailed, match=r"only http\(s\) redirects"):  # urllib would follow this one
            updates["2.0.0"].install(store, keys, source=f"{base}/to-ftp")
        with pytest.raises(UpdateFailed, match="HTTP 404"):
            updates["2.0.0"].install(store, keys, source=f"{base}/absent.tar.gz")
        assert store.current() is None
        installed = updates["2.0.0"].install(store, keys, source=f"{base}/pack.tar.gz")
        assert store.current() == installed.path and installed.version == "2.0.0"
    finally:
        server.shutdown()


def test_a_server_that_trickles_bytes_is_cut_off_at_the_download_deadline(tmp_path):
    """One byte every 0.2 s never trips a per-read socket timeout; the deadline must still end the download,
    or every later command (restart included) waits behind it."""
    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            for _ in range(100):  # 20 s of trickle at most
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    outcome: list = []

    def download():
        try:
            fetch(f"http://127.0.0.1:{server.server_address[1]}/pack.tar.gz", tmp_path / "out", "ab" * 32,
                  max_bytes=1 << 20, timeout_s=1.0)
        except UpdateFailed as exc:
            outcome.append(exc)

    try:
        worker = threading.Thread(target=download, daemon=True)
        worker.start()
        worker.join(10)  # the server trickles for 20 s: only a download cut off at its deadline ends before
        assert not worker.is_alive(), "the download outlived its deadline"
        assert outcome and "longer than 1 s" in str(outcome[0])
    finally:
        server.shutdown()


def test_a_local_source_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pack.tar.gz"
    os.mkfifo(fifo)
    outcome: list = []

    def run():
        try:
            fetch(str(fifo), tmp_path / "out", "ab" * 32, max_bytes=1 << 20, timeout_s=1.0)
        except UpdateFailed as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # the old code blocks in open() until a writer appears: let it go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail("fetch blocked on a FIFO")
    assert outcome and "not a regular file" in str(outcome[0])


def test_a_huge_pax_header_counts_against_the_size_limit(tmp_path):
    """tarfile reads a PAX header into memory while listing members; a small archive could make that
    hundreds of MB before any member size was checked."""
    archive = tmp_path / "pax.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("model.json")
        info.size, info.pax_headers = 2, {"comment": "x" * (24 << 20)}
        tar.addfile(info, io.BytesIO(b"{}"))
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(UpdateFailed, match="unpacks to more than") as failure:
        extract(archive, tmp_path / "out", max_bytes=1 << 20)
    assert failure.value.step == "archive" and not (tmp_path / "out").exists()


def test_pack_archive_is_reproducible_and_refuses_links(updates, tmp_path):
    pack_dir = updates["1.0.0"].pack_dir
    assert pack_archive(pack_dir, tmp_path / "a.tar.gz") == pack_archive(pack_dir, tmp_path / "b.tar.gz")
    linked = tmp_path / "linked"
    shutil.copytree(pack_dir, linked)
    (linked / "evil").symlink_to("/etc/passwd")
    with pytest.raises(Exception, match="only regular files"):
        pack_archive(linked, tmp_path / "c.tar.gz")


# -- start-up: trial, crash loop, rollback ------------------------------------------------------------------------

def test_a_crash_loop_after_the_switch_rolls_back_to_the_previous_pack(store, settings, keys, updates):
    first = updates["1.0.0"].install(store, keys)
    store.commit()
    second = updates["2.0.0"].install(store, keys)
    for boot in (1, 2, 3):  # the daemon starts and dies before confirming the pack healthy
        assert resolve_model_dir(settings) == second.path.resolve() and store.trial().boots == boot
    restored = resolve_model_dir(settings)  # the 4th start
    assert restored == first.path.resolve() and store.current() == first.path and store.trial() is None
    assert_loads(restored, settings)
    rollback = json.loads((store.root / ROLLBACK_FILE).read_text())
    assert rollback["pack"] == second.path.name and "crash loop" in rollback["reason"]
    assert store.status()["last_rollback"]["restored"] == first.path.name


def test_a_crash_loop_of_the_first_update_falls_back_to_the_configured_pack(store, settings, keys, updates):
    updates["2.0.0"].install(store, keys)
    for _ in range(3):
        resolve_model_dir(settings)
    assert resolve_model_dir(settings) == HAM_PACK and store.current() is None and store.trial() is None


def test_a_pack_on_trial_that_no_longer_verifies_is_rolled_back_at_once(store, settings, keys, updates):
    first = updates["1.0.0"].install(store, keys)
    store.commit()
    second = updates["2.0.0"].install(store, keys)
    (second.path / "model.tflite").write_bytes(b"flipped by a failing SD card")
    assert resolve_model_dir(settings) == first.path.resolve() and store.trial() is None


def test_a_start_that_cannot_be_counted_never_runs_the_pack_on_trial(store, settings, keys, updates, monkeypatch):
    """With the boot count unwritable (a full or read-only disk) every start used to load the pack on trial:
    a pack that crashes the daemon was never rolled back, and systemd gave up on the device."""
    import errno

    first = updates["1.0.0"].install(store, keys)
    store.commit()
    second = updates["2.0.0"].install(store, keys)

    def disk_full(self, name, value):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(ModelStore, "_write_json", disk_full)
        for _ in range(6):
            assert resolve_model_dir(settings) == first.path.resolve()
    assert store.trial().pack == second.path.name and store.trial().boots == 0  # still on trial, uncounted
    assert resolve_model_dir(settings) == second.path.resolve() and store.trial().boots == 1  # disk freed


def test_reinstalling_the_current_pack_repairs_a_damaged_copy(store, settings, keys, updates):
    """The current pack's model file rots on the SD card (the daemon falls back to the previous pack); the
    administrator sends the same update again. It used to answer "already installed" and change nothing."""
    first = updates["1.0.0"].install(store, keys)
    store.commit()
    second = updates["2.0.0"].install(store, keys)
    resolve_model_dir(settings)
    store.commit()
    (second.path / "model.tflite").write_bytes(b"bit rot")
    assert resolve_model_dir(settings) == first.path.resolve()  # what the daemon falls back to meanwhile
    again = updates["2.0.0"].install(store, keys)
    assert not again.already_current and again.path == second.path
    started = resolve_model_dir(settings)
    assert started == second.path.resolve() and store.trial().pack == second.path.name  # on trial again
    assert_loads(started, settings)
    assert updates["2.0.0"].install(store, keys).already_current  # an intact current pack: nothing to do


def test_a_clean_up_failing_after_the_switch_still_reports_the_install(store, settings, keys, updates, monkeypatch):
    """The new pack is current (and on trial) once the link is switched: an error removing old packs after that
    used to reach the administrator as "refused, the current model is unchanged", with no restart."""
    import errno

    updates["1.0.0"].install(store, keys)
    store.commit()

    def denied(keep):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(store, "_collect_garbage", denied)
    installed = updates["2.0.0"].install(store, keys)
    assert not installed.already_current and store.current() == installed.path
    assert store.trial().pack == installed.path.name


def test_a_store_that_cannot_be_written_is_a_reason_not_an_internal_error(tmp_path, keys, updates):
    """The models folder cannot be made (here a file is in its way; on a device: permissions, a read-only or
    full disk): the administrator reads why, at the install step, instead of "internal error"."""
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "models").write_text("not a folder")
    with pytest.raises(UpdateFailed, match="cannot write the update to") as failure:
        updates["2.0.0"].install(ModelStore(tmp_path / "state"), keys)
    assert failure.value.step == "install"


def test_a_pack_much_slower_than_the_running_one_is_refused(store, keys, updates, tmp_path, admin_key,
                                                               monkeypatch):
    """Only a 10 s limit per inference guarded speed: a pack several times slower (here the same model with 8
    test-time views against a running pack with 1) was accepted. Timed side by side in the self-test."""
    import edge.updates

    monkeypatch.setattr(edge.updates, "SLOW_FLOOR_MS", 0.0)  # this machine is fast: compare by ratio alone
    running = tmp_path / "running"
    shutil.copytree(updates["1.0.0"].pack_dir, running)
    manifest = json.loads((running / "model.json").read_text())
    manifest["decision"]["test_time_views"] = 1
    (running / "model.json").write_text(json.dumps(manifest))

    def views(count: int):
        def edit(pack_dir: Path) -> None:
            data = json.loads((pack_dir / "model.json").read_text())
            data["decision"]["test_time_views"] = count
            (pack_dir / "model.json").write_text(json.dumps(data))
        return edit

    slow = signed_pack(tmp_path / "slow", admin_key, edits=[views(8)])
    with pytest.raises(UpdateFailed, match="times the running pack's") as failure:
        store.install(slow["source"], slow["sha256"], slow["manifest_signature"], keys,
                      manifest_key_id=slow["manifest_key_id"], baseline=running)
    assert failure.value.step == "selftest" and store.current() is None
    same = signed_pack(tmp_path / "same", admin_key, edits=[views(1)])  # as fast as the running pack
    store.install(same["source"], same["sha256"], same["manifest_signature"], keys,
                  manifest_key_id=same["manifest_key_id"], baseline=running)
    assert store.current() is not None


def test_manual_rollback_and_commit(store, settings, keys, updates):
    first = updates["1.0.0"].install(store, keys)
    store.commit()
    updates["2.0.0"].install(store, keys)
    assert not store.commit(running=first.path)  # the daemon is not running the pack on trial: no commit
    assert store.rollback("an administrator asked") == first.path
    assert resolve_model_dir(settings) == first.path.resolve() and store.trial() is None


@pytest.mark.parametrize("garbage", [b"", b'{"pack": "skin-te', b"\x00\xff" * 10, b'{"pack": 3, "previous": null}'])
def test_an_unreadable_pending_marker_does_not_break_start_up(store, settings, keys, updates, garbage):
    installed = updates["2.0.0"].install(store, keys)
    (store.root / PENDING_FILE).write_bytes(garbage)  # e.g. a damaged disk: the write itself is atomic
    started = resolve_model_dir(settings)
    assert started == installed.path.resolve()
    assert_loads(started, settings)
    assert store.trial().boots == 1 and store.trial().pack == installed.path.name  # still on trial, counted


def running_a_pack_on_trial(store, settings, keys, updates):
    """1.0.0 committed, 2.0.0 installed on trial and started: (its folder, its classifier)."""
    updates["1.0.0"].install(store, keys)
    store.commit()
    updates["2.0.0"].install(store, keys)
    running = resolve_model_dir(settings)
    return running, Classifier.open(load_pack(running), "cpu", settings.inference)


def test_watch_trial_commits_a_pack_that_runs_healthily(store, settings, keys, updates):
    running, classifier = running_a_pack_on_trial(store, settings, keys, updates)
    stop, restarts = threading.Event(), []
    thread = watch_trial(store, running, classifier, stop=stop, restart=lambda: restarts.append(1),
                         healthy_after_s=0.2)
    thread.join(5)
    classifier.close()
    assert store.trial() is None and store.current().resolve() == running and restarts == []


def test_watch_trial_keeps_trying_to_commit_while_the_store_is_busy(store, settings, keys, updates, monkeypatch):
    """A commit that fails (another update holds the lock past the wait) used to end the watch for good: the
    healthy pack stayed on trial and was rolled back after a few ordinary restarts."""
    running, classifier = running_a_pack_on_trial(store, settings, keys, updates)
    commit, attempts = store.commit, []

    def busy_twice(*args, **kwargs):
        attempts.append(1)
        if len(attempts) <= 2:
            raise UpdateFailed("model store is busy", "install")
        return commit(*args, **kwargs)

    monkeypatch.setattr(store, "commit", busy_twice)
    thread = watch_trial(store, running, classifier, stop=threading.Event(), restart=lambda: None,
                         healthy_after_s=0.2)
    thread.join(10)
    classifier.close()
    assert len(attempts) == 3 and store.trial() is None and store.current().resolve() == running


def test_watch_trial_commits_only_after_a_healthy_stretch(store, settings, keys, updates):
    """Unhealthy checks restart the clock; the pack is committed once the daemon has been healthy for the
    whole window, and never while it is not."""
    running, classifier = running_a_pack_on_trial(store, settings, keys, updates)
    verdicts = {"now": (False, "frames failing")}
    stop = threading.Event()
    thread = watch_trial(store, running, classifier, stop=stop, restart=lambda: None,
                         healthy=lambda: verdicts["now"], healthy_after_s=0.4)
    time.sleep(1.2)  # three windows' worth of unhealthy checks
    assert store.trial() is not None and thread.is_alive()
    verdicts["now"] = (True, "frames flowing")
    started = time.monotonic()
    thread.join(5)
    classifier.close()
    assert time.monotonic() - started >= 0.3  # a full healthy window, counted from the first healthy check
    assert store.trial() is None and store.current().resolve() == running


def test_watch_trial_leaves_a_never_healthy_pack_on_trial(store, settings, keys, updates):
    running, classifier = running_a_pack_on_trial(store, settings, keys, updates)
    stop = threading.Event()
    thread = watch_trial(store, running, classifier, stop=stop, restart=lambda: None,
                         healthy=lambda: (False, "an inference has been running for more than 10 s"),
                         healthy_after_s=0.2)
    time.sleep(0.8)
    stop.set()
    thread.join(5)
    classifier.close()
    assert store.trial() is not None and store.trial().pack == running.name


def test_watch_trial_rolls_back_a_pack_the_daemon_cannot_open(store, settings, keys, updates):
    first = updates["1.0.0"].install(store, keys)
    store.commit()
    updates["2.0.0"].install(store, keys)
    running = resolve_model_dir(settings)
    stop, restarts = threading.Event(), []
    assert watch_trial(store, first.path, None, stop=stop, restart=lambda: restarts.append(1)) is None
    assert restarts == [] and store.trial() is not None  # not running the pack on trial: not its business
    assert watch_trial(store, running, None, stop=stop, restart=lambda: restarts.append(1)) is None
    assert restarts == [1] and store.trial() is None and store.current() == first.path
    assert resolve_model_dir(settings) == first.path.resolve()


# -- SIGKILL at any moment -------------------------------------------------------------------------------------

INSTALLER = """
import os, signal, sys, time
from pathlib import Path
from edge.mqtt.signing import load_admin_keys
from edge.updates import ModelStore
state, source, sha, signature, kid, public, kill_at = sys.argv[1:8]
def on_step(name):
    if name == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
store = ModelStore(Path(state), on_step=on_step)
print("ready", flush=True)
store.install(source, sha, signature, load_admin_keys([public]), manifest_key_id=kid)
print("done", flush=True)
"""


def run_installer(state: Path, update: Update, public: str, *, kill_at: str = "", kill_after_s: float | None = None):
    """Install ``update`` in a child process; SIGKILLed at step ``kill_at`` or ``kill_after_s`` after it is
    ready. Returns (return code, seconds from ready to exit)."""
    args = update.args
    child = subprocess.Popen([sys.executable, "-c", INSTALLER, str(state), args["source"], args["sha256"],
                              args["manifest_signature"], args["manifest_key_id"], public, kill_at],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=PROJECT_ROOT, text=True)
    assert child.stdout.readline().strip() == "ready"
    began = time.monotonic()
    if kill_after_s is not None:
        time.sleep(kill_after_s)
        child.send_signal(signal.SIGKILL)
    child.wait(60)
    return child.returncode, time.monotonic() - began


@pytest.fixture(scope="module")
def padded_update(tmp_path_factory, admin_key) -> Update:
    folder = tmp_path_factory.mktemp("padded")
    pack_dir = make_pack(folder / "pack", "3.0.0", selftest=1, padding_mb=48)
    return Update(pack_dir, build_update(pack_dir, folder / "padded.tar.gz", admin_key))


@pytest.fixture
def installed_v1(tmp_path, keys, updates):
    """A state folder whose committed current pack is 1.0.0, copied fresh for every kill."""
    settings = settings_for(tmp_path / "template")
    store = ModelStore.from_settings(settings)
    first = updates["1.0.0"].install(store, keys)
    store.commit()
    return settings.state_dir, first.path.name


def check_after_kill(state: Path, v1_name: str, what: str) -> str:
    settings = load_settings(None, {"state_dir": str(state), "inference": {"model_dir": str(HAM_PACK)}})
    started = resolve_model_dir(settings)
    check_pack(started)  # loads and every file verifies
    assert started.parent == (state / "models").resolve(), what  # an installed pack: v1 or the new one
    version = load_pack(started).manifest.version
    assert version == "3.0.0" or started.name == v1_name, (what, started)
    return version


def test_sigkill_at_every_step_of_an_install_leaves_a_working_model(tmp_path, installed_v1, padded_update, admin_key,
                                                                   keys):
    template, v1_name = installed_v1
    public = public_key_b64(admin_key.public_key())
    outcomes = {}
    for step in INSTALL_STEPS:
        state = tmp_path / f"kill-{step}"
        shutil.copytree(template, state, symlinks=True)
        code, _ = run_installer(state, padded_update, public, kill_at=step)
        assert code == -signal.SIGKILL, step
        outcomes[step] = check_after_kill(state, v1_name, step)
        store = ModelStore(state)
        assert padded_update.install(store, keys).version == "3.0.0"  # and the next attempt succeeds
        assert staging_is_empty(store)
    assert outcomes == {**{step: "1.0.0" for step in INSTALL_STEPS[:-1]}, "switched": "3.0.0"}


def test_sigkill_at_random_moments_of_an_install_leaves_a_working_model(tmp_path, installed_v1, padded_update,
                                                                       admin_key):
    template, v1_name = installed_v1
    public = public_key_b64(admin_key.public_key())
    state = tmp_path / "timing"
    shutil.copytree(template, state, symlinks=True)
    code, duration = run_installer(state, padded_update, public)
    assert code == 0
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
        state = tmp_path / f"kill-{fraction}"
        shutil.copytree(template, state, symlinks=True)
        code, _ = run_installer(state, padded_update, public, kill_after_s=duration * fraction)
        leftovers = sorted(p.name for p in (state / "models" / ".staging").glob("*/*"))
        print(f"killed at {fraction:.0%} of {duration:.2f} s: exit {code}, staging {leftovers}")
        check_after_kill(state, v1_name, f"killed at {fraction:.0%} of {duration:.2f} s (exit {code})")


# -- over MQTT ------------------------------------------------------------------------------------------------

@pytest.fixture
def device(tmp_path, broker, admin_key):  # noqa: F811
    restarts: list[float] = []
    settings = device_settings(tmp_path / "state", broker,
                               commands={"admin_keys": [public_key_b64(admin_key.public_key())]})
    service = MqttService(settings, restart=lambda: restarts.append(time.time()))
    service.start()
    wait_until(lambda: service.listening_for_commands, what="device subscribed to its commands")
    yield service, restarts
    service.stop()


def send(service: MqttService, key: Ed25519PrivateKey, args: dict) -> dict:
    replies = admin.send(service.settings.mqtt, key, "model_update", args, device=service.device_id,
                         timeout_s=20, ttl_s=60)
    assert len(replies) == 1, replies
    return replies[0]


def test_model_update_over_mqtt_installs_replies_and_restarts(device, admin_key, updates):
    service, restarts = device
    reply = send(service, admin_key, updates["2.0.0"].args)
    assert reply["ok"], reply
    result = reply["result"]
    assert (result["name"], result["version"], result["restarting"]) == ("skin-test", "2.0.0", True)
    assert result["sha256"] == updates["2.0.0"].args["sha256"] and result["previous"] is None
    wait_until(lambda: restarts, what="the restart hook")
    store = ModelStore.from_settings(service.settings)
    assert load_pack(store.current()).manifest.version == "2.0.0" and store.trial().boots == 0


def test_status_tells_the_administrator_about_trials_and_rollbacks(device, admin_key, updates):
    """An update answered "ok, restarting" can be rolled back later (a crash loop, a pack the daemon cannot
    open): the status reply says what is installed, what is on trial, and the last rollback and why."""
    service, _ = device
    assert send(service, admin_key, updates["2.0.0"].args)["ok"]
    status = admin.send(service.settings.mqtt, admin_key, "status", {}, device=service.device_id,
                        timeout_s=20, ttl_s=60)[0]["result"]["model_updates"]
    store = ModelStore.from_settings(service.settings)
    assert status["current"] == store.current().name and status["trial"]["pack"] == store.current().name
    assert status["trial"]["boots"] == 0 and status["last_rollback"] is None
    installed = store.current().name
    store.rollback(f"crash loop: the daemon at {service.settings.state_dir} kept failing")
    status = admin.send(service.settings.mqtt, admin_key, "status", {}, device=service.device_id,
                        timeout_s=20, ttl_s=60)[0]["result"]["model_updates"]
    assert status["current"] is None and status["trial"] is None  # back on the configured pack
    assert status["last_rollback"]["pack"] == installed
    assert "crash loop" in status["last_rollback"]["reason"]
    assert str(service.settings.state_dir) not in status["last_rollback"]["reason"]  # no paths go out


def test_a_model_update_after_a_restart_command_is_refused_until_the_restart(device, admin_key, updates):
    """Once the restart hook has run, the daemon spends seconds closing its parts while the command thread
    still takes commands: an update then would be cut off with no reply. It is refused as busy."""
    service, restarts = device
    reply = admin.send(service.settings.mqtt, admin_key, "restart", {}, device=service.device_id,
                       timeout_s=20, ttl_s=60)[0]
    assert reply["ok"], reply
    wait_until(lambda: restarts, what="the restart hook")
    refused = send(service, admin_key, updates["2.0.0"].args)
    assert refused["ok"] is False and "about to restart" in refused["error"], refused
    assert ModelStore.from_settings(service.settings).current() is None  # nothing installed


def test_status_survives_a_damaged_rollback_record(device, admin_key):
    service, _ = device
    store = ModelStore.from_settings(service.settings)
    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / ROLLBACK_FILE).write_text("[1, 2]")  # valid JSON, not a record
    reply = admin.send(service.settings.mqtt, admin_key, "status", {}, device=service.device_id,
                       timeout_s=20, ttl_s=60)[0]
    assert reply["ok"], reply
    assert reply["result"]["model_updates"]["last_rollback"] == {"error": "the rollback record is unreadable"}


def test_a_model_update_is_refused_while_a_restart_is_pending(updates):
    """A second update queued behind one that is about to restart the device would be cut off with no reply;
    it is refused at once, with the reason."""
    from edge.mqtt import actions

    class Restarting:
        restart_pending = True

        def install_model(self, *args):
            raise AssertionError("must not install while a restart is pending")

    with pytest.raises(actions.CommandFailed, match="about to restart.*unchanged"):
        actions.model_update(updates["2.0.0"].args, Restarting())


def test_a_corrupted_model_update_over_mqtt_is_refused_and_changes_nothing(device, admin_key, updates, tmp_path):
    service, restarts = device
    store = ModelStore.from_settings(service.settings)
    reply = send(service, admin_key, {**updates["2.0.0"].args, **corrupt_copy(updates["2.0.0"], tmp_path)})
    assert reply["ok"] is False and "checksum" in reply["error"] and "current model is unchanged" in reply["error"]
    reply = send(service, admin_key, {"source": updates["2.0.0"].args["source"], "sha256": "0" * 64})
    assert reply["ok"] is False and "missing manifest_signature" in reply["error"]
    time.sleep(0.3)
    assert restarts == [] and store.current() is None and staging_is_empty(store)

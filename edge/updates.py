"""Model updates: install a signed model pack beside the running one, switch atomically, roll back a crash loop.

Everything lives under ``state_dir/models``::

    <name>-<version>-<sha12>/   installed packs; never modified after the rename that put them there
    current -> <pack>           the pack the daemon loads (relative symlink, replaced with os.replace)
    previous -> <pack>          the last known-good pack: what a rollback restores
    pending.json                a switch on trial, {"pack", "previous", "boots"}; commit() removes it
    rollback.json               the last rollback (which pack, why, when), for status reports
    .staging/<random>/          a download and extraction in progress
    .trash/<random>/            packs being deleted
    .lock                       flock: one installer or resolver at a time

``install`` downloads into staging, checks the archive's sha256, extracts safely, checks the admin's
signature over ``model.json``, verifies every file's sha256 and runs a self-test with the real classifier;
only then does it rename the pack into place and switch ``current``. At the next start
``resolve_model_dir`` counts the boots of a pack on trial and rolls back one that never became healthy.

Why SIGKILL (or a power cut: every step is fsynced) at any moment leaves a working model:

1. download, extract, verify, self-test: only ``.staging`` is written; ``current`` is untouched and the
   leftover is deleted the next time the lock is taken.
2. rename staging -> ``models/<pack>``: atomic; a complete, verified pack that nothing points to yet
   (deleted by the next install's clean-up if it stays unused).
3. ``previous`` link, then ``pending.json`` (tmp file + fsync + os.replace), then ``current`` link
   (``current.tmp`` + os.replace): each an atomic replace. Killed before the ``current`` swap, the
   daemon finds ``pending.json`` naming a pack that is not current, and current being the known-good
   pack it names as previous: the switch never happened, the stale marker is removed.
4. after the swap: the new pack is current and on trial. Every start counts a boot; after
   ``MAX_TRIAL_BOOTS`` starts without ``commit()`` (a crash loop) it is rolled back. A pack that does not
   verify at start is rolled back at once.
5. rollback: ``current`` is swapped to the known-good pack (or removed, falling back to the configured
   ``inference.model_dir``) before ``pending.json`` is removed; killed in between, the next start sees a
   stale marker again.
6. an unreadable ``pending.json`` (disk damage) keeps the current pack on trial with a fresh count, and a
   current pack that does not verify is never returned: ``previous``, then the configured pack, are.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.errors import BackendFailed, BackendUnavailable, EdgeError, ImageError, ModelError
from edge.inference.manifest import MANIFEST_NAME, ModelPack, load_pack, sha256_file
from edge.mqtt.signing import SignatureError, sign_envelope, verify_envelope

log = logging.getLogger("edge.updates")

MODELS_DIR = "models"
CURRENT, PREVIOUS = "current", "previous"
PENDING_FILE, ROLLBACK_FILE, LOCK_FILE = "pending.json", "rollback.json", ".lock"
STAGING_DIR, TRASH_DIR = ".staging", ".trash"
SELFTEST_DIR, SELFTEST_EXPECTED = "selftest", "expected.json"
MAX_TRIAL_BOOTS = 3  # starts of a new pack without commit() before it is rolled back
DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # archive, and everything in it once extracted
DEFAULT_TIMEOUT_S = 60.0  # whole download; the command thread waits for it (see edge.mqtt.actions.model_update)
DEFAULT_HEALTHY_AFTER_S = 60.0
TRIAL_POLL_S = 2.0  # how often a pack on trial is checked while it proves itself
MAX_MEMBERS = 10_000
MAX_SELFTEST_IMAGES = 50
# A pack whose classification is this many times slower than the running pack's (measured side by side in
# the self-test) and above SLOW_FLOOR_MS is refused: a float model or 8 views pushed by mistake would make
# every capture on a Pi take seconds. The floor keeps fast packs out of a ratio's noise.
MAX_SLOWDOWN = 3.0
SLOW_FLOOR_MS = 50.0
TIMING_RUNS = 7
LOCK_WAIT_S = 30.0  # start-up, commit, rollback: the lock is held for at most one install
INSTALL_LOCK_WAIT_S = 5.0  # a second install gives up rather than queue behind a download
SIGNATURE_PURPOSE = "edge model pack manifest v1"
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
BLOCK = 1 << 20
CHUNK = 64 * 1024  # one network read: a slow server is checked against the deadline after each
STALL_S = 10.0  # longest wait for any bytes at all; the whole download may overrun its deadline by this much
TAR_OVERHEAD_PER_MEMBER = 2048  # header, a PAX header of ordinary size and padding, beyond the member's data


class UpdateFailed(EdgeError):
    """A model update that was refused; ``step`` says where (download, checksum, archive, signature, pack,
    selftest, install) and the message why. Nothing the daemon loads was changed."""

    def __init__(self, message: str, step: str) -> None:
        super().__init__(message)
        self.step = step


@dataclass(frozen=True)
class InstalledPack:
    name: str
    version: str
    archive_sha256: str
    model_sha256: str  # of the cpu model file: what telemetry and results report as the model's sha256
    path: Path
    previous: str | None  # the known-good pack a rollback restores (None: the configured inference.model_dir)
    already_current: bool  # this exact pack was already current: nothing changed


@dataclass(frozen=True)
class Trial:
    """``pending.json``: ``pack`` was switched to and has started ``boots`` times without being committed."""

    pack: str
    previous: str | None
    boots: int


# -- building an update (administrator side) ----------------------------------------------------------------

def manifest_statement(manifest_bytes: bytes) -> dict[str, str]:
    """What an admin signs for a pack: the sha256 of the exact bytes of its model.json, with a purpose that
    no command envelope has (so neither signature can be passed off as the other)."""
    return {"purpose": SIGNATURE_PURPOSE, "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest()}


def sign_manifest(pack_dir: Path, private_key: Ed25519PrivateKey) -> tuple[str, str]:
    """(signature base64, key id) over ``pack_dir/model.json``, for ``model_update``'s ``manifest_signature``
    and ``manifest_key_id``. Uses the command signing scheme (canonical JSON, Ed25519)."""
    signed = sign_envelope(manifest_statement((Path(pack_dir) / MANIFEST_NAME).read_bytes()), private_key)
    return signed["signature"], signed["key_id"]


def pack_archive(pack_dir: Path, out_tar_gz: Path, *, compresslevel: int = 6) -> str:
    """Write ``pack_dir`` as a reproducible .tar.gz (files at the top level, no owners, fixed times) and
    return its sha256. The pack must verify first; links and special files are refused."""
    pack_dir, out_tar_gz = Path(pack_dir), Path(out_tar_gz)
    report = load_pack(pack_dir).verify_all()
    broken = [detail for _, ok, detail in report if not ok]
    if broken:
        raise ModelError(f"refusing to archive a pack that does not verify: {'; '.join(broken)}")
    entries = sorted(pack_dir.rglob("*"))
    tmp = out_tar_gz.with_name(out_tar_gz.name + ".tmp")
    with open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=compresslevel) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in entries:
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise ModelError(f"{path}: only regular files and folders can go into an update")
            info = tar.gettarinfo(str(path), arcname=path.relative_to(pack_dir).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isdir():
                tar.addfile(info)
            else:
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
    os.replace(tmp, out_tar_gz)
    return sha256_file(out_tar_gz)


def build_update(pack_dir: Path, out_tar_gz: Path, private_key: Ed25519PrivateKey,
                 source: str | None = None) -> dict[str, str]:
    """Archive and sign a pack; the result is the ``args`` of a ``model_update`` command. ``source`` is where
    devices will fetch the archive (default: the absolute path of ``out_tar_gz``)."""
    signature, kid = sign_manifest(pack_dir, private_key)
    sha256 = pack_archive(pack_dir, out_tar_gz)
    return {"source": source or str(Path(out_tar_gz).resolve()), "sha256": sha256,
            "manifest_signature": signature, "manifest_key_id": kid}


def add_selftest(pack_dir: Path, images: list[Path], inference_settings=None) -> dict[str, str]:
    """Copy ``images`` into ``pack_dir/selftest/`` with the labels the pack gives them now (expected.json):
    a device then checks that it reproduces exactly these answers. Not part of model.json, so adding them
    does not change the manifest signature (the archive's sha256 covers them)."""
    from edge.inference import Classifier
    from edge.types import Quality
    from edge.vision.decode import read_image_file

    pack = load_pack(pack_dir)
    folder = Path(pack_dir) / SELFTEST_DIR
    folder.mkdir(exist_ok=True)
    classifier = Classifier.open(pack, "cpu", _inference(inference_settings))
    try:
        expected = {}
        for image in images:
            shutil.copyfile(image, folder / Path(image).name)
            expected[Path(image).name] = classifier.classify(read_image_file(Path(image)), Quality()).label
    finally:
        classifier.close()
    (folder / SELFTEST_EXPECTED).write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return expected


# -- checks used by install (and by the daemon's trial) -------------------------------------------------------

def verify_manifest_signature(manifest_bytes: bytes, signature: str, key_id: str | None,
                              admin_keys: Mapping[str, Ed25519PublicKey]) -> str:
    """The id of the admin key that signed these manifest bytes; ``UpdateFailed`` otherwise."""
    if not isinstance(signature, str) or not signature:
        raise UpdateFailed("no manifest signature given", "signature")
    if not admin_keys:
        raise UpdateFailed("this device has no admin keys configured (mqtt.commands.admin_keys)", "signature")
    statement = manifest_statement(manifest_bytes)
    last = SignatureError("bad signature")
    for kid in [key_id] if key_id else list(admin_keys):  # without a key id: whichever trusted key signed it
        try:
            return verify_envelope({**statement, "key_id": kid, "signature": signature}, admin_keys)
        except SignatureError as exc:
            last = exc
    raise UpdateFailed(f"manifest signature: {last}", "signature")


def check_pack(pack_dir: Path) -> ModelPack:
    """The pack at ``pack_dir`` if its manifest loads, every listed file stays inside the folder and every
    file's sha256 matches; ``UpdateFailed`` saying what is wrong otherwise."""
    try:
        pack = load_pack(pack_dir)
    except ModelError as exc:
        raise UpdateFailed(str(exc), "pack") from None
    root = Path(pack_dir).resolve()
    for variant, entry in pack.manifest.files.items():
        if not (root / entry.path).resolve().is_relative_to(root):
            raise UpdateFailed(f"files.{variant}.path {entry.path!r} points outside the pack", "pack")
    broken = [detail for _, ok, detail in pack.verify_all() if not ok]
    if broken:
        raise UpdateFailed("; ".join(broken), "pack")
    return pack


def check_classifier(classifier) -> None:
    """A synthetic image through ``classifier``: finite probabilities, one per label, summing to 1."""
    import numpy as np

    from edge.types import Quality

    rng = np.random.default_rng(7)
    ys, xs = np.mgrid[0:240, 0:320]
    image = np.clip(np.stack([xs * 0.8, ys, (xs + ys) * 0.4], axis=-1) + rng.normal(0, 12, (240, 320, 3)),
                    0, 255).astype(np.uint8)
    try:
        result = classifier.classify(image, Quality())
    except (BackendFailed, ModelError) as exc:
        raise UpdateFailed(f"self-test: inference failed: {exc}", "selftest") from None
    labels = classifier.pack.manifest.labels
    probabilities = np.array([result.probabilities.get(label, np.nan) for label in labels], dtype=np.float64)
    if len(result.probabilities) != len(labels) or not np.all(np.isfinite(probabilities)):
        raise UpdateFailed("self-test: the model's probabilities are not finite, one per label", "selftest")
    if abs(float(probabilities.sum()) - 1.0) > 1e-3 or np.any(probabilities < 0):
        raise UpdateFailed(f"self-test: probabilities sum to {probabilities.sum():.4f}, not 1", "selftest")


def self_test(pack: ModelPack, inference_settings=None, baseline: Path | None = None) -> int:
    """Open the pack's cpu model with the real classifier; run the synthetic check and every bundled image
    of ``selftest/expected.json``, whose labels must match. With ``baseline`` (the running pack's folder),
    also refuse a pack much slower than it (``MAX_SLOWDOWN``). Returns how many images were checked."""
    from edge.inference import Classifier
    from edge.types import Quality
    from edge.vision.decode import read_image_file

    expected = _expected_labels(pack)
    try:
        classifier = Classifier.open(pack, "cpu", _inference(inference_settings))
    except (ModelError, BackendUnavailable) as exc:
        raise UpdateFailed(f"self-test: the cpu model does not load: {exc}", "selftest") from None
    try:
        check_classifier(classifier)
        for name, label in expected.items():
            try:
                image = read_image_file(pack.root / SELFTEST_DIR / name)
                result = classifier.classify(image, Quality())
            except (ImageError, BackendFailed, ModelError) as exc:
                raise UpdateFailed(f"self-test: {name}: {exc}", "selftest") from None
            if result.label != label:
                raise UpdateFailed(f"self-test: {name} was classified {result.label!r} "
                                   f"(p={result.confidence:.2f}), expected {label!r}", "selftest")
        if baseline is not None:
            check_speed(classifier, baseline, inference_settings)
    finally:
        classifier.close()
    return len(expected)


def check_speed(classifier, baseline: Path, inference_settings=None) -> None:
    """The new pack's classification time against the running pack's, both on the CPU (the model every
    device can fall back to; an accelerator variant is not timed here), interleaved so that load
    from elsewhere on the device affects both alike; ``UpdateFailed`` when it is ``MAX_SLOWDOWN`` times slower
    and above ``SLOW_FLOOR_MS``. A running pack that cannot be opened here is not a reason to refuse."""
    import numpy as np

    from edge.inference import Classifier, load_pack
    from edge.types import Quality

    try:
        current = Classifier.open(load_pack(baseline), "cpu", _inference(inference_settings))
    except (EdgeError, OSError) as exc:
        log.warning("self-test: the running pack cannot be timed for comparison (%s)", exc)
        return
    image = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    times: dict[str, list[float]] = {"new": [], "current": []}
    try:
        for _ in range(TIMING_RUNS):
            for name, model in (("new", classifier), ("current", current)):
                started = time.perf_counter()
                try:
                    model.classify(image, Quality())
                except (BackendFailed, ModelError) as exc:
                    if model is classifier:
                        raise UpdateFailed(f"self-test: timing the new pack failed: {exc}", "selftest") from None
                    log.warning("self-test: the running pack cannot be timed for comparison (%s)", exc)
                    return
                times[name].append((time.perf_counter() - started) * 1e3)
    finally:
        current.close()
    new_ms, current_ms = float(np.median(times["new"])), float(np.median(times["current"]))
    log.info("self-test: %.1f ms per classification, the running pack %.1f ms", new_ms, current_ms)
    if new_ms > SLOW_FLOOR_MS and new_ms > MAX_SLOWDOWN * current_ms:
        raise UpdateFailed(f"self-test: {new_ms:.0f} ms per classification, {new_ms / current_ms:.1f} times the "
                           f"running pack's {current_ms:.0f} ms (the limit is {MAX_SLOWDOWN:g} times)", "selftest")


def _expected_labels(pack: ModelPack) -> dict[str, str]:
    path = pack.root / SELFTEST_DIR / SELFTEST_EXPECTED
    if not path.exists():
        return {}
    try:
        expected = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UpdateFailed(f"self-test: {SELFTEST_DIR}/{SELFTEST_EXPECTED} is not valid JSON: {exc}", "selftest") \
            from None
    if not isinstance(expected, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in expected.items()):
        raise UpdateFailed(f"self-test: {SELFTEST_EXPECTED} must map image file names to labels", "selftest")
    if len(expected) > MAX_SELFTEST_IMAGES:
        raise UpdateFailed(f"self-test: more than {MAX_SELFTEST_IMAGES} images", "selftest")
    for name, label in expected.items():
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise UpdateFailed(f"self-test: {name!r} is not a file name in {SELFTEST_DIR}/", "selftest")
        if label not in pack.manifest.labels:
            raise UpdateFailed(f"self-test: expected label {label!r} of {name} is not one of the pack's labels",
                               "selftest")
    return expected


def _inference(settings):
    if settings is not None:
        return settings
    from edge.config import InferenceSettings

    return InferenceSettings()


# -- the store ------------------------------------------------------------------------------------------------

class ModelStore:
    """Installed packs under ``state_dir/models``, the ``current``/``previous`` links and the trial marker.

    ``on_step`` is called with the name of each step of an install as it completes (``downloaded``,
    ``extracted``, ``verified``, ``in_place``, ``previous_linked``, ``pending_written``, ``switched``): a
    progress hook, and how the tests kill an install at each step.
    """

    def __init__(self, state_dir: Path, inference_settings=None, *, max_trial_boots: int = MAX_TRIAL_BOOTS,
                 on_step: Callable[[str], None] | None = None) -> None:
        self.root = Path(state_dir) / MODELS_DIR
        self.inference_settings = inference_settings
        self.max_trial_boots = max_trial_boots
        self.on_step = on_step

    @classmethod
    def from_settings(cls, settings, **kwargs) -> "ModelStore":
        return cls(settings.state_dir, settings.inference, **kwargs)

    # -- reading --------------------------------------------------------------------------------------------
    def current(self) -> Path | None:
        """The real folder ``current`` points to (whether or not it still verifies), or None."""
        return self._link_target(CURRENT)

    def previous(self) -> Path | None:
        return self._link_target(PREVIOUS)

    def trial(self) -> Trial | None:
        """The pack on trial, None when nothing is; ``UpdateFailed`` if ``pending.json`` is unreadable."""
        try:
            raw = json.loads((self.root / PENDING_FILE).read_text(encoding="utf-8"))
            trial = Trial(pack=raw["pack"], previous=raw["previous"], boots=raw["boots"])
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise UpdateFailed(f"{PENDING_FILE} is unreadable: {exc}", "install") from None
        if not (isinstance(trial.pack, str) and isinstance(trial.boots, int) and trial.boots >= 0
                and (trial.previous is None or isinstance(trial.previous, str))):
            raise UpdateFailed(f"{PENDING_FILE} has fields of the wrong type", "install")
        return trial

    def status(self) -> dict[str, Any]:
        """For health and telemetry: which packs are current and previous, any trial, the last rollback."""
        try:
            trial = self.trial()
        except UpdateFailed:
            trial = None
        try:
            rollback = json.loads((self.root / ROLLBACK_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            rollback = None
        current, previous = self.current(), self.previous()
        return {"current": current.name if current else None, "previous": previous.name if previous else None,
                "trial": asdict(trial) if trial else None, "last_rollback": rollback}

    def active_dir(self, fallback: Path) -> Path:
        """Read-only: the pack a start would load now (current if it verifies, else previous, else
        ``fallback``), without counting a boot. For ``edge doctor`` / ``edge classify``."""
        for candidate in (self.current(), self.previous()):
            if candidate is not None and self._verifies(candidate):
                return candidate.resolve()
        return Path(fallback)

    # -- install --------------------------------------------------------------------------------------------
    def install(self, source: str, sha256: str, manifest_signature: str,
                admin_keys: Mapping[str, Ed25519PublicKey], *, manifest_key_id: str | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES, timeout_s: float = DEFAULT_TIMEOUT_S,
                baseline: Path | None = None) -> InstalledPack:
        """Fetch, verify, self-test and switch to the pack at ``source`` (an absolute path, ``file://`` or
        ``http(s)://`` URL of a .tar.gz). ``UpdateFailed`` leaves ``current`` and the trial as they were."""
        expected = sha256.strip().lower() if isinstance(sha256, str) else ""
        if not SHA256_PATTERN.match(expected):
            raise UpdateFailed("sha256 must be 64 hex digits", "checksum")
        try:  # the store itself unwritable (permissions, a read-only or full disk): a reason, not "internal error"
            self.root.mkdir(parents=True, exist_ok=True)
            with self._lock(wait_s=INSTALL_LOCK_WAIT_S):
                self._remove_leftovers()
                staging = self.root / STAGING_DIR / secrets.token_hex(8)
                staging.mkdir(parents=True)
                return self._install_staged(staging, source, expected, manifest_signature, admin_keys,
                                            manifest_key_id, max_bytes, timeout_s, baseline)
        except OSError as exc:
            log.warning("model update failed: %s", exc)
            raise UpdateFailed(f"cannot write the update to {self.root}: {exc}", "install") from None

    def _install_staged(self, staging: Path, source: str, expected: str, manifest_signature: str,
                        admin_keys: Mapping[str, Ed25519PublicKey], manifest_key_id: str | None, max_bytes: int,
                        timeout_s: float, baseline: Path | None = None) -> InstalledPack:
        """``install``'s steps from the download on, in ``staging`` (removed at the end), under the lock."""
        try:
            archive = staging / "pack.tar.gz"
            fetch(source, archive, expected, max_bytes=max_bytes, timeout_s=timeout_s)
            self._step("downloaded")
            pack_dir = _pack_root(extract(archive, staging / "pack", max_bytes=max_bytes))
            self._step("extracted")
            key = verify_manifest_signature((pack_dir / MANIFEST_NAME).read_bytes(), manifest_signature,
                                            manifest_key_id, admin_keys)
            pack = check_pack(pack_dir)
            images = self_test(pack, self.inference_settings, baseline=baseline)
            log.info("model pack %s %s verified (signed by admin key %s, %d self-test images)",
                     pack.manifest.name, pack.manifest.version, key, images)
            self._step("verified")
            archive.unlink()
            return self._put_in_place_and_switch(pack, expected)
        except UpdateFailed as exc:
            log.warning("model update refused at %s: %s", exc.step, exc)
            raise
        finally:
            _remove_tree(staging)

    def _put_in_place_and_switch(self, pack: ModelPack, archive_sha256: str) -> InstalledPack:
        manifest = pack.manifest
        name = pack_dir_name(manifest.name, manifest.version, archive_sha256)
        target = self.root / name
        current = self.current()
        info = dict(name=manifest.name, version=manifest.version, archive_sha256=archive_sha256,
                    model_sha256=manifest.files["cpu"].sha256, path=target)
        if current == target and self._verifies(current):  # a damaged copy is replaced by this fresh one
            trial = self._trial_or_none()
            log.info("model pack %s is already current: nothing to switch", name)
            return InstalledPack(**info, previous=trial.previous if trial else _name(self.previous()),
                                 already_current=True)
        known_good = self._known_good(current)
        if known_good == target:  # reinstalling the known-good pack itself: nothing older to fall back to
            known_good = None
        _fsync_tree(pack.root)
        if target.exists():  # the same archive installed before (e.g. the previous pack): replace it
            self._trash(target)
        os.rename(pack.root, target)
        _fsync_dir(self.root)
        self._step("in_place")
        self._set_link(PREVIOUS, known_good)
        self._step("previous_linked")
        self._write_json(PENDING_FILE, asdict(Trial(name, _name(known_good), 0)))
        self._step("pending_written")
        self._set_link(CURRENT, target)
        self._step("switched")
        log.warning("model pack switched to %s (known-good for rollback: %s); on trial until the daemon "
                    "confirms it healthy", name, _name(known_good) or "the configured inference.model_dir")
        try:  # the switch is done: a failed clean-up must not be reported as "nothing changed"
            self._collect_garbage(keep={target, known_good, current})  # current: the daemon may still run it
        except OSError as exc:
            log.error("model pack %s installed, but removing unused packs failed: %s", name, exc)
        return InstalledPack(**info, previous=_name(known_good), already_current=False)

    def _known_good(self, current: Path | None) -> Path | None:
        """What a rollback of the next switch restores: the current pack, or when that is itself on trial the
        trial's known-good pack; if that does not verify, the previous pack; else None (configured pack)."""
        trial = self._trial_or_none()
        first = current
        if trial is not None and current is not None and trial.pack == current.name:
            first = self.root / trial.previous if trial.previous else None
        for candidate in (first, self.previous()):
            if candidate is not None and self._verifies(candidate):
                return candidate
        return None

    # -- start-up, commit, rollback -------------------------------------------------------------------------
    def resolve(self, fallback: Path) -> Path:
        """The pack folder the daemon should load at this start (see ``resolve_model_dir``)."""
        if not self.root.is_dir():
            return Path(fallback)
        try:
            with self._lock(wait_s=LOCK_WAIT_S):
                self._remove_leftovers()
                self._settle_trial()
        except UpdateFailed as exc:  # another process holds the lock: decide without changing anything
            log.error("model store busy (%s): choosing a pack without updating the trial", exc)
            return self._uncounted_start(fallback)
        except OSError as exc:  # e.g. a full or read-only disk: the boot count could not be written
            log.error("model store %s: %s: choosing a pack without updating the trial", self.root, exc)
            return self._uncounted_start(fallback)
        return self.active_dir(fallback)

    def _uncounted_start(self, fallback: Path) -> Path:
        """A start whose boot could not be counted must not load a pack on trial: if that pack crashes the
        daemon, no count would ever reach the rollback, and systemd would give up on a device that has a
        known-good pack. It loads the trial's known-good pack (else the configured one) instead."""
        trial, current = self._trial_or_none(), self.current()
        if trial is None or current is None or current.name != trial.pack:
            return self.active_dir(fallback)
        known_good = self._trial_known_good(trial)
        log.error("model pack %s is on trial but this start could not be counted: starting %s instead",
                  trial.pack, known_good.name if known_good else "the configured inference.model_dir")
        return known_good.resolve() if known_good is not None else Path(fallback)

    def _trial_known_good(self, trial: Trial) -> Path | None:
        """The pack a trial falls back to, if it still verifies; None: the configured pack."""
        known_good = self.root / trial.previous if trial.previous else None
        if known_good is not None and not self._verifies(known_good):
            log.error("known-good pack %s does not verify either", trial.previous)
            return None
        return known_good

    def _settle_trial(self) -> None:
        current = self.current()
        try:
            trial = self.trial()
        except UpdateFailed as exc:
            if current is None:
                log.error("%s; no current pack, marker removed", exc)
                self._remove_file(PENDING_FILE)
                return
            log.error("%s; keeping %s on trial with a fresh boot count", exc, current.name)
            previous = self.previous()
            trial = Trial(current.name, _name(previous) if previous != current else None, 0)
        if trial is None:
            return
        if current is not None and current.name == trial.pack:
            boots = trial.boots + 1
            if boots > self.max_trial_boots:
                self._roll_back(trial, f"crash loop: {trial.pack} started {trial.boots} times without being "
                                       "confirmed healthy")
            elif not self._verifies(current):
                self._roll_back(trial, f"{trial.pack} no longer verifies")
            else:
                self._write_json(PENDING_FILE, asdict(Trial(trial.pack, trial.previous, boots)))
                log.warning("model pack %s on trial: start %d of %d", trial.pack, boots, self.max_trial_boots)
        elif _name(current) == trial.previous:
            log.warning("model update to %s did not complete (or its rollback did): staying on %s", trial.pack,
                        trial.previous or "the configured pack")
            self._remove_file(PENDING_FILE)
        else:
            self._roll_back(trial, f"interrupted update: current is {_name(current)}, neither {trial.pack} "
                                   f"nor the known-good {trial.previous}")

    def commit(self, running: Path | None = None) -> bool:
        """The pack on trial ran healthily: end the trial (``previous`` stays for a manual rollback). With
        ``running``, only if that is the pack on trial. True when a trial was committed."""
        with self._lock(wait_s=LOCK_WAIT_S):
            trial = self._trial_or_none()
            current = self.current()
            if trial is None or current is None or current.name != trial.pack:
                return False
            if running is not None and Path(running).resolve() != current.resolve():
                return False
            self._remove_file(PENDING_FILE)
        log.warning("model pack %s confirmed healthy after %d start(s): committed", trial.pack, trial.boots)
        return True

    def rollback(self, reason: str) -> Path | None:
        """Go back to the known-good pack now (the trial's, else ``previous``); returns it, or None when the
        configured ``inference.model_dir`` is what remains. Takes effect at the next start."""
        with self._lock(wait_s=LOCK_WAIT_S):
            trial = self._trial_or_none()
            current = self.current()
            if trial is None:
                previous = self.previous()
                trial = Trial(_name(current) or "", _name(previous) if previous != current else None, 0)
            return self._roll_back(trial, reason)

    def _roll_back(self, trial: Trial, reason: str) -> Path | None:
        restored = self._trial_known_good(trial)
        self._set_link(CURRENT, restored)  # first: a kill after this leaves a stale marker, handled at start
        self._remove_file(PENDING_FILE)
        self._write_json(ROLLBACK_FILE, {"pack": trial.pack or None, "restored": _name(restored),
                                         "reason": reason, "time": int(time.time())})
        log.critical("MODEL UPDATE ROLLED BACK: %s; now using %s", reason,
                     restored.name if restored else "the configured inference.model_dir")
        return restored  # the failed pack stays until the next install's clean-up, for inspection

    # -- filesystem -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, wait_s: float) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise UpdateFailed("another model update is in progress", "install") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock (the kernel also does when the process dies)

    def _step(self, name: str) -> None:
        log.debug("model update: %s", name)
        if self.on_step is not None:
            self.on_step(name)

    def _trial_or_none(self) -> Trial | None:
        try:
            return self.trial()
        except UpdateFailed as exc:
            log.error("%s: treated as no trial", exc)
            return None

    def _verifies(self, pack_dir: Path) -> bool:
        try:
            check_pack(pack_dir)
            return True
        except UpdateFailed as exc:
            log.error("model pack %s unusable: %s", pack_dir, exc)
            return False

    def _link_target(self, link: str) -> Path | None:
        path = self.root / link
        try:
            target = os.readlink(path)
        except OSError:
            return None
        return self.root / target

    def _set_link(self, link: str, target: Path | None) -> None:
        """Point ``link`` at ``target`` (a pack folder in the store) atomically, or remove it for None."""
        path = self.root / link
        if target is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        else:
            tmp = self.root / f"{link}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(target.name, tmp)  # relative: the store may be moved or mounted elsewhere
            os.replace(tmp, path)
        _fsync_dir(self.root)

    def _write_json(self, name: str, value: dict[str, Any]) -> None:
        tmp = self.root / f"{name}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(value, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.root / name)
        _fsync_dir(self.root)

    def _remove_file(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / name)
        _fsync_dir(self.root)

    def _trash(self, folder: Path) -> None:
        """Delete a pack folder: renamed out of the way first (atomic), then removed."""
        trash = self.root / TRASH_DIR
        trash.mkdir(exist_ok=True)
        doomed = trash / secrets.token_hex(8)
        os.rename(folder, doomed)
        _fsync_dir(self.root)
        _remove_tree(doomed)

    def _remove_leftovers(self) -> None:
        """What a killed install or rollback left behind; only called with the lock held."""
        for folder in (STAGING_DIR, TRASH_DIR):
            for leftover in (self.root / folder).glob("*"):
                log.info("removing leftover %s", leftover)
                _remove_tree(leftover)
        for tmp in self.root.glob("*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _collect_garbage(self, keep: set[Path | None]) -> None:
        """Delete installed packs that neither ``current`` nor a rollback can reach any more."""
        kept = {path.name for path in keep if path is not None}
        for entry in self.root.iterdir():
            if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir() or entry.name in kept:
                continue
            log.info("removing unused model pack %s", entry.name)
            self._trash(entry)


def resolve_model_dir(settings) -> Path:
    """The pack folder the daemon should load at this start: once per start, before the classifier opens.

    The real folder ``state_dir/models/current`` points to when it verifies, else ``previous``, else the
    configured ``inference.model_dir``. A pack on trial has this start counted; past ``MAX_TRIAL_BOOTS``
    starts without ``commit()`` it is rolled back (logged as critical) and the known-good pack returned.
    Never raises for a damaged store: the configured pack is the last resort."""
    fallback = settings.inference.model_dir
    try:
        return ModelStore.from_settings(settings).resolve(fallback)
    except (OSError, EdgeError) as exc:
        log.error("model store unusable (%s): loading the configured pack %s", exc, fallback)
        return Path(fallback)


def installed_model_dir(settings) -> Path:
    """Read-only twin of ``resolve_model_dir`` (no boot counted, nothing changed), for tools that inspect
    the pack the daemon runs (``edge doctor``, ``edge classify``)."""
    try:
        return ModelStore.from_settings(settings).active_dir(settings.inference.model_dir)
    except (OSError, EdgeError):
        return Path(settings.inference.model_dir)


def watch_trial(store: ModelStore, running: Path, classifier, *, stop: threading.Event,
                restart: Callable[[], None], healthy: Callable[[], tuple[bool, str]] | None = None,
                healthy_after_s: float = DEFAULT_HEALTHY_AFTER_S) -> threading.Thread | None:
    """Called once by the daemon after its classifier opened (None when it did not), before serving.

    Nothing to do unless ``running`` is the pack on trial. If the daemon could not open it, or a synthetic
    image does not give sane probabilities on the live backend, roll back and call ``restart`` now. Else
    commit once ``healthy()`` (the daemon's own judgement: loop turning, no stuck inference, frames not
    failing) has said so at every check for ``healthy_after_s`` in a row; returns that thread. A pack that
    never gets there stays on trial, and the boot counter rolls it back after ``MAX_TRIAL_BOOTS`` starts."""
    trial = store._trial_or_none()
    current = store.current()
    if trial is None or current is None or current.name != trial.pack \
            or Path(running).resolve() != current.resolve():
        return None
    reason = None
    if classifier is None:
        reason = f"the daemon could not open {trial.pack}"
    else:
        try:
            check_classifier(classifier)
        except UpdateFailed as exc:
            reason = f"{trial.pack} failed on the live backend: {exc}"
    if reason is not None:
        store.rollback(reason)
        restart()
        return None

    check = healthy or (lambda: (True, "no health check"))
    poll_s = min(TRIAL_POLL_S, healthy_after_s / 4)

    def commit_when_healthy() -> None:
        healthy_since, said = time.monotonic(), None
        while not stop.wait(poll_s):
            ok, why = check()
            now = time.monotonic()
            if not ok:
                healthy_since = now
                if why != said:
                    log.warning("model pack %s stays on trial: %s", trial.pack, why)
                said = why
                continue
            if now - healthy_since >= healthy_after_s:
                try:
                    store.commit(running)
                except (OSError, EdgeError) as exc:  # e.g. an install holds the lock: a trial left uncommitted
                    if str(exc) != said:  # would be rolled back after a few ordinary restarts, so keep trying
                        log.error("could not commit model pack %s yet (%s); trying again", trial.pack, exc)
                    said = str(exc)
                    continue
                return

    thread = threading.Thread(target=commit_when_healthy, name="model-trial", daemon=True)
    thread.start()
    return thread


# -- fetching and unpacking ---------------------------------------------------------------------------------

class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise UpdateFailed(f"download redirected to a {urllib.parse.urlsplit(newurl).scheme or 'relative'} "
                               "URL: only http(s) redirects are followed", "download")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(source: str, dest: Path, sha256: str, *, max_bytes: int, timeout_s: float) -> None:
    """Copy ``source`` to ``dest`` (at most ``max_bytes``, within ``timeout_s``, overrun by at most ``STALL_S``
    when the source goes quiet) and check its sha256."""
    if not isinstance(source, str) or not source:
        raise UpdateFailed("no source given", "download")
    parts = urllib.parse.urlsplit(source)
    shown = _display(source)
    deadline = time.monotonic() + timeout_s
    try:
        if parts.scheme in ("http", "https"):
            opener = urllib.request.build_opener(_HttpOnlyRedirects)
            stream = opener.open(urllib.request.Request(source, headers={"User-Agent": "edge-model-update"}),
                                 timeout=min(timeout_s, STALL_S))
            length = stream.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                stream.close()
                raise UpdateFailed(f"{shown} is {int(length)} bytes, above the {max_bytes}-byte limit", "download")
        elif parts.scheme == "file" and parts.netloc in ("", "localhost"):
            stream = _open_regular_file(urllib.request.url2pathname(parts.path), shown)
        elif parts.scheme == "" and source.startswith("/"):
            stream = _open_regular_file(source, shown)
        else:
            raise UpdateFailed("source must be an absolute path, a file:// URL or an http(s):// URL", "download")
        with stream, open(dest, "wb") as out:
            digest, size = hashlib.sha256(), 0
            # read1: whatever has arrived, so a server that trickles bytes meets the deadline check too
            while block := stream.read1(CHUNK):
                size += len(block)
                if size > max_bytes:
                    raise UpdateFailed(f"{shown} is larger than the {max_bytes}-byte limit", "download")
                if time.monotonic() > deadline:
                    raise UpdateFailed(f"{shown}: download took longer than {timeout_s:g} s", "download")
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
    except urllib.error.HTTPError as exc:
        raise UpdateFailed(f"{shown}: HTTP {exc.code} {exc.reason}", "download") from None
    except urllib.error.URLError as exc:
        raise UpdateFailed(f"{shown}: {exc.reason}", "download") from None
    except (OSError, ValueError) as exc:  # includes timeouts and unreadable files
        raise UpdateFailed(f"{shown}: {exc}", "download") from None
    if digest.hexdigest() != sha256:
        raise UpdateFailed(f"archive sha256 is {digest.hexdigest()[:12]}…, the command says {sha256[:12]}…: "
                           "corrupt or not the pack that was signed", "checksum")


def _open_regular_file(path: str, shown: str):
    """A local source, opened for reading only if it is a regular file: a FIFO or a device would block the
    command thread with no deadline."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UpdateFailed(f"{shown} is not a regular file", "download")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_unpacked_size(archive: Path, max_bytes: int) -> None:
    """Decompress once without keeping anything, so neither a gzip bomb nor a huge PAX header (which
    ``tarfile`` reads into memory while listing members) gets past the size limit."""
    limit = max_bytes + (MAX_MEMBERS + 2) * TAR_OVERHEAD_PER_MEMBER + tarfile.RECORDSIZE
    total = 0
    with gzip.open(archive, "rb") as stream:
        while block := stream.read(BLOCK):
            total += len(block)
            if total > limit:
                raise UpdateFailed(f"archive unpacks to more than {max_bytes} bytes", "archive")


def extract(archive: Path, dest: Path, *, max_bytes: int) -> Path:
    """Unpack a .tar.gz into ``dest`` after checking every member: relative paths without ``..``, regular
    files and folders only (no links, devices or fifos), at most ``max_bytes`` in all, enough free disk.
    Python's ``data`` filter then enforces the same again while extracting."""
    try:
        _check_unpacked_size(archive, max_bytes)
        with tarfile.open(archive, "r:gz") as tar:
            members, total = [], 0
            for member in tar:
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts or member.name.startswith("\\"):
                    raise UpdateFailed(f"archive member {member.name!r} has an unsafe path", "archive")
                if member.issym() or member.islnk():
                    raise UpdateFailed(f"archive member {member.name!r} is a link: not allowed in a pack", "archive")
                if not (member.isreg() or member.isdir()):
                    raise UpdateFailed(f"archive member {member.name!r} is not a regular file or folder", "archive")
                total += member.size
                if total > max_bytes:
                    raise UpdateFailed(f"archive unpacks to more than {max_bytes} bytes", "archive")
                members.append(member)
                if len(members) > MAX_MEMBERS:
                    raise UpdateFailed(f"archive has more than {MAX_MEMBERS} members", "archive")
            free = shutil.disk_usage(dest.parent).free
            if free < total + 16 * 1024 * 1024:
                raise UpdateFailed(f"not enough disk space: the pack needs {total} bytes, {free} free", "archive")
            dest.mkdir()
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as exc:  # includes the data filter's refusals
        raise UpdateFailed(f"not a valid pack archive: {exc}", "archive") from None
    except (EOFError, gzip.BadGzipFile, zlib.error, ValueError) as exc:
        raise UpdateFailed(f"not a valid .tar.gz: {exc or type(exc).__name__}", "archive") from None
    return dest


def _pack_root(unpacked: Path) -> Path:
    """The folder holding model.json: the archive's top level, or its single top-level folder."""
    if (unpacked / MANIFEST_NAME).is_file():
        return unpacked
    entries = list(unpacked.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MANIFEST_NAME).is_file():
        return entries[0]
    raise UpdateFailed(f"archive has no {MANIFEST_NAME} at its top level", "archive")


def pack_dir_name(name: str, version: str, archive_sha256: str) -> str:
    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:60].lstrip(".") or "pack"

    return f"{safe(name)}-{safe(version)}-{archive_sha256[:12]}"


def _display(source: str) -> str:
    """``source`` for messages: no user name or password of a URL."""
    parts = urllib.parse.urlsplit(source)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urllib.parse.urlunsplit(parts)[:300]


def _name(path: Path | None) -> str | None:
    return path.name if path is not None else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder of a pack before anything points to it (power cuts, not just SIGKILL)."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


__all__ = ["InstalledPack", "ModelStore", "Trial", "UpdateFailed", "add_selftest", "build_update", "check_classifier",
           "check_pack", "installed_model_dir", "pack_archive", "resolve_model_dir", "self_test", "sign_manifest",
           "verify_manifest_signature", "watch_trial"]

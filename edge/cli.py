"""The ``edge`` command. Thin: parse flags, load settings, call into the package, print.

Every ``EdgeError`` becomes one line on stderr and a non-zero exit; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from edge import __version__
from edge.errors import ConfigError, EdgeError

log = logging.getLogger("edge")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as nested settings overrides; only the flags that were given."""
    nested: dict[str, Any] = {}
    for flag, path in (("source", "camera.source"), ("model", "inference.model_dir"), ("backend", "inference.backend"),
                       ("threads", "inference.cpu.threads"), ("state_dir", "state_dir"), ("log_level", "log_level"),
                       ("mqtt_host", "mqtt.host"), ("mqtt_port", "mqtt.port")):
        value = getattr(args, flag, None)
        if value is None:
            continue
        *parents, leaf = path.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def _settings(args: argparse.Namespace):
    from edge.config import load_settings

    return load_settings(args.config, _overrides(args))


def _device_settings(args: argparse.Namespace):
    """The settings the daemon runs with, for tools that inspect it: the administrator's remote changes
    (``set_config``) applied and, unless ``--model`` names a pack, the pack the daemon loads (an installed
    model update, read without counting a trial boot)."""
    from edge.mqtt.remote_config import with_overlay
    from edge.updates import installed_model_dir

    settings = with_overlay(_settings(args))
    model_dir = Path(args.model) if getattr(args, "model", None) else installed_model_dir(settings)
    return settings.model_copy(update={"inference": settings.inference.model_copy(update={"model_dir": model_dir})})


def _setup_logging(level: str) -> None:
    from edge.service import configure_logging

    configure_logging(level)  # the journal (systemd-python) when run as a systemd service, else stderr


# --- classify -------------------------------------------------------------------------------------------

def cmd_classify(args: argparse.Namespace) -> int:
    from edge.inference import Classifier, load_pack
    from edge.vision.decode import read_image_file
    from edge.vision.quality import assess

    settings = _device_settings(args)
    classifier = Classifier.open(load_pack(settings.inference.model_dir), settings.inference.backend, settings.inference)
    failures = 0
    written: set[str] = set()  # saliency file names used so far: two images named x.jpg get two overlays
    for image_path in args.images:
        try:
            image = read_image_file(Path(image_path), max_bytes=settings.limits.max_bytes,
                                    max_pixels=settings.limits.max_pixels)
            result = classifier.classify(image, assess(image, settings.quality))
        except EdgeError as exc:
            failures += 1
            _emit_error(args.json, image_path, str(exc))
            continue
        # An image the quality gate refuses is not a screening (the kiosk asks for a retake); the model's output on
        # it is kept for whoever is testing, marked so that no reader takes its label and urgency as a result.
        record = {"image": image_path, "screened": result.quality.ok, **result.to_json()}
        if args.saliency:
            try:
                record["saliency"] = _write_saliency(classifier, image, Path(args.saliency), image_path, written)
            except EdgeError as exc:
                failures += 1
                record["saliency_error"] = str(exc)
                if not args.json:
                    print(f"edge: {exc}", file=sys.stderr, flush=True)
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            timing = f"[{result.backend}, {result.latency_ms:.1f} ms]"
            if result.quality.ok:
                print(f"{image_path}: {result.display_name} ({result.confidence:.1%}) urgency={result.urgency.value} "
                      f"quality=ok {timing}", flush=True)
            else:
                print(f"{image_path}: NOT SCREENED, retake: {'; '.join(result.quality.reasons)} (the model's output, "
                      f"for testing only: {result.display_name} {result.confidence:.1%}) {timing}", flush=True)
    classifier.close()
    return EXIT_FAILED if failures else EXIT_OK


def _write_saliency(classifier, image, folder: Path, image_path: str, written: set[str]) -> str:
    stem, number = Path(image_path).stem, 1
    name = f"{stem}.saliency.png"
    while name in written:  # the same file name from another folder
        number += 1
        name = f"{stem}-{number}.saliency.png"
    written.add(name)
    target = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target.write_bytes(classifier.saliency(image).png())
    except OSError as exc:
        raise EdgeError(f"cannot write the saliency overlay {target}: {exc.strerror or exc}") from None
    return str(target)


def _emit_error(as_json: bool, image: str, message: str) -> None:
    if as_json:
        print(json.dumps({"image": image, "error": message}), flush=True)
    else:
        print(f"edge: {message}", file=sys.stderr, flush=True)


# --- run ------------------------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from edge.daemon import Daemon
    from edge.mqtt.remote_config import with_overlay

    settings = with_overlay(_settings(args))  # settings an administrator changed over MQTT (set_config)
    logging.getLogger().setLevel(settings.log_level)
    # What the daemon writes (the history's notes, the outbox) is for its own user, as edge.service's UMask
    # makes it; `edge run` from a shell must not leave it readable by everyone.
    os.umask(0o077)
    daemon = Daemon(settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    daemon.run(stop, max_frames=args.max_frames)
    return daemon.exit_code  # 75 after an administrator's restart command, so systemd starts us again


# --- doctor ---------------------------------------------------------------------------------------------

def cmd_doctor(args: argparse.Namespace) -> int:
    from edge.doctor import run_checks

    settings = _device_settings(args)
    checks = run_checks(settings)
    for check in checks:
        print(check.line())
    failed_required = [c for c in checks if c.failed and c.required]
    absent = sum(c.absent and not c.ok for c in checks)
    print(f"{sum(c.ok for c in checks)} passed, {sum(c.failed for c in checks)} failed"
          f"{f', {absent} optional not present' if absent else ''}"
          f"{' (required checks failed)' if failed_required else ''}")
    return EXIT_FAILED if failed_required else EXIT_OK


# --- config ---------------------------------------------------------------------------------------------

def cmd_config(args: argparse.Namespace) -> int:
    import tomli_w

    from edge.config import json_schema, load_settings, settings_as_toml_dict

    if args.config_command == "schema":
        print(json.dumps(json_schema(), indent=2))
    elif args.config_command == "check":
        load_settings(Path(args.file), use_environment=False)  # the file alone, whatever EDGE_… says here
        print(f"{args.file}: ok")
    else:  # what the daemon runs with: the file, the environment and an administrator's changes over MQTT
        from edge.mqtt.remote_config import with_overlay

        print(tomli_w.dumps(settings_as_toml_dict(with_overlay(_settings(args)))), end="")
    return EXIT_OK


# --- model ----------------------------------------------------------------------------------------------

def _check_pack_runs(pack) -> None:
    """Open the pack's CPU model the way the device will: its outputs must match the labels and its input the
    manifest's size. A pack that cannot run is taken back out (its model.json and copied files) and refused."""
    from edge.config import InferenceSettings
    from edge.inference import Classifier

    try:
        Classifier.open(pack, "cpu", InferenceSettings(cpu={"threads": 1})).close()
    except (EdgeError, ValueError) as exc:
        for entry in pack.manifest.files.values():
            (pack.root / entry.path).unlink(missing_ok=True)
        (pack.root / "model.json").unlink(missing_ok=True)
        raise EdgeError(f"the pack would not run, so it was not written: {exc}") from None


def cmd_model(args: argparse.Namespace) -> int:
    from edge.inference.manifest import InputSpec, OutputSpec, add_variant, load_pack, read_labels, write_pack

    if args.model_command == "verify":
        pack = load_pack(Path(args.dir))
        report = pack.verify_all()
        for variant, ok, detail in report:
            print(f"[{'PASS' if ok else 'FAIL'}] {variant}: {detail}")
        return EXIT_OK if all(ok for _, ok, _ in report) else EXIT_FAILED
    if args.model_command == "add-variant":
        pack = add_variant(Path(args.dir), args.variant, Path(args.file))
        print(f"{pack.root}: {args.variant} variant added ({pack.manifest.files[args.variant].sha256[:12]}…)")
        return EXIT_OK
    if args.model_command == "calibrate":
        from edge.config import load_settings
        from edge.paths import HAM10000_IMAGES
        from edge.training.export import recalibrate_pack

        images = args.images or load_settings().shared_dir / HAM10000_IMAGES  # honours EDGE_SHARED_DIR
        try:
            calibration = recalibrate_pack(Path(args.dir), images, args.version)
        except ValueError as exc:
            raise EdgeError(str(exc)) from None
        chosen = calibration["candidates"][str(calibration["test_time_views"])]
        print(f"{args.dir}: version {args.version}, {calibration['test_time_views']} test-time view(s), val balanced "
              f"accuracy {chosen['val_balanced_accuracy_operating_point']:.4f} at the operating point "
              f"(cross-fitted on halves of val: {chosen['val_balanced_accuracy_operating_point_cross_fitted']['mean']:.4f})")
        return EXIT_OK
    files = {"cpu": Path(args.tflite)}
    if args.edgetpu:
        files["coral"] = Path(args.edgetpu)
    if args.onnx:
        files["jetson"] = Path(args.onnx)
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise EdgeError(f"no such model file: {', '.join(missing)}")
    try:
        pack = write_pack(
            Path(args.out), model_files=files, labels=read_labels(Path(args.labels)), name=args.name,
            version=args.version, licence=args.licence,
            input_spec=InputSpec(width=args.size, height=args.size, mean=(args.mean,) * 3, std=(args.std,) * 3),
            output=OutputSpec(activation=args.activation),
        )
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError
        raise EdgeError(f"cannot write the pack: {exc}") from None
    _check_pack_runs(pack)
    print(f"wrote {pack.root / 'model.json'}: {pack.manifest.name} {pack.manifest.version}, "
          f"{len(pack.manifest.labels)} labels, variants {sorted(pack.manifest.files)}")
    return EXIT_OK


# --- bench ----------------------------------------------------------------------------------------------

def cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench import run_bench

    if args.source and not (args.source == "auto" or args.source.startswith("file:")):
        raise EdgeError(f"the benchmark replays files, not {args.source}: pass --source file:PATH")
    settings = _settings(args)
    report = run_bench(settings, frames=args.frames, keras_baseline=not args.no_keras)
    print(json.dumps(report, indent=2) if args.json else report["summary"])
    return EXIT_OK


# --- evaluate -----------------------------------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> int:
    from edge.evaluation.command import run_evaluation

    report = run_evaluation(args, _device_settings(args))  # the pack the device runs (an installed update too)
    print(json.dumps(report, indent=2) if args.json else report["summary"])
    return EXIT_OK


# --- train --------------------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    try:
        from edge.training.command import run_training
    except ImportError as exc:
        raise EdgeError(f"training needs the train extra (./setup.sh --train): {exc}") from None
    return run_training(args, _settings(args))


# --- admin --------------------------------------------------------------------------------------------

def cmd_admin(args: argparse.Namespace) -> int:
    from edge.mqtt import admin

    if args.admin_command == "keygen":
        public, kid = admin.keygen(Path(args.private_key))
        print(f"wrote private key {args.private_key} (keep it secret; mode 0600)", file=sys.stderr)
        print(f"public key (id {kid}) for mqtt.commands.admin_keys:", file=sys.stderr)
        print(public)
        return EXIT_OK
    if args.admin_command == "pack-update":
        from edge.mqtt.signing import load_private_key
        from edge.updates import add_selftest, build_update

        if args.selftest:
            add_selftest(Path(args.pack), [Path(p) for p in args.selftest])
        update = build_update(Path(args.pack), Path(args.out), load_private_key(Path(args.key)), source=args.url)
        print(json.dumps(update))
        return EXIT_OK
    settings = _settings(args)
    if args.admin_command == "watch":
        def show(rows) -> None:
            print("\033[H\033[J" + admin.render_table(rows), flush=True)

        seconds = (args.seconds or 5.0) if args.once else args.seconds  # live mode: until Ctrl-C by default
        rows = admin.watch(settings.mqtt, seconds, on_change=(lambda rows: None) if args.once else show)
        if args.once:
            print(admin.render_table(rows))
        return EXIT_OK
    from edge.mqtt.signing import load_private_key

    command_args = admin.parse_pairs(args.pairs)
    if args.args:
        try:
            extra = json.loads(args.args)
        except json.JSONDecodeError as exc:
            raise EdgeError(f"--args is not valid JSON ({exc.msg}): expected an object, e.g. "
                            "'{\"camera\": {\"fps\": 10}}'") from None
        if not isinstance(extra, dict):
            raise EdgeError("--args: expected a JSON object, e.g. '{\"camera\": {\"fps\": 10}}'")
        command_args = {**extra, **command_args}
    if not args.fleet:
        from edge.mqtt.device import DEVICE_ID_PATTERN

        args.device = (args.device or "").strip().lower()
        if not DEVICE_ID_PATTERN.fullmatch(args.device):
            raise EdgeError("--device: a device id is 16 hex digits (`edge admin watch` lists them)")
    replies = admin.send(settings.mqtt, load_private_key(Path(args.key)), args.name, command_args,
                         device=None if args.fleet else args.device, timeout_s=args.timeout, ttl_s=args.ttl,
                         on_reply=lambda reply: print(json.dumps(reply), flush=True))
    if not replies:
        print(f"edge: no reply within {args.timeout:g} s", file=sys.stderr)
    return EXIT_OK if replies and all(reply.get("ok") for reply in replies) else EXIT_FAILED


# --- parser ---------------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML config file (default: $EDGE_CONFIG)")
    common.add_argument("--model", help="model pack folder (inference.model_dir)")
    common.add_argument("--backend", choices=["auto", "cpu", "coral", "jetson"], help="inference.backend")
    common.add_argument("--threads", type=int, help="inference.cpu.threads")
    common.add_argument("--state-dir", help="state_dir")
    common.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    parser = argparse.ArgumentParser(prog="edge", description="Offline skin-screening aid. Not a diagnosis.")
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", parents=[common], help="classify image files")
    p.add_argument("--json", action="store_true", help="one JSON object per line per image")
    p.add_argument("--saliency", metavar="DIR", help="also write an occlusion-saliency overlay PNG per image")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("evaluate", parents=[common], help="score a model pack on a labelled set")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--split", choices=["train", "val", "test"],
                   help="which split of the pack's split.csv (default val; test only with --final-report)")
    p.add_argument("--images", type=Path, help="images folder for the CSV's image paths (default: the CSV's own "
                   "folder with --csv, else the shared HAM10000 images)")
    p.add_argument("--csv", type=Path, help="instead of the pack's split: a CSV with image,label columns")
    p.add_argument("--folder", type=Path, help="instead of the pack's split: a folder with one sub-folder per label")
    p.add_argument("--no-tta", action="store_true",
                   help="only the plain view (skip the 4-flip and 8-view test-time augmentation)")
    p.add_argument("--limit", type=_positive_int, help="only N images, a seeded sample in proportion to the labels")
    p.add_argument("--final-report", action="store_true",
                   help="score the pack's test split once and write evaluation_test.json and plots into the pack")
    p.add_argument("--force", action="store_true", help="with --final-report: overwrite an existing report")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("run", parents=[common], help="start the daemon")
    p.add_argument("--source", help="auto | none | picamera2 | opencv:0 | opencv:/dev/video2 | gst:PIPELINE | file:PATH")
    p.add_argument("--max-frames", type=int, help="stop after this many frames (demos, tests)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("doctor", parents=[common], help="check cameras, backends, delegates and the model")
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("config", help="show, check or describe the configuration")
    config_sub = p.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser("show", parents=[common], help="print the effective settings as TOML")
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file")
    config_sub.add_parser("schema", help="print the JSON schema of the settings")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("model", help="make or verify model packs")
    model_sub = p.add_subparsers(dest="model_command", required=True)
    verify = model_sub.add_parser("verify", help="check every file of a pack against its sha256")
    verify.add_argument("dir")
    variant = model_sub.add_parser("add-variant", help="add a coral (edgetpu_compiler output) or jetson (ONNX) file")
    variant.add_argument("dir")
    variant.add_argument("variant", choices=["coral", "jetson"])
    variant.add_argument("file")
    calibrate = model_sub.add_parser("calibrate", help="re-fit a trained pack's decision on its val split "
                                     "(test-time views, temperature, operating point, abstention)")
    calibrate.add_argument("dir")
    calibrate.add_argument("--version", required=True, help="the re-fitted pack's new version")
    calibrate.add_argument("--images", type=Path, help="images of split.csv (default: shared HAM10000 images)")
    pack = model_sub.add_parser("pack", help="make a pack from a .tflite file and a labels file")
    pack.add_argument("--tflite", required=True)
    pack.add_argument("--labels", required=True, help="text file, one label per line")
    pack.add_argument("--name", required=True)
    pack.add_argument("--version", required=True)
    pack.add_argument("--licence", required=True)
    pack.add_argument("--size", type=int, default=224)
    pack.add_argument("--mean", type=float, default=127.5)
    pack.add_argument("--std", type=float, default=127.5)
    pack.add_argument("--activation", choices=["softmax", "none"], default="softmax")
    pack.add_argument("--edgetpu", help="the edgetpu_compiler output for the coral backend")
    pack.add_argument("--onnx", help="the ONNX export for the jetson backend")
    pack.add_argument("out")
    p.set_defaults(func=cmd_model)

    p = sub.add_parser("train", parents=[common], help="train a model pack (needs the train extra)")
    from edge.training.command import add_arguments as add_train_arguments

    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", parents=[common], help="per-stage latency and frames/s on a replay source")
    p.add_argument("--frames", type=_positive_int, default=300)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-keras", action="store_true", help="skip the float Keras baseline")
    p.add_argument("--source", help="replay source (default: HAM10000 images in shared_dir)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("admin", help="fleet administration over MQTT: keys, signed commands, live table")
    admin_sub = p.add_subparsers(dest="admin_command", required=True)
    broker = argparse.ArgumentParser(add_help=False)
    broker.add_argument("--config", type=Path, help="TOML config file with an [mqtt] section (default: $EDGE_CONFIG)")
    broker.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    broker.add_argument("--host", dest="mqtt_host", help="mqtt.host")
    broker.add_argument("--port", dest="mqtt_port", type=int, help="mqtt.port")
    keygen = admin_sub.add_parser("keygen", help="make an Ed25519 key pair; prints the public key")
    keygen.add_argument("private_key", metavar="PRIVATE_KEY_FILE", help="written with mode 0600; never overwritten")
    update = admin_sub.add_parser("pack-update", help="archive and sign a model pack; prints the model_update args")
    update.add_argument("pack", metavar="PACK_DIR")
    update.add_argument("--key", required=True, help="the admin's private key file (from keygen)")
    update.add_argument("--out", required=True, help=".tar.gz to write")
    update.add_argument("--url", help="where devices fetch it (default: the absolute path of --out)")
    update.add_argument("--selftest", nargs="+", metavar="IMAGE",
                        help="bundle these images with the labels the pack gives them now, checked on install")
    send = admin_sub.add_parser("send", parents=[broker], help="sign and publish a command, print the replies")
    send.add_argument("--key", required=True, help="the admin's private key file (from keygen)")
    target = send.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", help="device id")
    target.add_argument("--fleet", action="store_true", help="every device (replies until --timeout)")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for replies (default 10)")
    send.add_argument("--ttl", type=float, default=300.0, help="seconds the command stays valid (default 300)")
    send.add_argument("--args", help="arguments as a JSON object")
    send.add_argument("name", metavar="COMMAND", help="status | get_config | set_config | set_log_level | restart | "
                      "purge_local_data | model_update")
    send.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="arguments, e.g. level=DEBUG or "
                      "mqtt.telemetry_interval_s=30 (JSON values)")
    watch = admin_sub.add_parser("watch", parents=[broker], help="live table of devices (status, telemetry)")
    watch.add_argument("--once", action="store_true", help="collect for --seconds, print the table once, exit")
    watch.add_argument("--seconds", type=float, default=None, help="with --once: how long to listen (default 5)")
    p.set_defaults(func=cmd_admin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        quiet_by_default = args.command in ("classify", "config", "model", "doctor", "admin")
        _setup_logging(getattr(args, "log_level", None) or ("WARNING" if quiet_by_default else "INFO"))
        return args.func(args)
    except ConfigError as exc:
        print(f"edge: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except EdgeError as exc:
        print(f"edge: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge classify … | head -1`: the reader has gone, which is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit must not fail again
        return 141


if __name__ == "__main__":
    raise SystemExit(main())

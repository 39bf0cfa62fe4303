"""``edge evaluate``: pick the labelled set, run ``evaluate``, and summarise it in a few lines."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from edge.errors import EdgeError
from edge.evaluation.run import evaluate
from edge.inference import load_pack
from edge.inference.manifest import TEST_TIME_VIEW_COUNTS
from edge.paths import HAM10000_IMAGES

log = logging.getLogger("edge.evaluation")


def labelled_set(args, settings, pack) -> tuple[list[Path], list[str]]:
    if args.folder:
        if not args.folder.is_dir():
            raise EdgeError(f"--folder {args.folder}: not a folder (one sub-folder of images per label)")
        pairs = [(path, sub.name) for sub in sorted(p for p in args.folder.iterdir() if p.is_dir())
                 for path in sorted(sub.rglob("*")) if path.is_file() and not _hidden(path.relative_to(sub))]
        loose = [p.name for p in args.folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        if loose:
            log.warning("%d file(s) directly in %s have no label folder and are not scored: %s", len(loose),
                        args.folder, ", ".join(sorted(loose)[:5]))
    else:
        table = args.csv or pack.root / "split.csv"
        if not Path(table).is_file():
            raise EdgeError(f"no labelled set: {table} not found (pass --csv or --folder)")
        images = args.images or (Path(args.csv).parent if args.csv else settings.shared_dir / HAM10000_IMAGES)
        with open(table, newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets write a BOM
            reader = csv.DictReader(handle)
            reader.fieldnames = [name.strip() for name in reader.fieldnames or ()]
            rows = list(reader)
        needed = {"image", "label"} | (set() if args.csv else {"split"})
        if not needed <= set(reader.fieldnames or ()):
            raise EdgeError(f"{table}: needs the columns {', '.join(sorted(needed))} "
                            f"(it has {', '.join(reader.fieldnames or ()) or 'none'})")
        if not args.csv:
            rows = [row for row in rows if row["split"] == args.split]
        pairs = [(images / row["image"], row["label"]) for row in rows]
    if args.limit:
        pairs = stratified_sample(pairs, args.limit)
    repeated = len(pairs) - len({path for path, _ in pairs})
    if repeated:
        log.warning("%d image(s) are listed more than once and are scored each time", repeated)
    if not pairs:
        raise EdgeError("the labelled set is empty")
    return [p for p, _ in pairs], [label for _, label in pairs]


def _hidden(relative: Path) -> bool:
    """.DS_Store, ._x.jpg, .git/…: files a copy from a Mac or a checkout brings along, not images."""
    return any(part.startswith(".") for part in relative.parts)


def stratified_sample(pairs: list, limit: int, seed: int = 0, label=lambda pair: pair[1]) -> list:
    """``limit`` items drawn at random (seeded) in proportion to their labels (``label(item)``; by default
    ``(path, label)`` pairs), at least one of each label while ``limit`` allows, in their original order: a
    table sorted by label must not give a balanced accuracy, or a training run, over three classes."""
    if limit >= len(pairs):
        return list(pairs)
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, item in enumerate(pairs):
        by_label.setdefault(label(item), []).append(i)
    quotas = {label: max(1, round(limit * len(rows) / len(pairs))) for label, rows in by_label.items()}
    while sum(quotas.values()) > limit:  # rounding up the small classes: take back from the largest
        largest = max(quotas, key=lambda label: (quotas[label], label))
        if quotas[largest] == 1:
            break
        quotas[largest] -= 1
    chosen = [i for label, rows in by_label.items() for i in rng.permutation(rows)[: quotas[label]]]
    return [pairs[i] for i in sorted(chosen)[:limit]]


FINAL_REPORT = "evaluation_test.json"


def run_evaluation(args, settings) -> dict:
    pack = load_pack(settings.inference.model_dir)
    if args.final_report:
        return final_report(args, settings, pack)
    args.split = args.split or "val"
    if args.split == "test" and not (args.csv or args.folder):
        raise EdgeError("the test split is scored once per pack, with --final-report (its numbers are in "
                        f"{FINAL_REPORT} in the pack); compare models on --split val")
    paths, labels = labelled_set(args, settings, pack)
    report = evaluate(pack, paths, labels, view_options=(1,) if args.no_tta else TEST_TIME_VIEW_COUNTS,
                      threads=settings.inference.cpu.threads, quality=settings.quality)
    report["summary"] = summary(report)
    return report


def final_report(args, settings, pack) -> dict:
    """Score the pack's held-out test split once and write the numbers and plots into the pack.

    The test split must stay untouched while models are compared (on val), so this refuses to run twice.
    """
    target = pack.root / FINAL_REPORT
    if target.exists() and not args.force:
        raise EdgeError(f"{target} exists: the test split is reported once (use --force to overwrite)")
    if args.split not in (None, "test") or args.csv or args.folder or args.limit:
        raise EdgeError("--final-report scores the whole test split of the pack's split.csv, nothing else")
    args.split = "test"
    paths, labels = labelled_set(args, settings, pack)
    raw: dict = {}
    report = evaluate(pack, paths, labels, threads=settings.inference.cpu.threads, raw=raw, quality=settings.quality)
    report["summary"] = summary(report)
    import json

    target.write_text(json.dumps(report, indent=2) + "\n")
    from edge.training.report import write_test_plots

    write_test_plots(pack.root, raw["int8"], pack)
    return report


def summary(report: dict) -> str:
    lines = [f"{report['model']['name']} {report['model']['version']}: {report['n_images']} images"]
    for variant, by_views in report["variants"].items():
        if "error" in by_views:
            lines.append(f"{variant}: {by_views['error']}")
            continue
        for views, r in by_views.items():
            op, am = r["operating_point"], r["argmax"]
            mel = (f", mel sens {op['mel_sensitivity']:.3f} spec {op['mel_specificity']:.3f}"
                   if op.get("mel_sensitivity") is not None else "")
            shipped = "*" if views == report.get("shipped") else " "
            lines.append(f"{variant:<5} {views:<8}{shipped} balanced acc {op['balanced_accuracy']:.4f} (argmax "
                         f"{am['balanced_accuracy']:.4f}), macro AUROC {op['macro_auroc']}, ECE {op['ece']:.4f}"
                         f"{mel}, abstain {r['abstain_rate']:.1%} (counted as misses: "
                         f"{r['balanced_accuracy_unsure_counted_wrong']:.4f}), invoke {r['invoke_ms']:.2f} ms")
    lines.append(f"* shipped test-time views: {report.get('shipped')}")
    gate = report.get("quality_gate")
    if gate and gate["refused"]:
        lines.append(f"the quality gate would send back {gate['refused']} image(s) ({gate['rate']:.1%}) for a retake: "
                     f"{', '.join(f'{k} {v}' for k, v in gate['by_reason'].items())}; they are scored anyway")
    lines.append(f"scoring: {report['scoring']}")
    return "\n".join(lines)

"""``edge train``: read a labelled set, split it by group, train, and write the model pack."""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path

from edge.errors import EdgeError
from edge.evaluation.command import stratified_sample
from edge.training.data import hold_out_fold, read_csv_dataset, read_folder_dataset, split_by_group, write_split
from edge.training.train import TrainConfig

log = logging.getLogger("edge.train")


def add_arguments(parser) -> None:
    data = parser.add_argument_group("data (default: HAM10000 in shared_dir)")
    data.add_argument("--csv", type=Path, help="metadata CSV (default: shared HAM10000_metadata.csv)")
    data.add_argument("--images", type=Path, help="folder of the CSV's images")
    data.add_argument("--folder", type=Path, help="instead of a CSV: a folder with one sub-folder per label")
    data.add_argument("--image-column", default="image_id")
    data.add_argument("--label-column", default="dx")
    data.add_argument("--group-column", default="lesion_id", help="images of one group never straddle splits")
    data.add_argument("--limit", type=int,
                      help="use only this many images, a seeded sample of every label (smoke tests)")
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, help="model pack folder to write (default: inference.model_dir)")
    run.add_argument("--work", type=Path, help="checkpoints (default: state_dir/train/<pack name>)")
    run.add_argument("--name", default="ham10000-mobilenetv2-int8")
    run.add_argument("--version", default="1.0.0")
    run.add_argument("--licence", default="CC-BY-NC-4.0 (inherited from the HAM10000 training data)")
    run.add_argument("--no-progress", action="store_true")
    for f in fields(TrainConfig):
        if f.type in ("int", "float"):
            run.add_argument("--" + f.name.replace("_", "-"), type=int if f.type == "int" else float, default=f.default)
    run.add_argument("--teacher", type=Path, action="append", default=[], metavar="PACK",
                     help="a finished model pack to distil from (repeat for an ensemble); needs --distill > 0")
    run.add_argument("--batchnorm", choices=("identity", "recalibrated"), default=TrainConfig.batchnorm,
                     help="identity: BatchNorm frozen as the folded ImageNet biases; recalibrated: real BatchNorm "
                          "set from training-image statistics, trained with the rest")
    run.add_argument("--color-constancy", choices=("none", "shades_of_gray"), default=TrainConfig.color_constancy,
                     help="shades_of_gray: neutralise the light's colour of every crop, in training and on the device")


def run_training(args, settings) -> int:
    from edge.training.train import train

    if args.folder:
        samples = read_folder_dataset(args.folder)
    else:
        ham = settings.shared_dir / "data" / "ham10000"
        samples = read_csv_dataset(args.csv or ham / "HAM10000_metadata.csv", args.images or ham / "images",
                                   image_column=args.image_column, label_column=args.label_column,
                                   group_column=args.group_column or None)
    if args.limit:  # a smoke test: a seeded sample of every label, not the first rows of a sorted table
        samples = stratified_sample(samples, args.limit, label=lambda sample: sample.label)
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)
                            if f.type in ("int", "float")}, batchnorm=args.batchnorm,
                         color_constancy=args.color_constancy)
    labels = sorted({s.label for s in samples})
    split = split_by_group(samples, val=config.val_fraction, test=config.test_fraction, seed=config.seed)
    if config.train_folds:
        try:
            split = hold_out_fold(split, config.train_folds, config.train_fold, config.seed)
        except ValueError as exc:
            raise EdgeError(str(exc)) from None
    work = args.work or settings.state_dir / "train" / args.name
    work.mkdir(parents=True, exist_ok=True)
    write_split(split, work / "split.csv")
    log.info("split by %s: %s", args.group_column, {k: len(v) for k, v in split.items()})
    pretrained = settings.shared_dir / "pretrained" / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
    teacher_p = None
    if args.teacher or config.distill > 0:
        if not (args.teacher and config.distill > 0):
            raise EdgeError("distillation needs both --teacher PACK and --distill > 0")
        from edge.training.distill import teacher_probabilities

        teacher_p, config.teachers = teacher_probabilities(args.teacher, split["train"], labels,
                                                           split["val"] + split["test"], config.distill_temperature,
                                                           out_of_fold=bool(config.distill_out_of_fold))
    model, state = train(config, split, labels, work, pretrained, progress=not args.no_progress, teacher_p=teacher_p)
    from edge.training.export import finish_pack

    out = args.out or settings.inference.model_dir
    finish_pack(model, config, split, labels, work, out, name=args.name, version=args.version, licence=args.licence,
                history=state.history)
    return 0

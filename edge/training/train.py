"""``edge train``: fine-tune ImageNet MobileNetV2 on a labelled image set, on 2 CPU cores, in under an hour.

The recipe, and why:

* **160 px input.** Measured on 2 cores (batch 32): a full fine-tune runs at 28 images/s at 160 px versus 14
  at 224 px, and HAM10000's images are 200x150, so 224 px would only upsample them further.
* **Square or whole-frame input** (``--input-height``, 0 by default: square). A square model sees the
  central square of a frame and drops its sides (a quarter of a 4:3 frame); with ``--input-size 192
  --input-height 144`` the model sees the whole 4:3 frame (the pack's crop is ``center``: the largest central
  rectangle of the model's aspect ratio). A non-square input has no 90-degree rotations in training and no
  8-view (transposed) test-time augmentation.
* **Frozen-backbone warm-up, then fine-tuning.** By default every block trains; the shipped pack trains
  blocks 3-16 only (``--trainable-from-block 3``), because fine-tuned early blocks lose ~6 points of
  balanced accuracy in full-integer int8 (measured with identity and with recalibrated BatchNorm; see the
  pack's MODEL_CARD.md). BatchNorm layers are identities carrying the folded ImageNet biases and stay in
  inference mode (see ``backbone.py``), unless ``--batchnorm recalibrated`` makes them real BN layers.
* **Weight averaging** (``--average-last-epochs N``, off by default): the mean of the last N fine-tuning
  epochs' weights, kept only if it beats the best single epoch on val (see ``_maybe_use_average``).
* **Class imbalance** (nv is 67 %): each epoch samples images with probability proportional to
  ``1/sqrt(n_class)`` (classes appear in proportion to ``sqrt(n_class)``) *and* weights the loss by
  ``1/sqrt(n_class)``: balanced in expectation, without repeating the 115 dermatofibroma images 40 times
  per epoch as full oversampling would.
* **Augmentation for dermoscopy:** random crops of the input's shape (``--crop-min``-100 % of the largest
  one that fits, anywhere), horizontal and vertical flips, 90-degree rotations for a square input (lesions
  have no up), brightness/contrast/saturation
  jitter (devices and lighting differ); optionally a random gain per colour channel (``--channel-gain G``:
  each of R, G, B times ``exp(U(-G, G))``, the tint of another lamp or white balance) and mixup of image
  pairs (``--mixup``).
* **Colour constancy** (``--color-constancy shades_of_gray``, off by default): every crop the model sees,
  in training and on the device, is put under a neutral light first (``edge.vision.color``), so the model
  learns lesions rather than one clinic's dermatoscope tint.
* **Distillation** (``--teacher PACK --distill W``, off by default): targets blend the label with finished
  packs' probabilities, to put an ensemble's gain into one model (see ``distill.py``).
* **Model selection on val balanced accuracy**, never on the test split, which is only read by ``evaluate``.

Checkpoints after every epoch (model, optimiser and sampler state) let an interrupted run resume where it
stopped. Seeds are fixed; thread scheduling on CPU can still change the last digits between runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.errors import EdgeError
from edge.evaluation.metrics import balanced_accuracy
from edge.inference.manifest import InputSpec
from edge.training.data import Sample, class_counts
from edge.vision.color import DEFAULT_POWER, ILLUMINANT_FLOOR, shades_of_gray
from edge.vision.preprocess import crop_resize

log = logging.getLogger("edge.train")
BN_MOMENTUM = 0.99  # recalibrated BatchNorm's moving averages (see recalibrate_batchnorm)


@dataclass
class TrainConfig:
    input_size: int = 160  # the input's width (and height, for a square input)
    input_height: int = 0  # 0: a square input; else the input is input_size wide and this high (see above)
    batch_size: int = 32
    warmup_epochs: int = 2
    finetune_epochs: int = 10
    warmup_lr: float = 1e-3
    finetune_lr: float = 3e-4
    weight_decay: float = 1e-5
    dropout: float = 0.3
    label_smoothing: float = 0.0
    bn_affine_trainable: int = 0  # 1: BatchNorm gamma/beta learn (still in inference mode, moving stats fixed)
    trainable_from_block: int = 0  # fine-tune blocks >= this (0: all); earlier blocks keep ImageNet weights
    batchnorm: str = "identity"  # "identity": frozen, inference mode; "recalibrated": real BN, trained (below)
    average_last_epochs: int = 0  # >0: also try the mean of the last N fine-tuning epochs' weights (see below)
    crop_min: float = 0.8  # random square crops take this to 100 % of the image's short side
    channel_gain: float = 0.0  # >0: each crop's R, G, B are scaled by exp(U(-g, g)), independently
    mixup: float = 0.0  # >0: mixup (Zhang et al. 2018) of each batch with itself reversed, lambda ~ Beta(a, a)
    distill: float = 0.0  # >0: weight of the teacher packs' probabilities in each target (see distill.py)
    distill_temperature: float = 1.0  # the teachers' temperatures are multiplied by this (>1 softens them)
    teachers: list = field(default_factory=list)  # provenance of the teacher packs (set by the command)
    distill_out_of_fold: int = 0  # 1: each image's target uses only teachers that never trained on it
    train_folds: int = 0  # >1: leave fold train_fold of the train split's lesions out (to train a teacher)
    train_fold: int = 0
    seed: int = 1234
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    representative_images: int = 300
    load_short_side: int = 160
    color_constancy: str = "none"  # "shades_of_gray": neutralise the light's colour of every crop (see above)
    extra: dict = field(default_factory=dict)


def setup_tensorflow(seed: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    return keras, tf


# --- images -----------------------------------------------------------------------------------------------

def load_image(path: Path, short_side: int) -> np.ndarray:
    """RGB, resized so the short side is ``short_side`` and the long side at most 4:3 (centre-cropped)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    height, width = rgb.shape[:2]
    scale = short_side / min(height, width)
    rgb = cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    height, width = rgb.shape[:2]
    max_long = round(short_side * 4 / 3)
    if width > max_long:
        left = (width - max_long) // 2
        rgb = rgb[:, left:left + max_long]
    if height > max_long:
        top = (height - max_long) // 2
        rgb = rgb[top:top + max_long]
    return np.ascontiguousarray(rgb)


def load_images(samples: list[Sample], short_side: int) -> list[np.ndarray]:
    started = time.monotonic()
    images = [load_image(s.path, short_side) for s in samples]
    log.info("loaded %d images in %.0f s", len(images), time.monotonic() - started)
    return images


def input_shape(config: TrainConfig) -> tuple[int, int]:
    """(height, width) of the model's input."""
    return config.input_height or config.input_size, config.input_size


def input_spec(config: TrainConfig) -> InputSpec:
    """How the device turns a frame into this model's input: the pack's ``input`` (mean/std are the defaults,
    ``to_model_input``'s scaling)."""
    height, width = input_shape(config)
    return InputSpec(width=width, height=height, crop="center_square" if width == height else "center",
                     color_constancy=config.color_constancy)


def device_view(image: np.ndarray, config: TrainConfig) -> np.ndarray:
    """What the device feeds the model: its crop of ``image``, resized, by ``edge.vision.preprocess`` itself."""
    return crop_resize(image, input_spec(config))


def to_model_input(images_uint8: np.ndarray) -> np.ndarray:
    return images_uint8.astype(np.float32) / 127.5 - 1.0


def model_inputs(images, config: TrainConfig) -> np.ndarray:
    """(n, height, width, 3) float inputs for ``images``: what the device feeds the model (``Preprocessor``)."""
    def view(image: np.ndarray) -> np.ndarray:
        crop = device_view(image, config)
        return shades_of_gray(crop) if config.color_constancy == "shades_of_gray" else crop

    return to_model_input(np.stack([view(image) for image in images]))


def sample_model_inputs(images: list[np.ndarray], config: TrainConfig, count: int, seed: int) -> np.ndarray:
    """Up to ``count`` of ``images``, drawn without replacement (seeded), as the model sees them at run time."""
    chosen = np.random.default_rng(seed).choice(len(images), size=min(count, len(images)), replace=False)
    return model_inputs([images[i] for i in chosen], config)


def shades_of_gray_tf(tf, x, power: float = DEFAULT_POWER):
    """``edge.vision.color.shades_of_gray`` for one float image in [0, 1], in the input pipeline's graph."""
    estimate = tf.maximum(tf.pow(tf.reduce_mean(tf.pow(x, power), axis=[0, 1]), 1.0 / power),
                          ILLUMINANT_FLOOR / 255.0)
    gains = tf.norm(estimate) / (np.sqrt(3.0).astype(np.float32) * estimate)
    return tf.clip_by_value(x * gains, 0.0, 1.0)


# --- sampling and augmentation ------------------------------------------------------------------------------

def sampling_plan(labels_idx: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image sampling probability and per-class loss weight, both ~ 1/sqrt(n_class)."""
    counts = np.bincount(labels_idx, minlength=n_classes).astype(np.float64)
    inv_sqrt = 1.0 / np.sqrt(np.maximum(counts, 1))
    probability = inv_sqrt[labels_idx]
    probability /= probability.sum()
    sampled_share = counts * inv_sqrt / (counts * inv_sqrt).sum()  # class share after sampling
    weights = inv_sqrt / (sampled_share * inv_sqrt).sum()  # mean weight 1 under the sampled mix
    return probability, weights.astype(np.float32)


def make_train_dataset(tf, images, labels_idx, targets, probability, class_weights, config: TrainConfig,
                       epoch_seed: int, steps: int):
    """One epoch of (augmented image, target distribution, loss weight). ``targets`` (n, k) is one-hot, or
    blended with teachers' probabilities when distilling; the loss weight follows the image's own label."""
    rng = np.random.default_rng(epoch_seed)
    order = rng.choice(len(images), size=steps * config.batch_size, replace=True, p=probability)

    def generator():
        for index in order:
            yield images[index], targets[index], class_weights[labels_idx[index]]

    n_classes = len(class_weights)
    signature = (tf.TensorSpec((None, None, 3), tf.uint8), tf.TensorSpec((n_classes,), tf.float32),
                 tf.TensorSpec((), tf.float32))
    height, width = input_shape(config)
    aspect = width / height
    seed_base = epoch_seed * 1_000_003

    def augment(index, image, target, weight):
        seeds = tf.stack([tf.cast(seed_base, tf.int64), index])
        s = lambda k: tf.random.experimental.stateless_split(seeds, 8)[k]  # noqa: E731
        shape = tf.shape(image)
        scale = tf.random.stateless_uniform((), s(0), config.crop_min, 1.0)
        if height == width:
            short = tf.minimum(shape[0], shape[1])
            rows = cols = tf.cast(tf.cast(short, tf.float32) * scale, tf.int32)
        else:  # the largest rectangle of the input's aspect that fits (as the device's crop), scaled
            fit = tf.minimum(tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32) / aspect)
            rows = tf.minimum(tf.cast(fit * scale, tf.int32), shape[0])
            cols = tf.minimum(tf.cast(fit * aspect * scale, tf.int32), shape[1])
        crop = tf.image.stateless_random_crop(image, tf.stack([rows, cols, 3]), s(1))
        x = tf.image.resize(tf.cast(crop, tf.float32), (height, width), antialias=True) / 255.0
        if config.color_constancy == "shades_of_gray":
            x = shades_of_gray_tf(tf, x)
        if config.channel_gain > 0:
            tint = tf.random.experimental.stateless_fold_in(seeds, 8)
            x = x * tf.exp(tf.random.stateless_uniform((3,), tint, -config.channel_gain, config.channel_gain))
        x = tf.image.stateless_random_flip_left_right(x, s(2))
        x = tf.image.stateless_random_flip_up_down(x, s(3))
        if height == width:  # a quarter turn would not keep a non-square input's shape
            x = tf.image.rot90(x, tf.random.stateless_uniform((), s(4), 0, 4, dtype=tf.int32))
        x = tf.image.stateless_random_brightness(x, 0.1, s(5))
        x = tf.image.stateless_random_contrast(x, 0.85, 1.15, s(6))
        x = tf.image.stateless_random_saturation(x, 0.85, 1.15, s(7))
        x = tf.clip_by_value(x, 0.0, 1.0) * 2.0 - 1.0
        return x, target, weight

    dataset = tf.data.Dataset.from_generator(generator, output_signature=signature).enumerate()
    dataset = dataset.map(lambda i, t: augment(i, *t), num_parallel_calls=2)
    dataset = dataset.batch(config.batch_size)
    if config.mixup > 0:
        alpha = float(config.mixup)

        def mix(batch_index, x, y, w):
            seeds = tf.stack([tf.cast(seed_base + 7, tf.int64), batch_index])
            pair = tf.random.experimental.stateless_split(seeds, 2)
            g1, g2 = pair[0], pair[1]
            a = tf.random.stateless_gamma((), g1, alpha)
            lam = a / (a + tf.random.stateless_gamma((), g2, alpha))  # Beta(alpha, alpha)
            lam = tf.maximum(lam, 1.0 - lam)  # the first image dominates: its weight decides the loss weight
            return (lam * x + (1 - lam) * tf.reverse(x, [0]), lam * y + (1 - lam) * tf.reverse(y, [0]),
                    lam * w + (1 - lam) * tf.reverse(w, [0]))

        dataset = dataset.enumerate().map(lambda i, t: mix(i, *t), num_parallel_calls=2)
    return dataset.prefetch(2)


# --- model --------------------------------------------------------------------------------------------------

def build_model(keras, config: TrainConfig, n_classes: int, pretrained: Path):
    from edge.training.backbone import build_backbone

    height, width = input_shape(config)
    backbone, _ = build_backbone(pretrained, height, width)
    inputs = keras.Input((height, width, 3), name="image")
    # identity BatchNorm must never see batch statistics; recalibrated BatchNorm trains like any BN
    features = backbone(inputs, training=False) if config.batchnorm == "identity" else backbone(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    dropped = keras.layers.Dropout(config.dropout, name="dropout")(pooled)
    logits = keras.layers.Dense(n_classes, name="logits")(dropped)
    return keras.Model(inputs, logits, name="skin_mobilenetv2"), backbone


def block_index(layer_name: str) -> int:
    """MobileNetV2 block of a Keras layer: Conv1 and block 0 ('expanded_conv') are 0, 'block_N_*' is N,
    the final 1x1 conv ('Conv_1', 'out_relu') is 17."""
    if layer_name.startswith("block_"):
        return int(layer_name.split("_")[1])
    return 17 if layer_name.startswith(("Conv_1", "out_relu")) else 0


def set_backbone_trainable(keras, backbone, trainable: bool, bn_affine: bool = False, from_block: int = 0,
                           bn_trains: bool = False) -> None:
    """With identity BatchNorm the backbone runs in inference mode (called with ``training=False``), so BN
    keeps its identity statistics; with ``bn_affine`` its gamma/beta (the folded ImageNet biases) still learn.
    With recalibrated BatchNorm (``bn_trains``) BN layers train normally: batch statistics, moving averages.
    Blocks before ``from_block`` keep their ImageNet weights, which quantise to int8 well."""
    backbone.trainable = trainable
    for layer in backbone.layers:
        if block_index(layer.name) < from_block:
            layer.trainable = False
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = trainable and (bn_affine or bn_trains)


def recalibrate_batchnorm(keras, backbone, images: np.ndarray, batch_size: int = 32) -> None:
    """Turn the identity BatchNorm layers into real ones *without changing what the network computes*.

    The ImageNet TFLite file has BatchNorm folded into the convolutions, so each BN starts as identity + bias
    and the activations it sees are far from zero-mean, unit-variance. Training such a BN with batch
    statistics would renormalise everything at step one and wreck the pretrained features. Instead, measure
    each BN input's per-channel mean and variance on training images and set
    ``moving_mean = mean, moving_variance = var, gamma = sqrt(var + eps), beta = bias + mean``: in inference
    mode that is still exactly ``x + bias``, and in training mode (batch statistics close to the measured
    ones) nearly so. Full fine-tuning then has normalised activations, as the network was trained with.

    Momentum goes from Keras's 0.999 to 0.99: with ~220 steps per epoch the moving statistics would
    otherwise trail the changing weights by ~4 epochs, and val (inference mode) fell from 0.55 to 0.41
    balanced accuracy in the first fine-tuning epoch while the training loss improved.
    """
    bns = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    probe = keras.Model(backbone.inputs, [bn.input for bn in bns])
    sums = [np.zeros(bn.input.shape[-1], np.float64) for bn in bns]
    squares = [np.zeros_like(total) for total in sums]
    counts = [0] * len(bns)  # positions seen per layer (spatial sizes differ)
    for start in range(0, len(images), batch_size):
        outputs = probe(images[start:start + batch_size], training=False)
        for i, output in enumerate(outputs):
            values = np.asarray(output, np.float64).reshape(-1, output.shape[-1])
            sums[i] += values.sum(axis=0)
            squares[i] += np.square(values).sum(axis=0)
            counts[i] += values.shape[0]
    for bn, total, square, n in zip(bns, sums, squares, counts):
        mean = total / n
        variance = np.maximum(square / n - mean ** 2, 0.0)
        gamma, beta, _, _ = bn.get_weights()  # gamma 1, beta the folded bias
        bn.set_weights([np.sqrt(variance + bn.epsilon).astype(np.float32), (beta + mean).astype(np.float32),
                        mean.astype(np.float32), variance.astype(np.float32)])
        bn.momentum = BN_MOMENTUM
    log.info("BatchNorm recalibrated on %d training images (%d layers)", len(images), len(bns))


# --- the run ------------------------------------------------------------------------------------------------

RUN_FILE = "run.json"
# Settings added after runs were first fingerprinted: left out at their default, so a work folder made before
# one existed still resumes (its run trained exactly as the default does).
ADDED_LATER = frozenset({"input_height"})


def run_fingerprint(config: TrainConfig, labels: list[str], split: dict[str, list[Sample]]) -> str:
    """What makes two runs the same run: settings, labels and the exact split (image paths per part)."""
    parts = {name: sorted(str(s.path) for s in samples) for name, samples in split.items()}
    settings = {key: value for key, value in asdict(config).items()
                if not (key in ADDED_LATER and value == TrainConfig.__dataclass_fields__[key].default)}
    blob = json.dumps({"config": settings, "labels": list(labels), "split": parts}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def check_same_run(work_dir: Path, config: TrainConfig, labels: list[str], split: dict[str, list[Sample]]) -> None:
    """A work folder resumes only the run that made it: another run (other data, labels or settings, e.g. a
    --limit smoke test, or another pack under the default --work) must not pick up its weights."""
    fingerprint = run_fingerprint(config, labels, split)
    record = work_dir / RUN_FILE
    if (work_dir / "state.json").exists():
        if not record.exists():
            log.warning("%s has no %s (made before runs were recorded): resuming without checking it is "
                        "the same run", work_dir, RUN_FILE)
        elif json.loads(record.read_text()).get("fingerprint") != fingerprint:
            raise EdgeError(f"{work_dir} holds another training run (different data, labels or settings): "
                            "pass a new --work folder, or delete this one to start over")
    record.write_text(json.dumps({"fingerprint": fingerprint, "labels": list(labels)}, indent=2))


@dataclass
class RunState:
    phase: str = "warmup"
    epoch: int = 0  # epochs completed within the phase
    best_val_bacc: float = -1.0
    averaged_epochs: int = 0  # fine-tuning epochs summed into average.npz so far
    history: list = field(default_factory=list)


def train(config: TrainConfig, split: dict[str, list[Sample]], labels: list[str], work_dir: Path,
          pretrained: Path, progress: bool = True, teacher_p: np.ndarray | None = None):
    """Train (or resume) in ``work_dir``; return the best Keras model by val balanced accuracy.

    ``teacher_p`` (n_train, k): teacher packs' probabilities, blended into the targets by ``config.distill``."""
    from edge.training.distill import training_targets

    work_dir.mkdir(parents=True, exist_ok=True)
    check_same_run(work_dir, config, labels, split)
    keras, tf = setup_tensorflow(config.seed)
    (work_dir / "train_config.json").write_text(json.dumps(asdict(config), indent=2))
    label_index = {label: i for i, label in enumerate(labels)}
    train_y = np.array([label_index[s.label] for s in split["train"]], dtype=np.int32)
    val_y = np.array([label_index[s.label] for s in split["val"]], dtype=np.int32)
    log.info("train %s, val %s", dict(zip(labels, class_counts(split["train"], labels).tolist())),
             dict(zip(labels, class_counts(split["val"], labels).tolist())))
    train_images = load_images(split["train"], config.load_short_side)
    val_x = model_inputs(load_images(split["val"], config.load_short_side), config)
    probability, class_weights = sampling_plan(train_y, len(labels))
    targets = training_targets(train_y, len(labels), teacher_p, config.distill)
    log.info("loss weight per class: %s", dict(zip(labels, np.round(class_weights, 2).tolist())))
    steps = len(train_images) // config.batch_size

    state_path, resume_weights = work_dir / "state.json", work_dir / "resume.weights.h5"
    best_weights = work_dir / "best.weights.h5"
    resumable = state_path.exists() and resume_weights.exists()
    state = RunState(**json.loads(state_path.read_text())) if resumable else RunState()
    model, backbone = build_model(keras, config, len(labels), pretrained)
    if config.batchnorm == "recalibrated":
        recalibrate_batchnorm(keras, backbone, sample_model_inputs(train_images, config, 512, config.seed))
    elif config.batchnorm != "identity":
        raise ValueError(f"batchnorm must be 'identity' or 'recalibrated', not {config.batchnorm!r}")
    phases = [("warmup", config.warmup_epochs), ("finetune", config.finetune_epochs)]
    for phase, epochs in phases:
        if phases.index((phase, epochs)) < [p for p, _ in phases].index(state.phase):
            continue
        set_backbone_trainable(keras, backbone, phase == "finetune", bool(config.bn_affine_trainable),
                               config.trainable_from_block, bn_trains=config.batchnorm == "recalibrated")
        if phase == "warmup":
            optimizer = keras.optimizers.Adam(config.warmup_lr)
        else:
            schedule = keras.optimizers.schedules.CosineDecay(config.finetune_lr, decay_steps=epochs * steps, alpha=0.01)
            optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
        model.compile(optimizer=optimizer, loss=loss, weighted_metrics=[keras.metrics.CategoricalAccuracy(name="acc")])
        if state.phase == phase and state.epoch > 0:
            model.load_weights(resume_weights)
            _restore_optimizer(optimizer, model, work_dir)
            if state.epoch < epochs:
                log.info("resuming %s at epoch %d/%d", phase, state.epoch + 1, epochs)
            else:
                log.info("%s: all %d epochs were done; finishing the run", phase, epochs)
        elif state.phase == phase and resumable and phase != phases[0][0]:
            # Stopped between phases: the earlier phase's last weights are where this one starts (its
            # optimizer is a new one anyway). Without this, fine-tuning would start from an untrained head.
            model.load_weights(resume_weights)
            log.info("resuming: %s starts from the finished %s", phase, phases[0][0])
        elif state.phase != phase:
            state.phase, state.epoch = phase, 0
        for epoch in range(state.epoch, epochs):
            started = time.monotonic()
            dataset = make_train_dataset(tf, train_images, train_y, targets, probability, class_weights, config,
                                         config.seed * 100 + epoch + (1000 if phase == "finetune" else 0), steps)
            fit = model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=1 if progress else 2)
            val_logits = model.predict(val_x, batch_size=64, verbose=0)
            val_bacc = balanced_accuracy(val_y, val_logits.argmax(1), len(labels))
            record = {"phase": phase, "epoch": epoch + 1, "loss": float(fit.history["loss"][-1]),
                      "acc": float(fit.history["acc"][-1]), "val_balanced_accuracy": val_bacc,
                      "seconds": round(time.monotonic() - started, 1)}
            state.history.append(record)
            log.info("%s epoch %d/%d: loss %.4f, val balanced accuracy %.4f (%.0f s)", phase, epoch + 1, epochs,
                     record["loss"], val_bacc, record["seconds"])
            if val_bacc > state.best_val_bacc:
                state.best_val_bacc = val_bacc
                model.save_weights(best_weights)
            if phase == "finetune" and epoch >= epochs - config.average_last_epochs:
                _add_to_average(model, work_dir, state, epoch + 1)
            state.epoch = epoch + 1
            model.save_weights(resume_weights)
            _save_optimizer(optimizer, work_dir)
            state_path.write_text(json.dumps(asdict(state), indent=2))
        state.phase, state.epoch = ("finetune", 0) if phase == "warmup" else (phase, state.epoch)
        state_path.write_text(json.dumps(asdict(state), indent=2))
    model.load_weights(best_weights)
    if config.average_last_epochs > 0 and state.averaged_epochs > 0:
        _maybe_use_average(keras, model, backbone, config, work_dir, state, train_images, val_x, val_y, len(labels))
    return model, state


# --- weight averaging ---------------------------------------------------------------------------------------
# Averaging the weights of the last fine-tuning epochs (stochastic weight averaging, Izmailov et al. 2018) lands
# in a flatter region than any single epoch; on a val set this small (19 dermatofibromas) it also removes the
# luck of picking the one epoch that happened to score best. Real BatchNorm needs its moving statistics
# re-measured for the averaged weights; the averaged model is kept only if it beats the best epoch on val.

def _add_to_average(model, work_dir: Path, state: RunState, epoch: int) -> None:
    """Add this epoch's weights to the running sum in ``average.npz``, which also lists the epochs summed.

    A run stopped after the sum was saved but before ``state.json`` repeats the epoch on resume; the sum
    already holds a finished version of it, so it is not added twice and the divisor stays right.
    """
    path = work_dir / "average.npz"
    weights = [np.asarray(w, np.float64) for w in model.get_weights()]
    epochs: list[int] = []
    if state.averaged_epochs > 0 and path.exists():  # otherwise any average.npz is left from another run
        saved = np.load(path)
        epochs = saved["epochs"].tolist()
        if epoch in epochs:
            log.info("fine-tuning epoch %d is already in the weight average (the run stopped after adding it)", epoch)
            state.averaged_epochs = len(epochs)
            return
        weights = [w + saved[f"arr_{i}"] for i, w in enumerate(weights)]
    staged = path.with_name("average.next.npz")
    np.savez(staged, *weights, epochs=np.array(epochs + [epoch]))
    staged.replace(path)
    state.averaged_epochs = len(epochs) + 1


def reestimate_batchnorm(keras, backbone, images: np.ndarray, batch_size: int = 32) -> None:
    """Moving mean/variance of every trainable BatchNorm set to their average over ``images`` in training mode
    (momentum ``i/(i+1)`` at batch ``i`` makes the moving average a plain cumulative mean)."""
    bns = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    for i, start in enumerate(range(0, len(images), batch_size)):
        for bn in bns:
            bn.momentum = i / (i + 1)
        backbone(images[start:start + batch_size], training=True)
    for bn in bns:
        bn.momentum = BN_MOMENTUM


def _maybe_use_average(keras, model, backbone, config: TrainConfig, work_dir: Path, state: RunState,
                       train_images, val_x, val_y, n_classes: int) -> None:
    best = model.get_weights()
    saved = np.load(work_dir / "average.npz")
    count = len(saved["epochs"])
    model.set_weights([(saved[f"arr_{i}"] / count).astype(w.dtype) for i, w in enumerate(best)])
    if config.batchnorm == "recalibrated":
        reestimate_batchnorm(keras, backbone,
                             sample_model_inputs(train_images, config, 2048, config.seed + 1))
    val_bacc = balanced_accuracy(val_y, model.predict(val_x, batch_size=64, verbose=0).argmax(1), n_classes)
    keep = val_bacc > state.best_val_bacc
    log.info("mean of the last %d fine-tuning epochs: val balanced accuracy %.4f vs best epoch %.4f -> %s",
             state.averaged_epochs, val_bacc, state.best_val_bacc, "averaged weights" if keep else "best epoch")
    state.history.append({"phase": "average", "epoch": state.averaged_epochs, "val_balanced_accuracy": val_bacc,
                          "kept": keep})
    if not keep:
        model.set_weights(best)


def _save_optimizer(optimizer, work_dir: Path) -> None:
    np.savez(work_dir / "optimizer.npz", *[v.numpy() for v in optimizer.variables])


def _restore_optimizer(optimizer, model, work_dir: Path) -> None:
    path = work_dir / "optimizer.npz"
    if not path.exists():
        return
    optimizer.build(model.trainable_variables)
    saved = np.load(path)
    values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) == len(optimizer.variables):
        for variable, value in zip(optimizer.variables, values):
            variable.assign(value)

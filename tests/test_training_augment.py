"""The training input pipeline (needs the ``train`` extra; skipped without TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")


def _batches(mixup: float, steps: int = 6, targets=None, images=None, **config_fields):
    from edge.training.distill import training_targets
    from edge.training.train import TrainConfig, make_train_dataset, sampling_plan, setup_tensorflow

    _, tf = setup_tensorflow(1)
    rng = np.random.default_rng(0)
    if images is None:
        images = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(64)]
    labels = np.array([i % 3 for i in range(64)], np.int32)
    probability, weights = sampling_plan(labels, 3)
    config = TrainConfig(**{"input_size": 32, "batch_size": 8, "mixup": mixup, "crop_min": 0.6, **config_fields})
    targets = training_targets(labels, 3, None, 0.0) if targets is None else targets
    dataset = make_train_dataset(tf, images, labels, targets, probability, weights, config, epoch_seed=5,
                                 steps=steps)
    return [(x.numpy(), y.numpy(), w.numpy()) for x, y, w in dataset]


def test_without_mixup_targets_are_one_hot_and_inputs_in_range():
    for x, y, _ in _batches(0.0):
        assert x.shape == (8, 32, 32, 3) and x.min() >= -1.0 and x.max() <= 1.0
        assert set(np.unique(y)) == {0.0, 1.0} and np.all(y.sum(axis=1) == 1)


def test_mixup_mixes_pairs_with_the_first_image_dominant():
    batches = _batches(0.2, steps=20)
    mixed = 0
    for x, y, w in batches:
        assert np.allclose(y.sum(axis=1), 1.0, atol=1e-6) and x.min() >= -1.0 and x.max() <= 1.0
        assert np.all(y.max(axis=1) >= 0.5 - 1e-6)
        lam = y.max(axis=1)
        mixed += int(np.any((lam < 0.99) & (lam > 0.5)))
        assert np.all(w > 0)
    assert mixed > 0  # Beta(0.2, 0.2) is mostly near 0 or 1, but not always
    assert _batches(0.2, steps=2)[0][1].tolist() == batches[0][1].tolist()  # seeded: the same epoch, the same mix


def test_distilled_targets_reach_the_batches_unchanged():
    """Each image's blended target travels with it; the loss weight still follows its own label."""
    from edge.training.distill import training_targets

    labels = np.array([i % 3 for i in range(64)], np.int32)
    teacher = np.tile(np.array([[0.2, 0.3, 0.5]], np.float32), (64, 1))
    targets = training_targets(labels, 3, teacher, 0.5)
    seen = set()
    for _, y, _ in _batches(0.0, targets=targets):
        for row in y:
            seen.add(tuple(np.round(row, 4)))
    assert seen <= {tuple(np.round(t, 4)) for t in targets} and len(seen) == 3


def test_training_colour_constancy_is_the_devices(ham_images):
    """The input pipeline's Shades of Gray (TensorFlow) and the device's (edge.vision.color) agree to one
    grey level, so a model trained with --color-constancy sees what the device will feed it."""
    import cv2

    from edge.training.train import TrainConfig, model_inputs, setup_tensorflow, shades_of_gray_tf
    from edge.vision.color import shades_of_gray

    _, tf = setup_tensorflow(1)
    for path in ham_images[:3]:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        graph = shades_of_gray_tf(tf, tf.constant(image, tf.float32) / 255.0).numpy() * 255.0
        assert np.abs(graph - shades_of_gray(image)).max() <= 0.5 + 1e-3  # the device rounds to uint8
        config = TrainConfig(input_size=64, color_constancy="shades_of_gray")
        plain = model_inputs([image], TrainConfig(input_size=64))
        corrected = model_inputs([image], config)
        assert corrected.shape == plain.shape == (1, 64, 64, 3) and not np.allclose(corrected, plain)


def test_channel_gain_tints_each_crop_within_its_range():
    """A grey image stays grey through flips, brightness, contrast and saturation; --channel-gain alone tints
    it, by at most exp(+-g) per channel."""
    grey = [np.full((120, 160, 3), 100, np.uint8) for _ in range(64)]
    for x, _, _ in _batches(0.0, images=grey):
        assert np.allclose(x[..., 0], x[..., 1], atol=1e-5) and np.allclose(x[..., 1], x[..., 2], atol=1e-5)
    spreads = []
    for x, _, _ in _batches(0.0, images=grey, channel_gain=0.2):
        means = (x.mean(axis=(1, 2)) + 1) / 2  # per crop and channel, back on the 0-1 scale
        spreads.extend(np.log(means.max(axis=1) / means.min(axis=1)))
    assert np.mean(np.array(spreads) > 0.02) > 0.9  # nearly every crop is tinted
    # two channels at most exp(0.2) / exp(-0.2) apart, widened by up to 15 % each by the saturation and
    # contrast jitter that follow
    assert max(spreads) <= 0.4 * 1.15 ** 2 + 0.02


def test_a_4_3_input_trains_on_flipped_whole_frames_never_turned():
    """--input-height: crops keep the input's 4:3 shape, and with --crop-min 1 each is the whole frame,
    flipped or not but never turned a quarter (which would not keep the shape)."""
    ramp = np.tile(np.linspace(0, 255, 160).astype(np.uint8)[None, :, None], (120, 1, 3))  # dark left, bright right
    batches = _batches(0.0, images=[ramp] * 64, input_height=24, crop_min=1.0)
    for x, _, _ in batches:
        assert x.shape == (8, 24, 32, 3)
        across, down = np.abs(np.diff(x.mean(axis=(1, 3)), axis=1)), np.abs(np.diff(x.mean(axis=(2, 3)), axis=1))
        assert np.all(across.mean(axis=1) > 20 * down.mean(axis=1) + 1e-3)  # still a left-right ramp
    ends = [np.sign(x[:, :, -1].mean(axis=(1, 2)) - x[:, :, 0].mean(axis=(1, 2))) for x, _, _ in batches]
    assert set(np.concatenate(ends)) == {-1.0, 1.0}  # mirrored left-right some of the time


def test_a_4_3_training_crop_at_full_size_keeps_the_frames_proportions():
    """With --crop-min 1 a 4:3 model trains on full-size 4:3 windows: on a 4:3 image the whole frame (what the
    device feeds it), on a 16:9 image a full-height 4:3 window somewhere across it (random crops go anywhere)
    -- never the whole 16:9 width squeezed, nor a square stretched. Found by correlating each training input
    with the candidate regions of the same noise image (and their flips, which training adds)."""
    import cv2

    def region(image: np.ndarray, top: int, left: int, rows: int, cols: int) -> np.ndarray:
        crop = image[top:top + rows, left:left + cols]
        return cv2.resize(crop, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32)

    def similarity(x: np.ndarray, reference: np.ndarray) -> float:
        views = (reference, reference[:, ::-1], reference[::-1], reference[::-1, ::-1])
        return max(float(np.corrcoef(x.ravel(), view.ravel())[0, 1]) for view in views)

    rng = np.random.default_rng(3)
    for width in (192, 256):  # 4:3 and 16:9, 144 rows
        noise = np.repeat(np.repeat(rng.integers(0, 256, (36, width // 4, 3), dtype=np.uint8), 4, 0), 4, 1)
        windows = [region(noise, 0, left, 144, 192) for left in range(width - 192 + 1)]
        wrong = {"square": region(noise, 0, (width - 144) // 2, 144, 144)}
        if width != 192:  # for a 4:3 image the whole frame is the right answer
            wrong["squeezed"] = region(noise, 0, 0, 144, width)
        for x, _, _ in _batches(0.0, images=[noise] * 64, input_height=24, crop_min=1.0, steps=2):
            for image in x:
                best = max(similarity(image, window) for window in windows)
                assert best > 0.9 and all(similarity(image, w) < best - 0.2 for w in wrong.values()), width


def test_a_4_3_model_takes_the_devices_crop_of_each_image(ham_images):
    """Val and calibration inputs of a 4:3 model are the device's own preprocessing of each image."""
    import cv2

    from edge.inference.manifest import InputSpec
    from edge.training.train import TrainConfig, input_spec, model_inputs
    from edge.vision.preprocess import crop_resize

    config = TrainConfig(input_size=64, input_height=48)
    assert input_spec(config) == InputSpec(width=64, height=48, crop="center")
    image = cv2.cvtColor(cv2.imread(str(ham_images[0])), cv2.COLOR_BGR2RGB)
    x = model_inputs([image], config)
    assert x.shape == (1, 48, 64, 3)
    np.testing.assert_allclose(x[0], crop_resize(image, input_spec(config)).astype(np.float32) / 127.5 - 1.0)

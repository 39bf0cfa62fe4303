"""The training backbone (needs the ``train`` extra; skipped without TensorFlow): the ImageNet weights survive
the TFLite -> Keras mapping, and recalibrating BatchNorm does not change what the network computes."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import IMAGENET_MODEL

keras = pytest.importorskip("keras")


def test_recalibrated_batchnorm_computes_what_the_identity_did(ham_images):
    from edge.training.train import (TrainConfig, build_model, load_image, model_inputs, recalibrate_batchnorm,
                                     setup_tensorflow)

    keras_module, _ = setup_tensorflow(1)
    config = TrainConfig(input_size=96, batchnorm="recalibrated")
    _, backbone = build_model(keras_module, config, 7, IMAGENET_MODEL)
    images = model_inputs([load_image(p, 96) for p in ham_images[:48]], config)
    before = backbone(images[32:], training=False).numpy()
    recalibrate_batchnorm(keras_module, backbone, images[:32])
    after = backbone(images[32:], training=False).numpy()
    assert np.abs(after - before).max() < 1e-2  # ReLU6 outputs in [0, 6]: the same network, up to float error
    bn = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    gamma, _, _, variance = bn.get_weights()
    assert not np.allclose(gamma, 1.0) and np.all(variance >= 0)  # real statistics, not the identity any more


def test_reestimated_batchnorm_statistics_are_the_mean_over_the_images(ham_images):
    """After weight averaging, each trainable BN's moving statistics are re-measured: for the first BN (its
    input does not depend on other BNs) the moving mean must be the exact mean of its input over all images,
    whatever it held before, and the momentum used for training must be restored."""
    from edge.training.train import (BN_MOMENTUM, TrainConfig, build_model, load_image, model_inputs,
                                     recalibrate_batchnorm, reestimate_batchnorm, set_backbone_trainable,
                                     setup_tensorflow)

    keras_module, _ = setup_tensorflow(1)
    config = TrainConfig(input_size=96, batchnorm="recalibrated")
    _, backbone = build_model(keras_module, config, 7, IMAGENET_MODEL)
    images = model_inputs([load_image(p, 96) for p in ham_images[:48]], config)
    recalibrate_batchnorm(keras_module, backbone, images[:16])
    set_backbone_trainable(keras_module, backbone, True, bn_trains=True)
    bn = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    bn.moving_mean.assign(np.full(bn.moving_mean.shape, 123.0, np.float32))
    reestimate_batchnorm(keras_module, backbone, images, batch_size=16)
    probe = keras_module.Model(backbone.inputs, bn.input)
    expected = probe(images, training=False).numpy().mean(axis=(0, 1, 2))
    assert np.asarray(bn.moving_mean) == pytest.approx(expected, abs=1e-4)
    assert bn.momentum == BN_MOMENTUM


def test_weight_average_counts_each_epoch_once_even_after_a_crash(tmp_path):
    """A run that stopped after adding epoch 2 to ``average.npz`` but before saving its state repeats epoch 2
    on resume: the average must still be (epoch 1 + epoch 2) / 2, not count epoch 2 twice."""
    import numpy as np

    from edge.training.train import RunState, _add_to_average

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    state = RunState()
    versions = {}
    for epoch in (1, 2):
        model.set_weights([np.full((2, 1), float(epoch)), np.full((1,), 10.0 * epoch)])
        versions[epoch] = [w.copy() for w in model.get_weights()]
        _add_to_average(model, tmp_path, state, epoch)
    assert state.averaged_epochs == 2
    crashed = RunState(averaged_epochs=1)  # state.json as saved before epoch 2 was added
    model.set_weights([np.full((2, 1), 7.0), np.full((1,), 70.0)])  # epoch 2 again, trained differently
    _add_to_average(model, tmp_path, crashed, 2)
    assert crashed.averaged_epochs == 2
    saved = np.load(tmp_path / "average.npz")
    assert saved["epochs"].tolist() == [1, 2]
    assert np.allclose(saved["arr_0"] / 2, 1.5) and np.allclose(saved["arr_1"] / 2, 15.0)
    fresh = RunState()  # a new run in the same folder ignores the old sum
    _add_to_average(model, tmp_path, fresh, 1)
    assert np.load(tmp_path / "average.npz")["epochs"].tolist() == [1] and fresh.averaged_epochs == 1

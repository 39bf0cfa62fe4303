"""The training backbone (needs the ``train`` extra; skipped without TensorFlow): the ImageNet weights survive
the TFLite -> Keras mapping, and recalibrating BatchNorm does not change what the network computes."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import IMAGENET_MODEL

keras = pytest.importorskip("keras")


def test_recalibrated_batchnorm_computes_what_the_identity_did(ham_images):
    from edge.training.train import (TrainConfig, build_model, center_square, load_image, recalibrate_batchnorm,
                                     setup_tensorflow, to_model_input)

    keras_module, _ = setup_tensorflow(1)
    _, backbone = build_model(keras_module, TrainConfig(input_size=96, batchnorm="recalibrated"), 7, IMAGENET_MODEL)
    images = to_model_input(np.stack([center_square(load_image(p, 96), 96) for p in ham_images[:48]]))
    before = backbone(images[32:], training=False).numpy()
    recalibrate_batchnorm(keras_module, backbone, images[:32])
    after = backbone(images[32:], training=False).numpy()
    assert np.abs(after - before).max() < 1e-2  # ReLU6 outputs in [0, 6]: the same network, up to float error
    bn = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    gamma, _, _, variance = bn.get_weights()
    assert not np.allclose(gamma, 1.0) and np.all(variance >= 0)  # real statistics, not the identity any more

"""ImageNet MobileNetV2 weights from the shared int8 TFLite file, mapped into ``keras.applications.MobileNetV2``.

No weights may be downloaded, so the starting point is ``tf2_mobilenet_v2_1.0_224_ptq.tflite``: its 52
backbone convolutions (batch-norm folded in) are dequantised (per-channel ``(q - zero_point) * scale``)
and copied, in execution order, into the Keras model's 52 Conv2D/DepthwiseConv2D layers. Each folded bias
goes into the following BatchNormalization as ``beta``, with ``gamma = 1``, ``mean = 0`` and
``variance = 1 - epsilon`` so the layer is an exact identity plus bias; those layers stay in inference mode
while fine-tuning. The 53rd convolution is the 1001-way ImageNet classifier, used only to check the mapping.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BACKBONE_CONVS = 52
IMAGENET_MODEL = "tf2_mobilenet_v2_1.0_224_ptq.tflite"


def _dequantize(detail: dict, values: np.ndarray) -> np.ndarray:
    params = detail["quantization_parameters"]
    scales, zero_points, axis = params["scales"], params["zero_points"], params["quantized_dimension"]
    if scales.size == 0:
        return values.astype(np.float32)
    shape = [1] * values.ndim
    shape[axis] = -1
    if scales.size == 1:
        shape = [1] * values.ndim
    return (values.astype(np.float32) - zero_points.reshape(shape)) * scales.reshape(shape).astype(np.float32)


def read_tflite_convs(tflite_path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(op name, float kernel in TFLite layout, float bias) for every convolution, in execution order."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(tflite_path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    convs = []
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the only API that lists ops with their tensors
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        kernel_index, bias_index = op["inputs"][1], op["inputs"][2]
        kernel = _dequantize(details[kernel_index], interpreter.get_tensor(kernel_index))
        bias = _dequantize(details[bias_index], interpreter.get_tensor(bias_index))
        convs.append((op["op_name"], kernel, bias))
    return convs


def build_backbone(tflite_path: Path, height: int, width: int):
    """A Keras MobileNetV2 (no top) for ``height`` x ``width`` inputs carrying the ImageNet weights (the
    convolutions do not depend on the input size); BatchNorm layers frozen as identities."""
    import keras

    model = keras.applications.MobileNetV2(input_shape=(height, width, 3), include_top=False,
                                           weights=None, alpha=1.0)
    convs = read_tflite_convs(tflite_path)
    if len(convs) != BACKBONE_CONVS + 1:
        raise ValueError(f"{tflite_path}: expected {BACKBONE_CONVS + 1} convolutions, found {len(convs)}")
    layers = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    if len(layers) != BACKBONE_CONVS:
        raise ValueError(f"Keras MobileNetV2 has {len(layers)} convolutions, expected {BACKBONE_CONVS}")
    for layer, (op_name, kernel, bias) in zip(layers, convs[:BACKBONE_CONVS]):
        is_depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        if is_depthwise != (op_name == "DEPTHWISE_CONV_2D"):
            raise ValueError(f"layer {layer.name} does not line up with TFLite op {op_name}")
        # TFLite conv [out, h, w, in] and depthwise [1, h, w, c] -> Keras [h, w, in, out] and [h, w, c, 1].
        keras_kernel = kernel.transpose(1, 2, 3, 0)
        layer.set_weights([keras_kernel])
        _bias_into_batchnorm(model, layer, bias)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # identity + bias: keep in inference mode
    head_kernel, head_bias = convs[BACKBONE_CONVS][1], convs[BACKBONE_CONVS][2]
    return model, (head_kernel.reshape(head_kernel.shape[0], -1).T, head_bias)


def _bias_into_batchnorm(model, conv_layer, bias: np.ndarray) -> None:
    """Make the BatchNormalization right after ``conv_layer`` an identity that adds the folded bias."""
    import keras

    index = model.layers.index(conv_layer)
    bn = model.layers[index + 1] if index + 1 < len(model.layers) else None
    if not isinstance(bn, keras.layers.BatchNormalization):
        raise ValueError(f"no BatchNormalization right after {conv_layer.name}")
    gamma, _, mean, variance = bn.get_weights()
    bn.set_weights([np.ones_like(gamma), bias.astype(np.float32), np.zeros_like(mean),
                    np.full_like(variance, 1.0 - bn.epsilon)])

"""The serving network: the U-Net with each batch normalization folded into its convolution.

At inference a batch normalization is a fixed affine map per channel,
``y = (x - mean) * gamma / sqrt(variance + epsilon) + beta``, and the
convolution in front of it is linear, so the two are one convolution with
a rescaled kernel and a bias. :func:`fold_batch_norm` rewrites a trained
model that way for the SavedModel. TensorFlow's graph optimiser already
fuses most of these pairs at run time, so the arithmetic per image barely
changes; what changes is what every worker must load: fewer variables, a
smaller graph, a faster ``tf.saved_model.load`` (figures in
docs/benchmarks.md). The logits move by float rounding only.

Training, fine-tuning and ``model.keras`` keep the unfolded model: folding
is exact only for a batch normalization in inference mode.
"""

from __future__ import annotations

import keras
import numpy as np

from petseg.training.layers import ConcatConv2DTranspose, FusedBatchNormalization

# Batch normalizations folded when they read a convolution's output (not
# subclasses, which may compute something else).
FOLDABLE_BATCH_NORMS = (keras.layers.BatchNormalization, FusedBatchNormalization)
# Convolutions whose output channels a per-channel scale can be folded into
# (exact types, as for the batch normalizations).
FOLDABLE_CONVOLUTIONS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Conv2DTranspose,
    ConcatConv2DTranspose,
)


class FoldedBatchNormalization(keras.layers.Layer):
    """Where a folded batch normalization stood: its convolution now does its work.

    Not ``keras.layers.Identity``: the clone calls it as the batch
    normalization was called, ``mask`` and ``training`` included.
    """

    def call(self, inputs, training=None, mask=None):
        return inputs


def _tensors_read(structure) -> list[tuple[str, int]]:
    """Every tensor a serialized call reads, as ``(producing layer, output index)``.

    Node indices are left out: within one model's config each layer has one
    node here (see :func:`_foldable_pairs`), and a nested model's indices are
    renumbered differently in ``inbound_nodes`` and ``output_layers``.
    """
    if isinstance(structure, dict):
        history = structure.get("config", {}).get("keras_history")
        if structure.get("class_name") == "__keras_tensor__" and history:
            return [(history[0], int(history[2]))]
        return [tensor for value in structure.values() for tensor in _tensors_read(value)]
    if isinstance(structure, (list, tuple)):
        return [tensor for value in structure for tensor in _tensors_read(value)]
    return []


def _foldable_convolution(layer) -> bool:
    return (
        type(layer) in FOLDABLE_CONVOLUTIONS
        and layer.data_format == "channels_last"
        and layer.activation is keras.activations.linear
        # A LoRA-adapted kernel is the sum of three weights, not one to rescale.
        and not getattr(layer, "lora_enabled", False)
    )


def _foldable_pairs(model: keras.Model) -> dict[str, keras.layers.BatchNormalization]:
    """Convolution name -> the batch normalization that alone reads its output.

    The graph is read from the model's public, serialized config: each
    layer's ``inbound_nodes`` name the tensors it reads, ``output_layers``
    the ones the model returns.
    """
    config = model.get_config()
    readers: dict[tuple[str, int], int] = {}
    sources: dict[str, list[tuple[str, int]]] = {}
    outputs = config["output_layers"]
    # A model with one output lists it alone, not in a list of one.
    for name, _, index in [outputs] if isinstance(outputs[0], str) else outputs:
        readers[(name, index)] = readers.get((name, index), 0) + 1
    for entry in config["layers"]:
        if not entry["inbound_nodes"]:
            continue  # An input.
        if len(entry["inbound_nodes"]) != 1:
            # A layer called more than once: its tensors are ambiguous.
            return {}
        sources[entry["name"]] = _tensors_read(entry["inbound_nodes"][0])
        for tensor in sources[entry["name"]]:
            readers[tensor] = readers.get(tensor, 0) + 1
    pairs = {}
    for layer in model.layers:
        if type(layer) not in FOLDABLE_BATCH_NORMS or layer.renorm:
            continue
        source = sources.get(layer.name, [])
        if len(source) != 1 or layer.axis not in (-1, len(layer.input.shape) - 1):
            continue
        producer, index = source[0]
        convolution = model.get_layer(producer)
        if index == 0 and _foldable_convolution(convolution) and readers[source[0]] == 1:
            pairs[convolution.name] = layer
    return pairs


def _folded_weights(convolution, batch_norm) -> list[np.ndarray]:
    """The convolution's kernel and bias with ``batch_norm`` applied to its output."""
    channels = int(batch_norm.moving_mean.shape[0])

    def values(variable, default: float) -> np.ndarray:
        if variable is None:
            return np.full(channels, default)
        return keras.ops.convert_to_numpy(variable).astype(np.float64)

    gamma = values(batch_norm.gamma if batch_norm.scale else None, 1.0)
    beta = values(batch_norm.beta if batch_norm.center else None, 0.0)
    mean = values(batch_norm.moving_mean, 0.0)
    variance = values(batch_norm.moving_variance, 1.0)
    scale = gamma / np.sqrt(variance + batch_norm.epsilon)
    kernel = keras.ops.convert_to_numpy(convolution.kernel).astype(np.float64)
    if isinstance(convolution, keras.layers.DepthwiseConv2D):
        # [h, w, in, multiplier]: output channel c * multiplier + m.
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    elif isinstance(convolution, keras.layers.Conv2DTranspose):
        kernel = kernel * scale[:, None]  # [h, w, out, in]
    else:
        kernel = kernel * scale  # [h, w, in, out]
    bias = values(convolution.bias if convolution.use_bias else None, 0.0)
    return [kernel, (bias - mean) * scale + beta]


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of a functional ``model`` (nested models too) for inference, each
    batch normalization that alone reads a linear convolution's output folded
    into that convolution.

    A folded batch normalization stays in the graph as a
    :class:`FoldedBatchNormalization` that passes its input through, so every
    layer keeps its name and place. Batch normalizations that cannot be folded
    (after an activation, on a tensor something else reads too, renormalized)
    are copied as they are. The copy computes what ``model(x, training=False)``
    does, up to float rounding; do not train it.

    Args:
      model: a functional Keras model, e.g. from :func:`petseg.training.model.build_unet`.

    Returns:
      The folded copy, its weights set.
    """
    pairs = _foldable_pairs(model)
    folded = {batch_norm.name for batch_norm in pairs.values()}

    def clone(layer):
        if isinstance(layer, keras.Model):
            return fold_batch_norm(layer)
        if layer.name in folded:
            # Its own precision policy, not the global one: a float32 model
            # folded under mixed precision must stay float32 throughout.
            return FoldedBatchNormalization(name=layer.name, dtype=layer.dtype_policy)
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.trainable = model.trainable
    for layer in model.layers:
        if isinstance(layer, keras.Model) or layer.name in folded or not layer.weights:
            continue
        if layer.name in pairs:
            weights = _folded_weights(layer, pairs[layer.name])
        else:
            weights = layer.get_weights()
        copy.get_layer(layer.name).set_weights(weights)
    return copy

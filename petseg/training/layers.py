"""Layers of the U-Net that TensorFlow runs faster than Keras' portable versions.

Keras 3 writes batch normalization with backend-neutral ops: a mean, a
variance, then a multiply and an add over the whole activation, each a
separate pass over memory, and as many again for the gradient. TensorFlow's
``FusedBatchNormV3`` does the same arithmetic in one kernel (oneDNN on CPUs,
cuDNN on GPUs), one pass where Keras makes several (figures:
docs/benchmarks.md). :class:`FusedBatchNormalization` is Keras'
layer with that kernel inside: the same weights, the same config, the same
moving-average updates, so models and checkpoints move between the two.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="petseg")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by TensorFlow's fused kernel.

    Takes every argument of the Keras layer. Channels-last 4-D inputs without
    a mask, renormalization or cross-replica synchronization use the fused
    kernel; anything else falls back to the Keras computation, so the layer is
    always correct where it is not faster.
    """

    def _fusable(self, inputs, mask) -> bool:
        axis = self.axis if isinstance(self.axis, int) else None
        return (
            mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and axis in (-1, 3)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        # The kernel takes bfloat16 or float16 activations with float32
        # statistics and computes in float32, as Keras' version does after its upcast.
        if inputs.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            inputs = tf.cast(inputs, tf.float32)
        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, epsilon=self.epsilon, is_training=True
            )
            # The kernel reports the unbiased (Bessel-corrected) variance; Keras
            # keeps the biased one in its moving average.
            count = tf.cast(tf.size(inputs, out_type=tf.int64) // channels, tf.float32)
            variance = variance * (count - 1.0) / count
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                scale,
                offset,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                is_training=False,
            )
        return tf.cast(outputs, self.compute_dtype)


def with_fused_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of a functional ``model`` (nested models too) whose BatchNormalization
    layers are :class:`FusedBatchNormalization`, with every weight copied.

    For models built elsewhere, such as ``keras.applications.MobileNetV2``.
    """

    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return FusedBatchNormalization.from_config(layer.get_config())
        if isinstance(layer, keras.Model):
            return with_fused_batch_norm(layer)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    copy.trainable = model.trainable
    return copy


@keras.saving.register_keras_serializable(package="petseg")
class ConcatConv2DTranspose(keras.layers.Conv2DTranspose):
    """``Conv2DTranspose`` of the channel concatenation of its inputs, never building it.

    A transposed convolution is linear in its input, so over ``concat([x, skip])``
    it equals the sum of one transposed convolution per input, each with its
    slice of the kernel. The kernel is the one a ``Conv2DTranspose`` on the
    concatenation would hold (same shape, same layout, same initialisation),
    so weights move between the two. Two things get cheaper: the
    concatenation is never materialized, and an input that needs no gradient
    (a frozen encoder's skip features) has its gradient convolution pruned
    from the training graph instead of computed and sliced away.

    Takes the arguments of ``keras.layers.Conv2DTranspose`` (channels last);
    call it on a list of tensors, or on one.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.data_format != "channels_last":
            raise ValueError(f"data_format must be channels_last, got {self.data_format!r}")
        # The parent's spec describes one input; a list of them is checked in call().
        self.input_spec = None
        self._input_channels: list[int] = []

    @staticmethod
    def _shapes(input_shape) -> list[tuple]:
        if input_shape and isinstance(input_shape[0], (list, tuple)):
            return [tuple(shape) for shape in input_shape]
        return [tuple(input_shape)]

    def build(self, input_shape):
        shapes = self._shapes(input_shape)
        self._input_channels = [int(shape[-1]) for shape in shapes]
        super().build(shapes[0][:-1] + (sum(self._input_channels),))
        self.input_spec = None

    def call(self, inputs):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        channels = [int(tensor.shape[-1]) for tensor in inputs]
        if channels != self._input_channels:
            raise ValueError(
                f"{self.name} was built for inputs of {self._input_channels} channels, "
                f"got {channels}"
            )
        kernels = tf.split(self.kernel, channels, axis=-1)
        outputs = None
        for tensor, kernel in zip(inputs, kernels, strict=True):
            part = keras.ops.conv_transpose(
                tensor,
                kernel,
                strides=list(self.strides),
                padding=self.padding,
                output_padding=self.output_padding,
                dilation_rate=self.dilation_rate,
                data_format=self.data_format,
            )
            outputs = part if outputs is None else outputs + part
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        shapes = self._shapes(input_shape)
        channels = sum(int(shape[-1]) for shape in shapes)
        return super().compute_output_shape(shapes[0][:-1] + (channels,))

"""Serving a petseg export: reading and loading it, and upsampling its answers.

What the segmentation job's workers and evaluation share. Nothing here
imports Keras, matplotlib or TensorFlow Datasets, and the OpenVINO and ONNX
backends do not import TensorFlow.

- :mod:`petseg.serving.export`: reading ``petseg.json`` and loading the SavedModel's signature
- :mod:`petseg.serving.formats`: serving formats (OpenVINO IR, ONNX, int8) derived from the SavedModel
- :mod:`petseg.serving.backends`: running the export on TensorFlow, OpenVINO or ONNX Runtime
- :mod:`petseg.serving.upsample`: class probabilities at the image's own size, and argmax
"""

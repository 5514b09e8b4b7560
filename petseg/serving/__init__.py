"""Serving a petseg export: reading and loading it, and upsampling its answers.

What the segmentation job's workers and evaluation share. Nothing here
imports Keras, matplotlib or TensorFlow Datasets.

- :mod:`petseg.serving.export`: reading ``petseg.json`` and loading the SavedModel's signature
- :mod:`petseg.serving.upsample`: class probabilities at the image's own size, and argmax
"""

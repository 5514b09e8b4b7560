"""Serving a petseg export: reading and loading it, and upsampling its answers.

What the segmentation job's workers and evaluation share. Nothing here
imports Keras, matplotlib or TensorFlow Datasets.
"""

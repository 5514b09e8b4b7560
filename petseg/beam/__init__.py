"""Beam transforms of the segmentation job; ``beam_jobs/segment.py`` wires them together.

Everything here runs on Beam workers, so it lives in the package that
``--setup_file`` and the Dockerfile install there. One module per step:

- :mod:`petseg.beam.io`: inputs, matching, mask paths and confinement
- :mod:`petseg.beam.decode`: reading and decoding images, with a dead letter
- :mod:`petseg.beam.inference`: the SavedModel ``ModelHandler`` for ``RunInference``
- :mod:`petseg.beam.masks`: upsampling, argmax and confidence
- :mod:`petseg.beam.write`: masks, overlays and JSON Lines, written atomically
- :mod:`petseg.beam.stats`: per-image statistics and the dataset summary
- :mod:`petseg.beam.progress`: a progress line for local runs
"""

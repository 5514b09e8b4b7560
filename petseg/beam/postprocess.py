"""The old import path of :mod:`petseg.beam.masks`, the job's postprocess step.

Kept until ``beam_jobs/segment.py``, ``benchmarks/profile.py``,
``tests/beam_helpers.py`` and ``tests/test_reliability_fuzz.py`` import from
:mod:`petseg.beam.masks`; then this module goes.
"""

from petseg.beam.masks import PostprocessFn, PostprocessMasks, segment

__all__ = ["PostprocessFn", "PostprocessMasks", "segment"]

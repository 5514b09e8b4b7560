"""The segmentation job: its configuration, its steps and running it on any Beam runner.

Everything here runs on Beam workers (or in the driver that submits them), so
it lives in the package that ``--setup_file`` and the Dockerfile install
there. ``beam_jobs/segment.py`` is the driver; its flags are
:mod:`petseg.cli.segment`. The modules, leaves first:

- :mod:`petseg.beam.layout`: the name of everything the job writes to OUT (imports nothing)
- :mod:`petseg.beam.records`: the records that travel between the steps
- :mod:`petseg.beam.faults`: an input's fault or the environment's, and the one-line messages
- :mod:`petseg.beam.threaded`: a DoFn whose per-element work runs on a thread pool
- :mod:`petseg.beam.io`: inputs, matching, mask paths and confinement to OUT
- :mod:`petseg.beam.decode`: reading and decoding images, with a dead letter
- :mod:`petseg.beam.inference`: the SavedModel ``ModelHandler`` for ``RunInference``
- :mod:`petseg.beam.masks`: upsampling, argmax and confidence
- :mod:`petseg.beam.write`: masks, overlays and JSON, written atomically
- :mod:`petseg.beam.stats`: per-image statistics and the run's summary
- :mod:`petseg.beam.tables`, :mod:`petseg.beam.shards`: JSON Lines or Parquet tables, in sorted shards
- :mod:`petseg.beam.resume`: reusing the masks a previous run committed, pruning stale ones
- :mod:`petseg.beam.coco`: COCO records of the masks (``--coco``), and ``OUT/coco.json``
- :mod:`petseg.beam.runrecord`: one run per OUT
- :mod:`petseg.beam.progress`: a progress line for local runs
- :mod:`petseg.beam.job`: the job's settings, checked before anything runs
- :mod:`petseg.beam.pipeline`: the steps as one pipeline, and running it
"""

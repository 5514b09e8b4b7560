"""The command-line front ends: flags in, a config, the library's call, an exit status.

- :mod:`petseg.cli.flags`: the flag machinery every command shares (no
  abbreviations, one-line errors, Beam's flags checked before Beam sees them)
- :mod:`petseg.cli.segment`: ``petseg-segment``, the Beam job (``beam_jobs/segment.py``)
- :mod:`petseg.cli.train`: ``petseg-train``, training and export (``train.py``)
- :mod:`petseg.cli.evaluate`: ``petseg-evaluate``, scoring an export
- :mod:`petseg.cli.demo`: ``make demo``, the whole journey on the shared sample
- :mod:`petseg.cli.review`: ``petseg review``, the least sure images as Label Studio tasks
- :mod:`petseg.cli.worker_requirements`: the pinned worker install
- :mod:`petseg.cli.main`: ``petseg``, the umbrella command (report, segment, train, evaluate,
  review, export-formats)

Nothing outside this package imports it: the jobs take their settings from
config classes (:mod:`petseg.settings`), never from the command line.
"""

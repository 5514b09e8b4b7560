"""Beam drivers: each module wires ``petseg.beam`` transforms into one job, ``run(argv)``."""

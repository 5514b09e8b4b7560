"""Beam drivers: each module wires ``petseg.beam`` transforms into one job, ``run(argv)``;
``flink`` starts a Flink session cluster on localhost to run them on."""

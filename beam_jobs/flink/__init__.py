"""A Flink session cluster on localhost for the Beam jobs: fetch, start, stop (``cluster``)."""

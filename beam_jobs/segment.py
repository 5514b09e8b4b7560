"""Segments every image below one or more inputs with a petseg model, on any Beam runner.

Writes one mask per image, per-image statistics, an error record for each
input that could not be segmented, and a summary that accounts for every
file matched (see docs/segment.md for the layout).

Locally, in this process (DirectRunner)::

  python -m beam_jobs.segment --input photos/ --model runs/demo/export --output out/

Locally on every core::

  python -m beam_jobs.segment --input photos/ --model runs/demo/export --output out/ \\
      --direct_running_mode multi_processing --direct_num_workers 4

Against a portable job service (the Job API that Flink's job server speaks)::

  python -m beam_jobs.segment --input photos/ --model runs/demo/export --output out/ \\
      --runner PortableRunner --job_endpoint localhost:8099 \\
      --environment_type EXTERNAL --environment_config localhost:50000

On Dataflow (add ``--sdk_container_image`` built from the Dockerfile to skip
installing on every worker, ``--dataflow_service_options
"worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"`` for GPUs)::

  python -m beam_jobs.segment --input gs://BUCKET/photos/ --model gs://BUCKET/export \\
      --output gs://BUCKET/masks-run1 --runner DataflowRunner --project PROJECT \\
      --region REGION --temp_location gs://BUCKET/tmp --setup_file ./setup.py

On a Flink session cluster on localhost (``make flink-up`` starts it and prints
the ports; ``beam_jobs/flink/``)::

  python -m beam_jobs.segment --input photos/ --model runs/demo/export --output out/ \\
      --runner FlinkRunner --flink_master localhost:PORT \\
      --flink_job_server_jar .cache/flink/beam-runners-flink-1.19-job-server-2.62.0.jar \\
      --environment_type EXTERNAL --environment_config localhost:PORT --parallelism 2

On a Flink cluster (SDK workers from the Dockerfile's image)::

  python -m beam_jobs.segment --input gs://BUCKET/photos/ --model gs://BUCKET/export \\
      --output gs://BUCKET/out --runner FlinkRunner --flink_master HOST:8081 \\
      --flink_job_server_jar .cache/flink/beam-runners-flink-1.19-job-server-2.62.0.jar \\
      --environment_type DOCKER --environment_config petseg-beam-worker:latest
"""

from __future__ import annotations

import sys

from petseg.beam.command import (
    EXIT_CONFIG,
    EXIT_DONE,
    EXIT_FAILED,
    EXIT_TOO_MANY_FAILED_INPUTS,
    PROG,
    main,
    parse_known_args,
    run,
    segment_images,
)
from petseg.beam.layout import SUMMARY_FILE
from petseg.beam.pipeline import JobFailedError, build_pipeline

__all__ = [
    "EXIT_CONFIG",
    "EXIT_DONE",
    "EXIT_FAILED",
    "EXIT_TOO_MANY_FAILED_INPUTS",
    "PROG",
    "SUMMARY_FILE",
    "JobFailedError",
    "build_pipeline",
    "main",
    "parse_known_args",
    "run",
    "segment_images",
]

if __name__ == "__main__":
    sys.exit(main())

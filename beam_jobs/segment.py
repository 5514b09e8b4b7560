"""Segments every image below one or more inputs with a petseg model, on any Beam runner.

Writes one mask per image, per-image statistics, an error record for each
input that could not be segmented, and a summary that accounts for every
file matched (see docs/segment.md for the layout).

Locally, in this process (DirectRunner)::

  python -m beam_jobs.segment --input photos/ --model runs/demo/export --output out/

With COCO annotations beside the masks (``out/coco.json``; docs/labels.md), then
the 200 images the model was least sure of as Label Studio tasks::

  python -m beam_jobs.segment --input photos/ --model runs/demo/export --output out/ --coco
  petseg review out/ --lowest 200 --output review/

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
from typing import Any

from petseg.beam.pipeline import run_job
from petseg.cli import segment as command
from petseg.cli.segment import checked_job


def run(argv: list[str] | None = None, save_main_session: bool = False) -> dict[str, Any]:
    """Segments what the flags in ``argv`` say and returns the run's summary.

    The job's own flags become a checked ``SegmentConfig``; every other flag is Beam's.
    The job is checked whole (model, inputs, OUT and its run record) before the pipeline
    is built and run. ``save_main_session`` is Beam's option: the job's DoFns live in
    ``petseg``, so the driver's globals need not travel.
    """
    job, beam_args = checked_job(argv)
    return run_job(job, beam_args, save_main_session=save_main_session)


def main(argv: list[str] | None = None) -> int:
    """Runs the job and returns the command's exit status (``petseg.cli.segment.main``)."""
    return command.main(argv, run=run)


if __name__ == "__main__":
    sys.exit(main())

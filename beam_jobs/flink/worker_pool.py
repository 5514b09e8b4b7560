"""The SDK worker pool of the localhost Flink cluster: Beam's pool, its workers as threads.

    python -m beam_jobs.flink.worker_pool --port 50000

The job's ``--environment_type EXTERNAL --environment_config localhost:PORT``
sends every TaskManager's "start a worker" request here. Beam's
``worker_pool_main`` runs each worker as a process and stops it by its worker
id; but each TaskManager numbers its workers from 1, so where two
TaskManagers share one pool (one host, one port), one TaskManager's "stop
worker 2" kills the other's worker 2 while its stage still waits on it, and
the job hangs. A real cluster runs one pool per TaskManager (a sidecar
container), where ids never meet. Here the pool runs its workers as threads,
as Beam's own LOOPBACK environment does: a stop then ends nobody's worker,
and each worker ends when its TaskManager closes the connection.
"""

from __future__ import annotations

import argparse
import logging
import sys

from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m beam_jobs.flink.worker_pool", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, required=True, help="the port the pool listens on")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    address, server = BeamFnExternalWorkerPoolServicer.start(use_process=False, port=args.port)
    logging.info("SDK worker pool (thread workers) listening at %s", address)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())

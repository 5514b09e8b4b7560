"""``make bench-flink``: the job on the localhost Flink cluster against the DirectRunner.

python -m benchmarks.flink [--out benchmarks/results] [--workdir runs/bench] [--quick]

The same N JPEGs of 500 x 375 and the bench model (``make bench``'s), segmented in
rounds: each round runs the job once in this process (DirectRunner) and once on a
Flink session cluster of one JobManager and two TaskManagers (``make flink``
fetches it), so drift in the machine's load hits both; figures are medians. The
Flink figure is from submitting to the summary, the job server's start included.
The cluster's memory is each of its processes' peak resident size (``VmHWM``),
read after the last round: the JobManager, the TaskManagers, the SDK worker pool
that runs the model, and Beam's job server (the largest of the rounds' own). Writes ``OUT/flink.json`` and ``.md``.
"""

from __future__ import annotations

import os
import pathlib
import sys

from beam_jobs.flink import cluster as flink_cluster
from benchmarks import common
from benchmarks.segmentation import Job


def peak_rss_mib(pid: int) -> float:
    """A live process's peak resident size (``VmHWM``), in MiB."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"process {pid} reports no VmHWM")


def job_server_pids() -> list[int]:
    """This process's children that run Beam's Flink job server jar."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = next(line for line in status.splitlines() if line.startswith("PPid:"))
        if int(parent.split()[1]) == os.getpid() and b"job-server" in command:
            found.append(int(entry.name))
    return found


def cluster_memory(cluster: flink_cluster.Cluster) -> dict[str, float]:
    """Peak MiB of each cluster process, and of the largest job server: the SDK starts
    one per job submitted and stops them all when its process exits."""
    memory = {name: peak_rss_mib(pid) for name, pid in cluster.processes.items()}
    memory["job-server (one per job)"] = max(map(peak_rss_mib, job_server_pids()), default=0.0)
    memory["total"] = sum(memory.values())
    return memory


def measure(workdir: str, sizes: common.Sizes) -> dict:
    export_dir = common.export_bench_model(workdir, sizes)
    folder, _ = common.bench_jpegs(workdir, sizes.images)
    direct = Job(export_dir, workdir, sizes.batch_size)
    with flink_cluster.running(pathlib.Path(workdir) / "flink-cluster") as cluster:
        on_flink = Job(export_dir, workdir, sizes.batch_size, tuple(cluster.flags()))
        rounds = []
        for _ in range(sizes.repeats):
            direct_s = direct.seconds(folder, sizes.images)
            flink_s = on_flink.seconds(folder, sizes.images)
            rounds.append({"direct_seconds": direct_s, "flink_seconds": flink_s})
        memory = cluster_memory(cluster)
    figures = common.medians(rounds)
    figures["flink_vs_direct"] = figures["direct_seconds"] / figures["flink_seconds"]
    return {
        "images": sizes.images,
        "image_size": sizes.image_size,
        "batch_size": sizes.batch_size,
        "flink": flink_cluster.FLINK_VERSION,
        "taskmanagers": 2,
        "seconds": figures,
        "cluster_peak_rss_mib": memory,
    }


def markdown(results: dict) -> list[str]:
    seconds, memory = results["seconds"], results["cluster_peak_rss_mib"]
    count = results["images"]
    lines = [
        f"The job on {count} JPEGs of 500 x 375 ({results['image_size']} px model, batch "
        f"{results['batch_size']}), medians of {len(seconds['runs'])} rounds:",
        "",
    ]
    lines += common.table(
        ("runner", "wall s", "images/s"),
        [
            (
                "DirectRunner, in process",
                f"{seconds['direct_seconds']:.1f}",
                f"{count / seconds['direct_seconds']:.1f}",
            ),
            (
                f"Flink {results['flink']}, 2 TaskManagers",
                f"{seconds['flink_seconds']:.1f}",
                f"{count / seconds['flink_seconds']:.1f}",
            ),
        ],
    )
    lines.append(f"Flink / DirectRunner throughput: {seconds['flink_vs_direct']:.2f}x")
    lines += ["", "The cluster's memory, each process's peak resident MiB:", ""]
    lines += common.table(
        ("process", "peak MiB"), [(name, f"{mib:.0f}") for name, mib in memory.items()]
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(argv, "benchmarks.flink", "flink")
    try:
        results = measure(args.workdir, args.sizes)
    except flink_cluster.ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    common.write_results(args.out, "flink", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A Flink session cluster on localhost for the segmentation job: fetch, up, down.

    python -m beam_jobs.flink.cluster fetch   # job server jar and Flink, into .cache/flink
    python -m beam_jobs.flink.cluster up      # JobManager, 2 TaskManagers, SDK worker pool
    python -m beam_jobs.flink.cluster flags   # the flags that send the job there
    python -m beam_jobs.flink.cluster down    # stop them all

``make flink``, ``make flink-up`` and ``make flink-down`` call these. Each
JVM is its own process (one JobManager, one per TaskManager), with small
memory settings, in a process group of its own so that ``down`` stops it
and whatever it started. The state of a running cluster (ports, process
ids, logs) is one JSON file in the work folder.

What it fetches, and from where:

- Beam's Flink job server: the Python SDK's FlinkRunner starts it from
  ``--flink_job_server_jar``. Maven builds it from ``pom.xml`` beside this
  file, at the installed SDK's version, so the two always agree.
- Flink itself: ``lib/``, ``opt/``, ``plugins/`` from PyPI's
  ``apache-flink-libraries``, ``bin/`` and ``conf/`` from the
  ``apache-flink`` wheel. Both are downloaded, never installed: the
  ``apache-flink`` package pins an older apache-beam than the project's.

Only the standard library is used, so the tool runs from any Python.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict, dataclass, field

HERE = pathlib.Path(__file__).resolve().parent
REPOSITORY = HERE.parent.parent
DEFAULT_CACHE = REPOSITORY / ".cache" / "flink"
DEFAULT_WORKDIR = REPOSITORY / "runs" / "flink-cluster"

# The Flink release the job server is built against (pom.xml's flink.minor).
FLINK_MINOR = "1.19"
FLINK_VERSION = "1.19.3"
STATE_FILE = "cluster.json"


class ClusterError(RuntimeError):
    """The cluster could not be fetched, started or reached; the message says why."""


def beam_version() -> str:
    """The installed Python SDK's version: the job server must be the same."""
    return importlib.metadata.version("apache-beam")


def job_server_jar(cache: pathlib.Path = DEFAULT_CACHE, version: str | None = None) -> pathlib.Path:
    version = version or beam_version()
    return cache / f"beam-runners-flink-{FLINK_MINOR}-job-server-{version}.jar"


def flink_home(cache: pathlib.Path = DEFAULT_CACHE) -> pathlib.Path:
    return cache / f"flink-{FLINK_VERSION}"


def _run(command: list[str], cwd: pathlib.Path, what: str) -> None:
    """Run a fetch step; on failure, raise with the tool's last lines of output."""
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as error:
        raise ClusterError(f"{what}: {command[0]} is not installed ({error})") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ClusterError(f"{what} failed ({' '.join(command)}):\n{tail}")


def fetch_job_server(cache: pathlib.Path = DEFAULT_CACHE) -> pathlib.Path:
    """Build Beam's Flink job server jar with Maven, once per Beam version."""
    version = beam_version()
    jar = job_server_jar(cache, version)
    if jar.is_file():
        return jar
    build = cache / "job-server-build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    shutil.copy(HERE / "pom.xml", build / "pom.xml")
    _run(
        ["mvn", "-B", "-q", "package", f"-Dbeam.version={version}", f"-Dflink.minor={FLINK_MINOR}"],
        build,
        f"Building Beam {version}'s Flink {FLINK_MINOR} job server",
    )
    built = build / "target" / jar.name
    os.replace(built, jar)
    shutil.rmtree(build, ignore_errors=True)
    return jar


def _download_flink(downloads: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    downloads.mkdir(parents=True, exist_ok=True)
    pins = [f"apache-flink-libraries=={FLINK_VERSION}", f"apache-flink=={FLINK_VERSION}"]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--dest",
            str(downloads),
            *pins,
        ],
        downloads,
        f"Downloading Flink {FLINK_VERSION} from PyPI",
    )
    libraries = next(downloads.glob(f"apache-flink-libraries-{FLINK_VERSION}.tar.gz"))
    wheel = next(downloads.glob(f"apache_flink-{FLINK_VERSION}-*.whl"))
    return libraries, wheel


def fetch_flink(cache: pathlib.Path = DEFAULT_CACHE) -> pathlib.Path:
    """Unpack Flink's distribution from the two PyPI packages, outside any venv."""
    home = flink_home(cache)
    if (home / "bin" / "jobmanager.sh").is_file():
        return home
    downloads = cache / "downloads"
    libraries, wheel = _download_flink(downloads)
    staging = cache / f"{home.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(libraries) as archive:
        prefix = f"apache-flink-libraries-{FLINK_VERSION}/deps/"
        members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
        for member in members:
            member.name = member.name[len(prefix) :]
        archive.extractall(staging, members=[m for m in members if m.name], filter="data")
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            match = re.match(r"pyflink/(bin|conf)/(.+)$", name)
            if match and not name.endswith("/"):
                target = staging / match[1] / match[2]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
    for script in (staging / "bin").iterdir():
        script.chmod(0o755)
    shutil.rmtree(home, ignore_errors=True)
    os.replace(staging, home)
    shutil.rmtree(downloads, ignore_errors=True)
    return home


def fetch(cache: pathlib.Path = DEFAULT_CACHE) -> tuple[pathlib.Path, pathlib.Path]:
    return fetch_job_server(cache), fetch_flink(cache)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _java_options(home: pathlib.Path) -> str:
    """The module openings Flink's own conf passes to every JVM (Java 17 needs them)."""
    text = (home / "conf" / "config.yaml").read_text()
    match = re.search(r"^\s*all:\s*(--add-.+)$", text, re.MULTILINE)
    return match[1].strip() if match else ""


def write_config(
    home: pathlib.Path, conf: pathlib.Path, rpc_port: int, rest_port: int, parallelism: int
) -> None:
    """A config.yaml for a small localhost cluster."""
    conf.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(home / "conf"):
        if name.startswith(("log4j", "logback")):
            shutil.copy(home / "conf" / name, conf / name)
    settings = {
        "env.java.opts.all": _java_options(home),
        "jobmanager.bind-host": "localhost",
        "jobmanager.rpc.address": "localhost",
        "jobmanager.rpc.port": rpc_port,
        "jobmanager.memory.process.size": "768m",
        "taskmanager.bind-host": "localhost",
        "taskmanager.host": "localhost",
        # Two slots each, spread evenly: a job of parallelism 2 runs one subtask per
        # TaskManager, and when one TaskManager is lost it can restart on the other.
        "taskmanager.numberOfTaskSlots": 2,
        "cluster.evenly-spread-out-slots": "true",
        "taskmanager.memory.process.size": "1024m",
        # Beam's portable stages run in the SDK workers, not in Flink's managed memory.
        "taskmanager.memory.managed.fraction": 0.2,
        "parallelism.default": parallelism,
        "rest.address": "localhost",
        "rest.bind-address": "localhost",
        "rest.port": rest_port,
        # A lost TaskManager is noticed within the heartbeat timeout; the job then
        # restarts from its sources after a delay longer than that, so the restart
        # finds the surviving TaskManager's slots rather than the lost one's.
        "heartbeat.interval": 2000,
        "heartbeat.timeout": 8000,
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": 3,
        "restart-strategy.fixed-delay.delay": "10 s",
        "slot.request.timeout": 60000,
    }
    lines = [
        f"{key}: {json.dumps(value) if isinstance(value, str) else value}"
        for key, value in settings.items()
    ]
    (conf / "config.yaml").write_text("\n".join(lines) + "\n")


@dataclass
class Cluster:
    """A running (or stopped) localhost cluster, as its state file records it."""

    workdir: str
    jar: str
    flink_home: str
    rest_port: int
    worker_port: int
    parallelism: int
    processes: dict[str, int] = field(default_factory=dict)

    @property
    def master(self) -> str:
        return f"localhost:{self.rest_port}"

    def flags(self) -> list[str]:
        """The job's flags that send it to this cluster."""
        return [
            "--runner=FlinkRunner",
            f"--flink_master={self.master}",
            f"--flink_job_server_jar={self.jar}",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{self.worker_port}",
            f"--parallelism={self.parallelism}",
        ]

    def rest(self, path: str) -> dict:
        url = f"http://{self.master}/{path.lstrip('/')}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def taskmanagers(self) -> list[dict]:
        return self.rest("taskmanagers")["taskmanagers"]

    def jobs(self) -> list[dict]:
        return self.rest("jobs/overview")["jobs"]

    def records_per_taskmanager(self, job_id: str) -> dict[str, int]:
        """Records each TaskManager's subtasks read, over every vertex of a job."""
        totals: dict[str, int] = {}
        for vertex in self.rest(f"jobs/{job_id}")["vertices"]:
            for manager in self.rest(f"jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")[
                "taskmanagers"
            ]:
                key = manager.get("taskmanager-id") or manager["host"]
                totals[key] = totals.get(key, 0) + int(manager["metrics"]["read-records"])
        return totals

    def save(self) -> None:
        (pathlib.Path(self.workdir) / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, workdir: pathlib.Path) -> Cluster:
        state = pathlib.Path(workdir) / STATE_FILE
        if not state.is_file():
            raise ClusterError(f"no cluster is recorded in {workdir} (nothing to stop)")
        return cls(**json.loads(state.read_text()))

    def stop(self) -> None:
        """Stop every process of the cluster and what each started, then forget them."""
        for pid in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for pid in self.processes.values():
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            _reap(pid)
        self.processes = {}
        (pathlib.Path(self.workdir) / STATE_FILE).unlink(missing_ok=True)

    def kill_taskmanager(self, index: int) -> int:
        """SIGKILL one TaskManager's JVM, as a machine loss would; returns its pid."""
        pid = self.processes.pop(f"taskmanager-{index}")
        os.killpg(pid, signal.SIGKILL)
        _reap(pid)
        self.save()
        return pid


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        waited = 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return waited == 0


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _start(command: list[str], log: pathlib.Path, env: dict[str, str]) -> int:
    with open(log, "ab") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return process.pid


def _worker_pool_env() -> dict[str, str]:
    """The pool runs this Python, with the repository importable and its bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    return env


def _wait(check, what: str, timeout_s: float, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, pid in cluster.processes.items():
            if not _alive(pid):
                raise ClusterError(f"the {name} stopped while {what}; see {cluster.workdir}/logs")
        with contextlib.suppress(OSError, urllib.error.URLError, KeyError, ValueError):
            if check():
                return
        time.sleep(0.5)
    raise ClusterError(f"timed out after {timeout_s:.0f} s {what}; see {cluster.workdir}/logs")


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("localhost", port)) == 0


def up(
    workdir: pathlib.Path = DEFAULT_WORKDIR,
    cache: pathlib.Path = DEFAULT_CACHE,
    taskmanagers: int = 2,
    timeout_s: float = 120.0,
) -> Cluster:
    """Start a JobManager, N TaskManagers and an SDK worker pool; wait until all serve."""
    workdir = pathlib.Path(workdir).resolve()
    if (workdir / STATE_FILE).is_file():
        raise ClusterError(
            f"a cluster is already recorded in {workdir}: stop it first (make flink-down)"
        )
    jar, home = job_server_jar(cache), flink_home(cache)
    if not jar.is_file() or not (home / "bin" / "jobmanager.sh").is_file():
        raise ClusterError(
            f"Flink or its job server is missing under {cache}: run `make flink` first"
        )
    logs, conf = workdir / "logs", workdir / "conf"
    logs.mkdir(parents=True, exist_ok=True)
    rpc_port, rest_port, worker_port = free_port(), free_port(), free_port()
    write_config(home, conf, rpc_port, rest_port, parallelism=taskmanagers)
    cluster = Cluster(str(workdir), str(jar), str(home), rest_port, worker_port, taskmanagers)
    base = {**os.environ, "FLINK_HOME": str(home), "FLINK_CONF_DIR": str(conf)}
    try:
        cluster.processes["jobmanager"] = _start(
            ["bash", str(home / "bin" / "jobmanager.sh"), "start-foreground"],
            logs / "jobmanager.out",
            {**base, "FLINK_LOG_DIR": str(logs / "jobmanager")},
        )
        for index in range(taskmanagers):
            cluster.processes[f"taskmanager-{index}"] = _start(
                ["bash", str(home / "bin" / "taskmanager.sh"), "start-foreground"],
                logs / f"taskmanager-{index}.out",
                {**base, "FLINK_LOG_DIR": str(logs / f"taskmanager-{index}")},
            )
        cluster.processes["worker-pool"] = _start(
            [sys.executable, "-m", "beam_jobs.flink.worker_pool", f"--port={worker_port}"],
            logs / "worker-pool.log",
            _worker_pool_env(),
        )
        cluster.save()
        _wait(
            lambda: len(cluster.taskmanagers()) >= taskmanagers,
            "waiting for the TaskManagers",
            timeout_s,
            cluster,
        )
        _wait(
            lambda: _port_open(worker_port), "waiting for the SDK worker pool", timeout_s, cluster
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running(workdir: pathlib.Path, cache: pathlib.Path = DEFAULT_CACHE, taskmanagers: int = 2):
    """A cluster for the length of a ``with`` block; stopped however the block ends."""
    cluster = up(workdir, cache, taskmanagers)
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m beam_jobs.flink.cluster", description=__doc__.split("\n")[0]
    )
    parser.add_argument("action", choices=["fetch", "up", "flags", "down"])
    parser.add_argument("--cache", type=pathlib.Path, default=DEFAULT_CACHE)
    parser.add_argument("--workdir", type=pathlib.Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--taskmanagers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        if args.action == "fetch":
            jar, home = fetch(args.cache)
            print(f"job server: {jar}\nFlink {FLINK_VERSION}: {home}")
        elif args.action == "up":
            cluster = up(args.workdir, args.cache, args.taskmanagers)
            print(
                f"Flink {FLINK_VERSION} on http://{cluster.master} ({args.taskmanagers} TaskManagers)"
            )
            print("Run the job with:\n  " + " ".join(cluster.flags()))
        elif args.action == "flags":
            print(" ".join(Cluster.load(args.workdir).flags()))
        else:
            Cluster.load(args.workdir).stop()
            print("cluster stopped")
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

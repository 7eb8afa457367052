"""Multi-process start-up: ``jax.distributed.initialize`` before anything touches a device.

Which processes belong to one run is found the way JAX finds it, so that every
engine JAX knows starts the runtime without flags: the Cloud TPU metadata (GCE,
queued resources), GKE TPU and multislice variables (``TPU_WORKER_HOSTNAMES``,
``MEGASCALE_*``), SLURM (``srun``), Open MPI (``mpirun``, ORTE variables; Open MPI 5's
PMIx-only launch is not detected by JAX) and Kubernetes Indexed Jobs. The search is
JAX's own (``jax._src.clusters``, in its order) rather than a copy of it, so a new
engine in JAX is a new engine here; it is private API, and ``tests/test_distributed``
pins the behaviour it relies on. Explicit ``--coordinator_address``/``--num_processes``/
``--process_id`` (several processes on one machine, or an engine JAX does not know)
win over detection. The environment used is logged. JAX's own rule for devices is kept:
under SLURM or Open MPI off TPU, each process sees the one GPU numbered by its local rank
(one task per GPU; ``JAX_LOCAL_DEVICE_IDS`` overrides it).

Why detection is an error path and not a hint: before, a SLURM or Kubernetes job with
several tasks started each task as its own one-process run on the same workdir, each
overwriting the others' checkpoints. Now an environment that says "N > 1 processes"
and does not form a group within ``timeout_seconds`` stops with exit status 2 and a
message naming the environment and what to check, never a silent single-process run.
An environment of one process (``sbatch`` without ``srun``, a one-worker TPU VM, a pod
outside an Indexed Job) trains alone, as before.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import threading
import time

import jax

from noise_scale.errors import UsageError


class DistributedError(UsageError):
    """The multi-process runtime could not start; the message says what to check."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Who this process is in which run, and where the group meets."""

    environment: str  # as a user names it: "SLURM", "Open MPI", "--coordinator_address flags"
    coordinator_address: str
    num_processes: int
    process_id: int
    detection_method: str | None = None  # JAX's cluster_detection_method; None for flags
    fix: str = ""  # what to check when the group does not form


# JAX's ClusterEnv class → how a user names the engine, and what to check when the group
# does not form. An engine JAX adds later is reported by its class name.
ENVIRONMENTS = {
    "SlurmCluster": (
        "SLURM", "Start every task with srun (e.g. `srun --ntasks=N python -m "
        "noise_scale.main ...`), not once from the batch script, so that all SLURM_NTASKS "
        "tasks start; the first node of SLURM_STEP_NODELIST must accept connections on the "
        "coordinator port (JAX_COORDINATOR_PORT overrides it)."),
    "OmpiCluster": (
        "Open MPI", "Start it with `mpirun -np N python -m noise_scale.main ...` so that all "
        "OMPI_COMM_WORLD_SIZE ranks start; the launching host must accept connections on the "
        "coordinator port (JAX_COORDINATOR_PORT overrides it)."),
    "K8sCluster": (
        "Kubernetes Indexed Job", "Give the Job completionMode: Indexed, parallelism equal to "
        "completions, and a headless Service as the pods' subdomain; every pod must start and "
        "reach pod 0."),
    "GkeTpuCluster": (
        "GKE TPU", "Every worker of the slice (TPU_WORKER_HOSTNAMES; every slice for "
        "MEGASCALE_NUM_SLICES > 1) must run this same command; check that all pods of the "
        "JobSet started."),
    "GceTpuCluster": (
        "Cloud TPU VM", "Run the same command on every worker at once (`gcloud compute tpus "
        "tpu-vm ssh NAME --worker=all --command=...`); every worker must start."),
}


def find_cluster(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
                 timeout_seconds: int = 300) -> Cluster | None:
    """The multi-process run this process belongs to, from the flags or the environment.

    None when it trains alone (no environment, or one of a single process).
    """
    if coordinator_address or num_processes > 1:
        _check_flags(coordinator_address, num_processes, process_id)
        return Cluster("--coordinator_address flags", coordinator_address, num_processes,
                       process_id, fix="Check that process 0 and all other processes were started with "
                           "this --coordinator_address and the same --num_processes, and that "
                           "its port is reachable from every host.")
    env = _detected_environment()
    if env is None:
        return None
    name, fix = ENVIRONMENTS.get(env.__name__, (env.__name__, ""))
    try:
        count, rank = env.get_process_count(), env.get_process_id()
        if count <= 1:
            logging.warning("%s environment with one process: training in this process alone.",
                            name)
            return None
        address = env.get_coordinator_address(
            timeout_secs=timeout_seconds,
            override_coordinator_port=os.environ.get("JAX_COORDINATOR_PORT"))
    except Exception as e:  # noqa: BLE001 - JAX's detection raises bare RuntimeError/KeyError
        raise DistributedError(
            f"this looks like a {name} job with several processes, but its variables do not "
            f"say how to join it ({type(e).__name__}: {e}). {fix} To run one process alone, "
            "unset the variables; to set the group by hand, pass --coordinator_address, "
            "--num_processes and --process_id.") from None
    return Cluster(name, address, count, rank, env.name or None, fix)


def _detected_environment():
    """The first of JAX's cluster environments present here (JAX's order), or None.

    A Kubernetes pod counts only inside an Indexed Job (``JOB_COMPLETION_INDEX``): any
    other pod (a notebook server, a Deployment) is one process, where JAX's own detection
    would fail asking for a Job.
    """
    from jax._src import clusters  # what jax.distributed.initialize() itself searches

    for env in clusters.ClusterEnv._cluster_types:
        if env.opt_in_only_method:  # mpi4py: only when asked for by name
            continue
        if env.__name__ == "K8sCluster" and "JOB_COMPLETION_INDEX" not in os.environ:
            continue
        try:
            present = env.is_env_present()
        except Exception as e:  # noqa: BLE001 - e.g. the Kubernetes API refusing the pod
            name, fix = ENVIRONMENTS.get(env.__name__, (env.__name__, ""))
            raise DistributedError(
                f"looking for a {name} run failed ({type(e).__name__}: {e}). {fix} To set "
                "the group by hand, pass --coordinator_address, --num_processes and "
                "--process_id.") from None
        if present:
            return env
    return None


def _check_flags(coordinator_address: str, num_processes: int, process_id: int) -> None:
    missing = [name for name, bad in (
        ("--coordinator_address", not coordinator_address),
        ("--num_processes", num_processes < 1),
        ("--process_id", not 0 <= process_id < max(num_processes, 1)),
    ) if bad]
    if missing:
        raise DistributedError(
            f"a multi-process run needs --coordinator_address=HOST:PORT, --num_processes=N "
            f"and --process_id in [0, N) on every process; check {', '.join(missing)} "
            f"(got {coordinator_address!r}, {num_processes}, {process_id}).")


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               timeout_seconds: int = 300) -> bool:
    """Start the multi-controller runtime if this run has several processes.

    Returns True if it did. Must run before the first use of ``jax.devices()``.
    """
    # JAX's client aborts the whole process (no Python exception) when its deadline passes,
    # and detection may wait on DNS or the TPU metadata: a watchdog with a shorter fuse
    # reports the failure first, then exits with status 2.
    found: list[Cluster] = []
    watchdog = threading.Timer(timeout_seconds, lambda: _give_up(
        _failure(found[0], timeout_seconds, "timed out") if found else
        f"looking for the multi-process environment timed out after {timeout_seconds} s."))
    watchdog.daemon = True
    watchdog.start()
    try:
        cluster = find_cluster(coordinator_address, num_processes, process_id, timeout_seconds)
        if cluster is None:
            return False
        found.append(cluster)
        logging.warning("multi-process run (%s): process %d of %d, coordinator %s",
                        cluster.environment, cluster.process_id, cluster.num_processes,
                        cluster.coordinator_address)
        if cluster.process_id != 0:
            _wait_until_reachable(cluster, timeout_seconds)
        try:
            jax.distributed.initialize(
                coordinator_address=cluster.coordinator_address,
                num_processes=cluster.num_processes, process_id=cluster.process_id,
                cluster_detection_method=cluster.detection_method,
                initialization_timeout=timeout_seconds + 30)
        except Exception as e:  # noqa: BLE001 - surfaced with what to check
            raise DistributedError(_failure(cluster, timeout_seconds,
                                            f"{type(e).__name__}: {e}")) from None
    finally:
        watchdog.cancel()
    return True


def _failure(cluster: Cluster, timeout_seconds: int, reason: str) -> str:
    who = (f"{cluster.environment}, process {cluster.process_id} of "
           f"{cluster.num_processes}, coordinator {cluster.coordinator_address}")
    side = ("Process 0 waits for the others: " if cluster.process_id == 0 else
            "This process waits for process 0: ")
    return (f"could not join the multi-process run ({who}) within {timeout_seconds} s: "
            f"{reason}. {side}{cluster.fix} A run is never started alone in a multi-process "
            "environment, where every process would write the same workdir; "
            "--initialization_timeout sets the wait.")


def _wait_until_reachable(cluster: Cluster, timeout_seconds: float) -> None:
    address = cluster.coordinator_address
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"--coordinator_address must be HOST:PORT, got {address!r}.")
    deadline = time.monotonic() + max(timeout_seconds - 2, 1)  # before the watchdog's fuse
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(_failure(
                    cluster, timeout_seconds, f"nothing answers at {address} ({e})")) from None
            time.sleep(0.5)


def _give_up(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(2)

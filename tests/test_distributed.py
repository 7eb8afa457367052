"""Which multi-process run a process belongs to: flags, or the engine's variables as JAX reads them.

In-process and fast: nothing here starts the runtime (tests/test_multihost.py does).
"""

import pytest

from noise_scale.cluster import distributed

ENGINE_PREFIXES = ("SLURM_", "OMPI_", "TPU_", "MEGASCALE_", "JAX_COORDINATOR")


@pytest.fixture
def env(monkeypatch):
    """No engine's variables, whatever machine the tests run on; ``env(**vars)`` sets some."""
    import os

    for k in list(os.environ):
        if k.startswith(ENGINE_PREFIXES) or k in ("KUBERNETES_SERVICE_HOST",
                                                   "JOB_COMPLETION_INDEX"):
            monkeypatch.delenv(k)

    def set_vars(**variables):
        for k, v in variables.items():
            monkeypatch.setenv(k, str(v))

    return set_vars


def slurm(ntasks, procid, nodelist="node007", job_id=1234):
    return dict(SLURM_JOB_ID=job_id, SLURM_STEP_NODELIST=nodelist, SLURM_NTASKS=ntasks,
                SLURM_PROCID=procid, SLURM_LOCALID=procid)


def test_no_environment_and_no_flags_is_one_process(env):
    assert distributed.find_cluster() is None


def test_slurm_tasks_form_one_run_at_the_first_node(env):
    env(**slurm(4, 3, nodelist="gpu[012-015],login1"))
    c = distributed.find_cluster()
    # JAX's rule: the first node of the step, port 61440 + job id mod 4096
    assert c == distributed.Cluster("SLURM", f"gpu012:{61440 + 1234 % 4096}", 4, 3, "slurm",
                                    distributed.ENVIRONMENTS["SlurmCluster"][1])


def test_jax_coordinator_port_overrides_the_engines_port(env):
    env(**slurm(2, 0), JAX_COORDINATOR_PORT=5555)
    assert distributed.find_cluster().coordinator_address == "node007:5555"


def test_a_single_slurm_task_trains_alone(env):
    env(**slurm(1, 0))
    assert distributed.find_cluster() is None


def test_open_mpi_ranks_meet_at_the_launching_host(env):
    env(OMPI_MCA_orte_hnp_uri="1531576320.0;tcp://10.96.0.1,10.148.0.1:34911",
        OMPI_COMM_WORLD_SIZE=8, OMPI_COMM_WORLD_RANK=5, OMPI_COMM_WORLD_LOCAL_RANK=1)
    c = distributed.find_cluster()
    assert (c.environment, c.num_processes, c.process_id) == ("Open MPI", 8, 5)
    assert c.coordinator_address == f"10.96.0.1:{61440 + 1531576320 // 4096 % 4096}"


def test_a_pod_outside_an_indexed_job_trains_alone(env):
    env(KUBERNETES_SERVICE_HOST="10.0.0.1")  # a notebook server's pod, say
    assert distributed.find_cluster() is None


def test_flags_win_over_the_environment(env):
    env(**slurm(4, 3))
    c = distributed.find_cluster("10.0.0.2:1234", 2, 1)
    assert (c.environment, c.coordinator_address, c.num_processes, c.process_id) == (
        "--coordinator_address flags", "10.0.0.2:1234", 2, 1)


@pytest.mark.parametrize("args,named", [
    (("10.0.0.2:1234", 2, -1), "--process_id"),
    (("10.0.0.2:1234", 2, 2), "--process_id"),
    (("", 2, 0), "--coordinator_address"),
])
def test_incomplete_flags_name_the_missing_one(env, args, named):
    with pytest.raises(distributed.DistributedError, match=f"check {named}"):
        distributed.find_cluster(*args)


def test_unreadable_engine_variables_are_an_error_naming_the_engine(env):
    env(**slurm("two", 0))
    with pytest.raises(distributed.DistributedError,
                       match=r"looks like a SLURM job.*ValueError.*srun"):
        distributed.find_cluster()


def test_every_engine_jax_detects_has_a_name_and_a_fix():
    """A new engine in JAX shows up here: give it a name and a fix in ENVIRONMENTS."""
    from jax._src import clusters

    detected = {e.__name__ for e in clusters.ClusterEnv._cluster_types
                if not e.opt_in_only_method and e.__name__ != "BaseTpuCluster"}
    assert detected == set(distributed.ENVIRONMENTS)


def test_a_detection_that_fails_is_an_error_naming_the_engine(env, monkeypatch):
    from jax._src.clusters import SlurmCluster

    def refuse():
        raise RuntimeError("Kubernetes API Error: 403 - Forbidden")

    monkeypatch.setattr(SlurmCluster, "is_env_present", classmethod(lambda cls: refuse()))
    with pytest.raises(distributed.DistributedError,
                       match=r"looking for a SLURM run failed \(RuntimeError: .*403"):
        distributed.find_cluster()

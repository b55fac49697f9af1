"""The launchers in jobs/launch, run for real on this machine: the Slurm
script with `srun`/`scontrol` shims on a one-node "allocation", and
`ray job submit` against a local Ray head with its dashboard."""

import os
import subprocess
import sys
import urllib.request

import pytest

from conftest import ROOT, needs_ray, ray_head, read_uuids, stop_ray, wait_for, SAMPLE_PROBLEMS
from factory.engines.managed import free_port
from test_run_fake import fake_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), needs_ray]

SHIMS = {
    # one node called localhost
    "scontrol": '#!/bin/sh\necho localhost\n',
    # run the command here, dropping srun's own options
    "srun": '#!/bin/bash\nwhile [[ $1 == -* ]]; do [[ $1 == -w ]] && shift; shift; done\nexec "$@"\n',
}


def launcher_env(path_first: str = "", **extra):
    """As on a cluster node: the project's virtualenv first on PATH."""
    path = os.pathsep.join(p for p in (path_first, os.path.dirname(sys.executable), os.environ["PATH"]) if p)
    return dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PATH=path, **extra)


def ray_job(tmp_path, url, out):
    return fake_job(tmp_path, url, out, scale={"mode": "ray", "replicas": 2, "chunk_size": 4,
                                               "replica_cpus": 0.2, "verifier_cpus": 0.1})


def install(shims, folder):
    folder.mkdir()
    for name, text in shims.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def test_slurm_script_brings_up_ray_and_runs_the_job(tmp_path, fake_server):
    shims = install(SHIMS, tmp_path / "bin")
    out = tmp_path / "out"
    job = ray_job(tmp_path, fake_server(), out)
    env = launcher_env(str(shims), SLURM_JOB_NODELIST="localhost",
                       FACTORY_VENV=str(ROOT / ".venv"), GPUS_PER_NODE="0", RAY_PORT=str(free_port()))
    try:
        proc = subprocess.run(["bash", str(ROOT / "jobs/launch/slurm-ray.sbatch"), str(job)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=500)
    finally:
        stop_ray(env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "1 Ray node(s) up" in log and "joined Ray at 127.0.0.1:" in log, log[-6000:]
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == SAMPLE_PROBLEMS


def test_slurm_script_stops_with_a_clear_error_when_the_head_cannot_start(tmp_path, fake_server):
    """Ray refuses a temp dir whose socket paths exceed 107 bytes: the script
    must say the head did not start and exit, not wait for nodes forever."""
    long_tmp = tmp_path / ("x" * 90)
    srun = SHIMS["srun"].replace('exec "$@"', 'if [[ $1 == ray && $2 == start ]]; then set -- "$@" --temp-dir="$LONG_TMP"; fi\nexec "$@"')
    shims = install({**SHIMS, "srun": srun}, tmp_path / "bin")
    env = launcher_env(str(shims), SLURM_JOB_NODELIST="localhost", LONG_TMP=str(long_tmp),
                       FACTORY_VENV=str(ROOT / ".venv"), GPUS_PER_NODE="0", RAY_PORT=str(free_port()))
    try:
        proc = subprocess.run(["bash", str(ROOT / "jobs/launch/slurm-ray.sbatch"), str(ray_job(tmp_path, fake_server(), tmp_path / "o"))],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        stop_ray(env)
    assert proc.returncode == 1 and "error: the Ray head on localhost did not start" in proc.stderr, proc.stderr[-3000:]


def test_ray_job_submit_launcher(tmp_path, fake_server):
    dash = free_port()
    env = launcher_env(RAY_ADDRESS=f"http://127.0.0.1:{dash}")
    start_env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    with ray_head(start_env, "--num-cpus=2", "--include-dashboard=true", f"--dashboard-port={dash}"):
        def dashboard_up():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{dash}/api/version", timeout=2).status == 200
            except OSError:
                return False

        wait_for(dashboard_up, 120, "Ray dashboard")
        out = tmp_path / "out"
        job = ray_job(tmp_path, fake_server(), out)
        proc = subprocess.run([str(ROOT / "jobs/launch/ray-submit.sh"), str(job), "-o", str(out)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=400)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "succeeded" in log and "joined Ray at auto" in log, log[-3000:]
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == SAMPLE_PROBLEMS

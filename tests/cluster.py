"""A pretend Slurm allocation of several nodes that are all this machine.

`scontrol` and `srun` shims stand in for Slurm, so the real launcher
(`jobs/launch/slurm-ray.sbatch`) runs unchanged. What makes node k its own
node is in the `srun` shim: `ray start` on node k gets its own temp dir,
ports and one core of its own (taskset), as separate hosts would have.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent

SCONTROL = """#!/bin/sh
# scontrol show hostnames LIST -> node0 .. node{N-1}
n=${FAKE_SLURM_NODES:-1}
i=0; while [ "$i" -lt "$n" ]; do echo "node$i"; i=$((i + 1)); done
"""

SRUN = r"""#!/bin/bash
# srun [-w NODE] [options] CMD...: run CMD here as if on NODE
node=node0
while [[ $1 == -* ]]; do
  [[ $1 == -w ]] && { node=$2; shift; }
  shift
done
k=${node#node}
if [[ $1 == hostname ]]; then echo 127.0.0.1; exit 0; fi
if [[ $1 == ray && $2 == start ]]; then
  base=$((FAKE_SLURM_PORT_BASE + k * 1000))
  set -- "$@" --temp-dir="$FAKE_SLURM_TMP/ray-$node" --node-ip-address=127.0.0.1 \
     --dashboard-agent-listen-port=$((base + 1)) --dashboard-agent-grpc-port=$((base + 2)) \
     --runtime-env-agent-port=$((base + 3)) --metrics-export-port=$((base + 4)) \
     --min-worker-port=$((base + 100)) --max-worker-port=$((base + 999))
  cores=$(nproc --all)
  if (( FAKE_SLURM_NODES > 1 && cores >= FAKE_SLURM_NODES )); then
    # one core per node, as on separate hosts (vLLM's CPU build binds to what it is given)
    set -- taskset -c "$((k % cores))" "$@" --num-cpus=1
  fi
fi
exec "$@"
"""


def install_shims(folder: Path) -> Path:
    """Write `scontrol` and `srun` into `folder`; put it first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("scontrol", SCONTROL), ("srun", SRUN)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def slurm_env(shims: Path, tmp: Path, nodes: int, port_base: int, **extra: str) -> dict[str, str]:
    """The environment of a job step: shims and the project's virtualenv first on PATH."""
    path = os.pathsep.join([str(shims), str(BIN), os.environ["PATH"]])
    return dict(os.environ, PATH=path, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
                SLURM_JOB_NODELIST=f"node[0-{nodes - 1}]", FAKE_SLURM_NODES=str(nodes),
                FAKE_SLURM_TMP=str(tmp), FAKE_SLURM_PORT_BASE=str(port_base), **extra)


def srun(env: dict[str, str], node: str, *cmd: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["srun", "-w", node, *cmd], env=env, capture_output=True, text=True, timeout=timeout)


def ray_stop(env: dict[str, str]) -> None:
    """Every Ray process on this machine (all pretend nodes)."""
    subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)

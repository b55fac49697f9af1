#!/usr/bin/env bash
# Submit a factory job to a running Ray cluster with `ray job submit`.
#
#   RAY_ADDRESS=http://HEAD:8265 jobs/launch/ray-submit.sh JOB.yaml [factory run options...]
#
# The driver runs on the cluster; this project folder is shipped as the
# working directory (without .venv, caches and outputs), so every node runs
# the same code. The nodes need the project's dependencies installed (the
# same virtualenv path everywhere, e.g. on a shared filesystem, or a Ray
# image with `pip install -e .[ray]`). The output folder (-o, default
# ./out/JOB_NAME beside the caller, or FACTORY_OUTPUT) must be one every
# node can write: replicas write their shards there directly.
# Extra environment for the job: FACTORY_RUNTIME_ENV_VARS='{"HF_TOKEN": "..."}' (by default
# FACTORY_CACHE, the model cache, is this project's .cache: on a shared filesystem, every
# node finds the converted models there instead of converting them in the job's copy).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: RAY_ADDRESS=http://HEAD:8265 $0 JOB.yaml [factory run options...]" >&2
    exit 2
fi
job_file=$1
shift
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
address=${RAY_ADDRESS:-http://127.0.0.1:8265}
ray_bin=${RAY_BIN:-ray}
python_bin=${FACTORY_PYTHON:-python}
# the model cache stays the project's own (a shared filesystem), not the job's temporary copy
env_vars=${FACTORY_RUNTIME_ENV_VARS:-"{\"FACTORY_CACHE\": \"${FACTORY_CACHE:-$root/.cache}\"}"}

# the job file travels inside the working dir when it is in the project;
# otherwise pass an absolute path that the head node can read
case "$job_file" in
    /*) ;;
    *) job_file=$(cd "$(dirname "$job_file")" && pwd)/$(basename "$job_file")
       [[ $job_file == "$root"/* ]] && job_file=${job_file#"$root"/} ;;
esac

# outputs go beside the caller unless -o/--output says otherwise (a relative
# output.dir would land in the job's temporary copy of the working dir)
has_output=0
for arg in "$@"; do [[ $arg == -o || $arg == --output || $arg == --output=* ]] && has_output=1; done
extra=()
if [[ $has_output == 0 ]]; then
    extra=(-o "${FACTORY_OUTPUT:-$PWD/out/$(basename "$job_file" .yaml)}")
fi

runtime_env=$(printf '{"working_dir": "%s", "excludes": [".venv", ".cache", "out", ".git", "**/__pycache__"], "env_vars": %s}' \
    "$root" "$env_vars")

exec "$ray_bin" job submit --address "$address" --runtime-env-json "$runtime_env" \
    -- "$python_bin" -m factory.cli run "$job_file" --ray auto "${extra[@]}" "$@"

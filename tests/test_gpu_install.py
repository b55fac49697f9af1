"""The GPU install resolves: `[vllm]` and `[sglang]` with CUDA torch for Linux
x86_64, pinned as tested sets (requirements/gpu-*.lock). pip resolves the
whole set again against each lock from PyPI's metadata alone (no CUDA
wheel is downloaded) and must pick exactly what the lock holds."""

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "requirements"))
import gpu_lock  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.network, pytest.mark.timeout(1500)]


def test_gpu_locks_pin_each_engine_with_cuda_torch():
    vllm, sglang = (gpu_lock.read_lock(gpu_lock.lock_path(e)) for e in gpu_lock.ENGINES)
    assert vllm["vllm"] == "0.32.0" and "sglang" not in vllm
    assert sglang["sglang"] == "0.5.23" and "vllm" not in sglang
    for pins in (vllm, sglang):
        assert "+cpu" not in pins["torch"] and any(n.startswith("nvidia-") for n in pins)  # a CUDA build
        assert pins["math-verify"] == "0.9.0" and "ray" in pins
    cpu = gpu_lock.read_lock(ROOT / "requirements" / "constraints-cpu.txt")
    assert vllm["torch"] == cpu["torch"].split("+")[0]  # the torch the CPU build of the same vLLM runs


def test_gpu_install_resolves_to_the_lock_for_linux_x86_64_cuda():
    def check(engine):
        try:
            return engine, gpu_lock.resolve(engine, constraints=gpu_lock.lock_path(engine))
        except RuntimeError as exc:
            if "connection" in str(exc).lower() or "network" in str(exc).lower():
                pytest.skip(f"PyPI unreachable: {exc}")
            raise

    with ThreadPoolExecutor(2) as pool:
        results = dict(pool.map(check, gpu_lock.ENGINES))
    for engine, got in results.items():
        assert got == gpu_lock.read_lock(gpu_lock.lock_path(engine)), engine

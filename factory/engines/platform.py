"""What the machine an engine runs on can do, for settings left on `auto`.

On a CPU without native bf16 (AVX2-only x86, most AMD EPYC before Zen 4)
bf16 is emulated: vLLM's CPU build ran SmolLM2-135M at 21-25 tokens/s in
bf16 and 77-82 in float32 side by side (`factory bench dtype`). So `auto`
means float32 there, bf16 where the CPU has it, and the engine's own choice
on a GPU.

vLLM also splits itself into three processes (API server, engine core,
model worker) that each import torch and pass every step over IPC. On a
small CPU box that costs more than it gives: on 2 cores the in-process
engine started a server in 31 s instead of 45 (offline: 6 s instead of 34)
and generated 157-161 tokens/s instead of 91-95 (offline 97 vs 63). So a
single-device CPU engine runs in one process; GPUs keep vLLM's own layout.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # x86: native bf16 arithmetic


def on_gpu() -> bool:
    """A CUDA device is visible to this process (without importing torch)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir())


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo."""
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip(), value.strip())
    return info


def cpu_flags() -> frozenset[str]:
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())  # x86 / aarch64


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    flags = cpu_flags()
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in flags
    return bool(flags & _BF16_FLAGS)


def resolve_dtype(dtype: str) -> str:
    """`auto`: the engine's choice on a GPU, bf16 or float32 on a CPU by what it computes natively."""
    if dtype != "auto":
        return dtype
    if on_gpu():
        return "auto"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def single_process_cpu_engine(tensor_parallel: int = 1, data_parallel: int = 1) -> bool:
    """Run vLLM's engine core and model worker inside the serving process."""
    return not on_gpu() and tensor_parallel * data_parallel == 1


# vLLM's switch for the engine core in the calling process (its V1 engine)
INPROCESS_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def gpu_defaults(enforce_eager: bool | None, max_num_seqs: int | None, cpu_seqs: int) -> tuple[bool, int | None]:
    """Settings left unset, by device: a CPU runs eager (graph capture buys
    nothing there and costs start time) with the scheduler sized to what is
    in flight; a GPU captures CUDA graphs and keeps the engine's own batch
    size (vLLM 256-1024 by GPU, SGLang by memory), sized for throughput.
    Returns (eager, max_num_seqs or None for the engine's own)."""
    gpu = on_gpu()
    eager = (not gpu) if enforce_eager is None else enforce_eager
    seqs = max_num_seqs if max_num_seqs is not None else (None if gpu else max(cpu_seqs, 16))
    return eager, seqs

"""vLLM's OpenAI-compatible server, managed by the factory."""

from __future__ import annotations

import sys

from factory.engines.managed import EngineDeadError, EngineStartError, ManagedServerEngine
from factory.engines.platform import INPROCESS_ENV, gpu_defaults, on_gpu, resolve_dtype, single_process_cpu_engine

__all__ = ["VLLMServerEngine", "EngineStartError", "EngineDeadError"]


class VLLMServerEngine(ManagedServerEngine):
    server_name = "vLLM server"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Exact per-sample token counts instead of the request's total.
        self._payload_base.setdefault("return_token_ids", True)

    @property
    def sends_seed(self) -> bool:
        return on_gpu()  # vLLM's CPU engine dies on a per-request seed (its engine seed still applies)

    def command(self, model_path: str, port: int) -> list[str]:
        c = self.cfg
        # The `vllm serve` console script is broken in the CPU build; the module works everywhere.
        # ranks above 0 of an engine spanning nodes serve nothing: `vllm serve --headless`
        module = "factory.engines.vllm_headless" if c.node_rank > 0 else "vllm.entrypoints.openai.api_server"
        cmd = [
            sys.executable, "-m", module,
            "--model", model_path, "--host", c.host, "--port", str(port),
            "--dtype", resolve_dtype(c.dtype), "--max-model-len", str(c.max_model_len),
            "--served-model-name", self.model_name, "--seed", str(c.seed),
            "--tensor-parallel-size", str(c.tensor_parallel_size), *self.template_args(),
        ]
        eager, seqs = gpu_defaults(c.enforce_eager, c.max_num_seqs, c.max_concurrency * self.sampling.n)
        if seqs is not None:
            cmd += ["--max-num-seqs", str(seqs)]
        if c.data_parallel_size > 1:
            cmd += ["--data-parallel-size", str(c.data_parallel_size)]
        if c.gpu_memory_utilization is not None:
            cmd += ["--gpu-memory-utilization", str(c.gpu_memory_utilization)]
        if "--no-enforce-eager" not in c.extra_args and eager:
            cmd.append("--enforce-eager")
        if self._single_process() and "--distributed-executor-backend" not in c.extra_args:
            cmd += ["--distributed-executor-backend", "uni"]
        return cmd + [a for a in c.extra_args if a != "--no-enforce-eager"]

    def node_args(self) -> list[str]:
        # vLLM's own multi-node way without Ray: multiprocessing workers on each node, joined over torch.distributed
        addr, _, port = (self.cfg.dist_init_addr or "").rpartition(":")
        return ["--nnodes", str(self.cfg.nnodes), "--node-rank", str(self.cfg.node_rank),
                "--master-addr", addr, "--master-port", port, "--distributed-executor-backend", "mp"]

    def _single_process(self) -> bool:
        return self.cfg.nnodes == 1 and single_process_cpu_engine(self.cfg.tensor_parallel_size, self.cfg.data_parallel_size)

    def default_env(self) -> dict[str, str]:
        env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
        return {**env, **INPROCESS_ENV} if self._single_process() else env

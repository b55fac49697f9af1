"""SGLang: its OpenAI-compatible server (managed) and its offline engine.

SGLang needs CUDA (it pins a CUDA torch), so these backends run on GPU
machines only; elsewhere `factory run` says so before starting anything and
the GPU tests skip with that reason.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys

from factory.config import SamplingConfig
from factory.engines.base import Completion, Engine, GenerationResult, failed_request
from factory.engines.chat_format import ChatFormat
from factory.engines.managed import EngineStartError, ManagedServerEngine
from factory.engines.platform import resolve_dtype
from factory.models import ensure_model


def sglang_unavailable() -> str | None:
    """Why SGLang cannot run here, or None when it can."""
    if importlib.util.find_spec("sglang") is None:
        return "the sglang package is not installed (pip install 'sglang[all]' on a CUDA machine)"
    try:
        import torch

        if not torch.cuda.is_available():
            return "SGLang needs a CUDA GPU and none is visible"
    except ImportError:
        return "SGLang needs torch with CUDA"
    return None


def _check() -> None:
    why = sglang_unavailable()
    if why:
        raise EngineStartError(f"engine.backend sglang: {why}")


class SGLangServerEngine(ManagedServerEngine):
    server_name = "SGLang server"

    async def start(self) -> None:
        _check()
        await super().start()

    async def generate(self, messages, sampling: SamplingConfig | None = None) -> GenerationResult:
        """n samples as n requests of one: SGLang reports one token total for
        a request, and each sample's own count is what the dataset stores.
        Its radix cache shares the prompt's prefill between them."""
        s = sampling or self.sampling
        if s.n == 1:
            return await super().generate(messages, s)
        ones = [s.model_copy(update={"n": 1, "seed": None if s.seed is None else s.seed + i}) for i in range(s.n)]
        parts = await asyncio.gather(*(super(SGLangServerEngine, self).generate(messages, one) for one in ones))
        failed = next((r for r in parts if r.error or r.transient), None)
        if failed is not None:
            return failed
        return GenerationResult([c for r in parts for c in r.completions], prompt_tokens=parts[0].prompt_tokens,
                                latency_s=max(r.latency_s for r in parts))

    def command(self, model_path: str, port: int) -> list[str]:
        c = self.cfg
        cmd = [
            sys.executable, "-m", "sglang.launch_server",
            "--model-path", model_path, "--host", c.host, "--port", str(port),
            "--served-model-name", self.model_name, "--random-seed", str(c.seed),
            "--context-length", str(c.max_model_len), "--dtype", resolve_dtype(c.dtype),
            "--tp-size", str(c.tensor_parallel_size), "--dp-size", str(c.data_parallel_size), *self.template_args(),
            "--enable-metrics",  # its Prometheus /metrics, re-exported by the factory per replica
        ]
        if c.gpu_memory_utilization is not None:
            cmd += ["--mem-fraction-static", str(c.gpu_memory_utilization)]
        if c.max_num_seqs is not None:
            cmd += ["--max-running-requests", str(c.max_num_seqs)]
        if c.enforce_eager:  # SGLang captures CUDA graphs unless told not to
            cmd.append("--disable-cuda-graph")
        return cmd + list(c.extra_args)

    def node_args(self) -> list[str]:
        # every rank runs launch_server; only rank 0 answers HTTP (SGLang's multi-node docs)
        return ["--nnodes", str(self.cfg.nnodes), "--node-rank", str(self.cfg.node_rank),
                "--dist-init-addr", self.cfg.dist_init_addr or ""]


class SGLangOfflineEngine(Engine):
    """`sglang.Engine` in this process; the chat template is applied here."""

    in_process = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.engine = None
        self.chat_format: ChatFormat | None = None

    async def start(self) -> None:
        _check()
        import sglang
        c = self.cfg
        path = await asyncio.to_thread(ensure_model, c.model)
        self.chat_format = await asyncio.to_thread(ChatFormat.load, c.tokenizer or path, c.chat_template)
        kwargs = dict(model_path=path, tp_size=c.tensor_parallel_size, dp_size=c.data_parallel_size,
                      random_seed=c.seed, context_length=c.max_model_len, dtype=resolve_dtype(c.dtype))
        if c.gpu_memory_utilization is not None:
            kwargs["mem_fraction_static"] = c.gpu_memory_utilization
        if c.max_num_seqs is not None:
            kwargs["max_running_requests"] = c.max_num_seqs
        if c.enforce_eager:
            kwargs["disable_cuda_graph"] = True
        kwargs.update(c.engine_kwargs)
        # built on the main thread, as SGLang expects (it installs signal handlers there)
        self.engine = sglang.Engine(**kwargs)

    async def stop(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await asyncio.to_thread(engine.shutdown)

    async def _generate_text(self, text: str, s: SamplingConfig) -> GenerationResult:
        params = {"temperature": s.temperature, "top_p": s.top_p, "max_new_tokens": s.max_tokens}
        if s.seed is not None:
            params["sampling_seed"] = s.seed
        if s.stop:
            params["stop"] = s.stop
        try:
            outs = await self.engine.async_generate(prompt=[text] * s.n, sampling_params=[params] * s.n)
        except Exception as exc:  # noqa: BLE001 - a bad request is recorded on its row, a dead engine is not
            return failed_request(exc)
        outs = outs if isinstance(outs, list) else [outs]
        comps = []
        for o in outs:
            meta = o.get("meta_info", {})
            fr = meta.get("finish_reason") or {}
            matched = fr.get("matched") if isinstance(fr, dict) else None
            comps.append(Completion(o.get("text", ""), fr.get("type") if isinstance(fr, dict) else fr,
                                    meta.get("completion_tokens"), stop_reason=matched if isinstance(matched, str) else None))
        prompt_tokens = outs[0].get("meta_info", {}).get("prompt_tokens") if outs else None
        return GenerationResult(comps, prompt_tokens=prompt_tokens)

    async def generate(self, messages, sampling: SamplingConfig | None = None) -> GenerationResult:
        return await self._generate_text(self.chat_format.prompt(messages), sampling or self.sampling)

    async def continue_generation(self, messages, partial, sampling):
        return await self._generate_text(self.chat_format.continuation(messages, partial), sampling)

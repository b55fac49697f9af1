"""vLLM's offline engine in this process, for batch throughput, two ways.

Static (`vllm.LLM`, the CPU default): the pipeline asks for one chat at a
time; here requests queue up and are handed to `LLM.chat` in batches
(whatever arrived while the previous batch ran), so the engine sees as many
sequences as the job's concurrency allows, but the next batch waits for the
longest trace of the last. A batch that vLLM rejects as a whole is retried
request by request, so one bad prompt is recorded on its own row.

Continuous (vLLM's `AsyncLLM`, the GPU default): every request goes to the
engine as it comes and joins the running batch as soon as a sequence
finishes, as vLLM's server does, so a 16k-token R1 trace never holds back
the rest.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from factory.config import SamplingConfig
from factory.engines.base import Completion, Engine, GenerationResult, failed_request
from factory.engines.chat_format import ChatFormat
from factory.engines.platform import INPROCESS_ENV, gpu_defaults, on_gpu, resolve_dtype, single_process_cpu_engine
from factory.models import ensure_model


@dataclass
class _Request:
    messages: list[dict[str, str]]
    sampling: SamplingConfig
    prompt: str | None  # set: a partial answer continued as raw text (chat_format.py says why)
    future: asyncio.Future

    @property
    def continuing(self) -> bool:
        return self.prompt is not None


class VLLMOfflineEngine(Engine):
    in_process = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.llm = None
        self.chat_format: ChatFormat | None = None
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None

    def _engine_kwargs(self, model_path: str) -> dict:
        c = self.cfg
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        single = single_process_cpu_engine(c.tensor_parallel_size, c.data_parallel_size)
        for key, value in (INPROCESS_ENV if single else {}).items():
            os.environ.setdefault(key, value)  # read by vLLM when it builds the engine
        os.environ.update(c.env)
        eager, seqs = gpu_defaults(c.enforce_eager, c.max_num_seqs, c.max_concurrency * self.sampling.n)
        kwargs = dict(model=model_path, dtype=resolve_dtype(c.dtype), max_model_len=c.max_model_len, seed=c.seed,
                      enforce_eager=eager, tensor_parallel_size=c.tensor_parallel_size)
        if seqs is not None:
            kwargs["max_num_seqs"] = seqs
        if single:
            kwargs["distributed_executor_backend"] = "uni"
        if c.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = c.gpu_memory_utilization
        kwargs.update(c.engine_kwargs)
        return kwargs

    def _make_llm(self, model_path: str):
        from vllm import LLM

        return LLM(**self._engine_kwargs(model_path))

    async def start(self) -> None:
        model_path = await asyncio.to_thread(ensure_model, self.cfg.model)
        self.llm = await asyncio.to_thread(self._make_llm, model_path)
        template = Path(self.cfg.chat_template).read_text(encoding="utf-8") if self.cfg.chat_template else None
        self.chat_format = ChatFormat(self.llm.get_tokenizer(), template)
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
            self._worker = None
        if self.llm is not None:
            llm, self.llm = self.llm, None
            shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
            if callable(shutdown):
                await asyncio.to_thread(shutdown)
            del llm

    async def _submit(self, messages, sampling, prompt=None) -> GenerationResult:
        assert self._queue is not None, "engine not started"
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(messages, sampling, prompt, fut))
        return await fut

    async def generate(self, messages, sampling: SamplingConfig | None = None) -> GenerationResult:
        return await self._submit(messages, sampling or self.sampling)

    async def continue_generation(self, messages, partial, sampling):
        return await self._submit(messages, sampling, self.chat_format.continuation(messages, partial))

    @staticmethod
    def _params(s: SamplingConfig):
        from vllm import SamplingParams

        # vLLM's CPU engine dies on a per-request seed (its engine seed still applies)
        return SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, stop=s.stop,
                              seed=s.seed if on_gpu() else None)

    def _chat(self, batch: list[_Request]) -> list:
        params = [self._params(r.sampling) for r in batch]
        if batch[0].continuing:
            return self.llm.generate([r.prompt for r in batch], sampling_params=params, use_tqdm=False)
        return self.llm.chat([r.messages for r in batch], sampling_params=params, use_tqdm=False,
                             chat_template=self.chat_format.template)

    @staticmethod
    def _result(out) -> GenerationResult:
        comps = [Completion(o.text, o.finish_reason, len(o.token_ids),
                            stop_reason=o.stop_reason if isinstance(o.stop_reason, str) else None) for o in out.outputs]
        return GenerationResult(comps, prompt_tokens=len(out.prompt_token_ids or []))

    async def _run(self, batch: list[_Request]) -> None:
        try:
            outs = await asyncio.to_thread(self._chat, batch)
            results = [self._result(o) for o in outs]
        except Exception as exc:  # noqa: BLE001 - isolate the bad request below
            failed = failed_request(exc)
            if len(batch) == 1 or failed.transient:  # a dead engine fails every request alike
                results = [failed] * len(batch)
            else:
                for r in batch:
                    await self._run([r])
                return
        for r, res in zip(batch, results):
            if not r.future.done():
                r.future.set_result(res)

    async def _loop(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            await asyncio.sleep(0)  # let requests created in the same tick arrive
            batch = [first]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            for continuing in (False, True):  # one LLM.chat call per mode
                part = [r for r in batch if r.continuing == continuing]
                if part:
                    await self._run(part)


class VLLMAsyncEngine(VLLMOfflineEngine):
    """`engine.batching: continuous`: vLLM's async engine, in this process."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ids = itertools.count()

    def _make_llm(self, model_path: str):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**self._engine_kwargs(model_path)))

    async def start(self) -> None:
        model_path = await asyncio.to_thread(ensure_model, self.cfg.model)
        self.llm = await asyncio.to_thread(self._make_llm, model_path)
        template = Path(self.cfg.chat_template).read_text(encoding="utf-8") if self.cfg.chat_template else None
        self.chat_format = ChatFormat(self.llm.tokenizer, template)

    async def stop(self) -> None:
        if self.llm is not None:
            llm, self.llm = self.llm, None
            await asyncio.to_thread(llm.shutdown)

    async def _complete(self, prompt: str, sampling: SamplingConfig) -> GenerationResult:
        final = None
        try:
            async for out in self.llm.generate(prompt, self._params(sampling), request_id=f"rf-{next(self._ids)}"):
                final = out
        except Exception as exc:  # noqa: BLE001 - a bad request is recorded on its row, a dead engine is not
            return failed_request(exc)
        return self._result(final)

    async def generate(self, messages, sampling: SamplingConfig | None = None) -> GenerationResult:
        return await self._complete(self.chat_format.prompt(messages), sampling or self.sampling)

    async def continue_generation(self, messages, partial, sampling):
        return await self._complete(self.chat_format.continuation(messages, partial), sampling)


def offline_engine_class(batching: str) -> type[VLLMOfflineEngine]:
    """`auto`: continuous batching on a GPU, static on a CPU (where one
    process runs the whole engine and batches are short)."""
    continuous = batching == "continuous" or (batching == "auto" and on_gpu())
    return VLLMAsyncEngine if continuous else VLLMOfflineEngine

"""An in-process engine (`vllm.LLM`, `sglang.Engine`) that dies is built
again and the requests it failed are sent again, like a managed server
that dies is restarted. The dead engine cannot be asked to recover: vLLM's
`EngineDeadError` is final for that `LLM` object, so a new one is made."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Awaitable, Callable

from factory.engines.base import Engine, EngineDeadError, EngineWrapper, GenerationResult

log = logging.getLogger(__name__)


class RebuildingEngine(EngineWrapper):
    """Wraps an in-process engine; at most `engine.max_restarts` rebuilds,
    then `EngineDeadError`: the local run stops (resumable) and a Ray replica
    fails at once and is replaced, instead of failing its problems one by one."""

    def __init__(self, make: Callable[[], Engine]):
        super().__init__(make())
        self.make = make
        self.rebuilds = 0
        self._built = 0  # bumped at each rebuild: a request that saw an older engine die just re-sends
        self._lock = asyncio.Lock()

    async def _send(self, request: Callable[[Engine], Awaitable[GenerationResult]]) -> GenerationResult:
        while True:
            built = self._built
            result = await request(self.inner)
            if not result.dead:
                return result
            await self._rebuild(built, result.error)

    async def _rebuild(self, built: int, error: str | None) -> None:
        async with self._lock:
            if self._built != built:
                return  # another request rebuilt it while this one waited
            if self.rebuilds >= self.cfg.max_restarts:
                raise EngineDeadError(f"the {self.cfg.backend} engine died {self.rebuilds + 1} times "
                                      f"(engine.max_restarts: {self.cfg.max_restarts}); last error: {error}")
            self.rebuilds += 1
            log.warning(f"the {self.cfg.backend} engine died ({error}); building it again "
                        f"({self.rebuilds}/{self.cfg.max_restarts}) and re-sending its requests")
            with contextlib.suppress(Exception):  # what is left of the dead one
                await self.inner.stop()
            self.inner = self.make()
            await self.inner.start()
            self._built += 1

    async def generate(self, messages, sampling=None) -> GenerationResult:
        return await self._send(lambda engine: engine.generate(messages, sampling))

    async def continue_generation(self, messages, partial, sampling) -> GenerationResult:
        return await self._send(lambda engine: engine.continue_generation(messages, partial, sampling))

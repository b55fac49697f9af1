"""The one small interface every inference backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from factory.config import EngineConfig, SamplingConfig


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    completion_tokens: int | None = None
    budget_forced: bool = False
    stop_reason: str | None = None  # the stop string that ended it, where the server says


@dataclass
class GenerationResult:
    """All samples for one prompt, or the error that stopped the request."""

    completions: list[Completion] = field(default_factory=list)
    prompt_tokens: int | None = None
    error: str | None = None
    # True when the request failed for reasons of the moment (retries ran
    # out): the problem is not stored and a re-run generates it again.
    transient: bool = False
    latency_s: float = 0.0
    dead: bool = False  # an in-process engine died under it: rebuilt and sent again (engines/rebuild.py)


# what an in-process engine raises once it is gone (vLLM's EngineDeadError): no request is at fault
_DEAD = ("EngineDeadError", "EngineDead", "DeadEngineError")


def failed_request(exc: BaseException) -> GenerationResult:
    """The result for a request an in-process engine raised on: the engine
    dying is transient (the problem is left for a re-run, the breaker counts
    it); anything else is this request's own error, stored on its row."""
    dead = type(exc).__name__ in _DEAD or isinstance(exc, (ConnectionError, EOFError, BrokenPipeError))
    return GenerationResult(error=f"{type(exc).__name__}: {str(exc)[:300]}", transient=dead, dead=dead)


class EngineStartError(RuntimeError):
    pass


class EngineDeadError(EngineStartError):
    """The engine kept dying: more restarts than engine.max_restarts."""


class Engine(ABC):
    """Start once, generate many, stop always (use `async with`)."""

    in_process = False  # an engine library in this process (vllm.LLM, sglang.Engine): rebuilt when it dies
    chat_format = None  # the model's template applied on our side, where the engine has one (chat_format.py)

    def __init__(self, cfg: EngineConfig, sampling: SamplingConfig):
        self.cfg = cfg
        self.sampling = sampling

    @property
    def model_name(self) -> str:
        return self.cfg.model_name

    @property
    def prefills_think(self) -> bool:
        """True when the chat template ends the prompt with `<think>` (R1's
        newer ones): replies then start inside the thinking, and the worker
        puts the tag back so every stored trace holds the whole block."""
        return self.chat_format is not None and self.chat_format.prefills_think

    @property
    def metrics_url(self) -> str | None:
        """Where the engine's own Prometheus metrics are (a managed server's
        /metrics), re-exported by the factory with a replica label."""
        return None

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Bring the backend up; return when it can serve."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release everything start() took, even after errors."""

    @abstractmethod
    async def generate(self, messages: list[dict[str, str]], sampling: SamplingConfig | None = None) -> GenerationResult:
        """`sampling.n` samples for one chat (the job's sampling unless given);
        never raises for a bad request."""

    async def continue_generation(self, messages: list[dict[str, str]], partial: str,
                                  sampling: SamplingConfig) -> GenerationResult:
        """Continue an assistant turn that starts with `partial` (budget forcing)."""
        raise NotImplementedError(f"{type(self).__name__} cannot continue a partial answer")

    async def __aenter__(self) -> "Engine":
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


class EngineWrapper(Engine):
    """An engine around another (budget forcing, rebuilding): what it does
    not change goes straight to `inner`."""

    def __init__(self, inner: Engine):
        super().__init__(inner.cfg, inner.sampling)
        self.inner = inner

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def prefills_think(self) -> bool:
        return self.inner.prefills_think

    @property
    def metrics_url(self) -> str | None:
        return self.inner.metrics_url

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def generate(self, messages, sampling=None) -> GenerationResult:
        return await self.inner.generate(messages, sampling)

    async def continue_generation(self, messages, partial, sampling) -> GenerationResult:
        return await self.inner.continue_generation(messages, partial, sampling)

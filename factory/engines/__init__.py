"""Inference backends behind one interface (`Engine`). Each backend module
imports its engine library (vLLM, SGLang) only when the engine starts, so
importing them all here costs nothing."""

from __future__ import annotations

from pathlib import Path

from factory.config import EngineConfig, SamplingConfig
from factory.engines.base import Completion, Engine, GenerationResult
from factory.engines.budget import BudgetForcingEngine
from factory.engines.managed import ManagedServerEngine
from factory.engines.openai_http import OpenAIEngine
from factory.engines.rebuild import RebuildingEngine
from factory.engines.sglang import SGLangOfflineEngine, SGLangServerEngine
from factory.engines.vllm_offline import VLLMOfflineEngine, offline_engine_class
from factory.engines.vllm_server import VLLMServerEngine

__all__ = ["Completion", "Engine", "GenerationResult", "build_engine"]

BACKENDS: dict[str, type[Engine]] = {
    "openai": OpenAIEngine,
    "vllm-server": VLLMServerEngine,
    "vllm-offline": VLLMOfflineEngine,
    "sglang-server": SGLangServerEngine,
    "sglang-offline": SGLangOfflineEngine,
}


def build_engine(cfg: EngineConfig, sampling: SamplingConfig, run_dir: Path | None = None) -> Engine:
    """The backend named in the job, wrapped for budget forcing if asked."""
    cls = BACKENDS.get(cfg.backend)
    if cls is None:
        raise ValueError(f"engine.backend: unknown backend {cfg.backend!r}")
    if cls is VLLMOfflineEngine:
        cls = offline_engine_class(cfg.batching)
    # managed servers keep their pid file and log in the run folder
    if issubclass(cls, ManagedServerEngine):
        engine: Engine = cls(cfg, sampling, run_dir=run_dir)
    elif cls.in_process:  # one that dies is built again (a managed server restarts itself)
        engine = RebuildingEngine(lambda: cls(cfg, sampling))
    else:
        engine = cls(cfg, sampling)
    if sampling.budget_forcing is not None:
        engine = BudgetForcingEngine(engine, sampling.budget_forcing)
    return engine

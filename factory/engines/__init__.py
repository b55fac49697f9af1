"""Inference backends behind one interface (`Engine`)."""

from __future__ import annotations

from pathlib import Path

from factory.config import EngineConfig, SamplingConfig
from factory.engines.base import Completion, Engine, GenerationResult

__all__ = ["Completion", "Engine", "GenerationResult", "build_engine"]


def build_engine(cfg: EngineConfig, sampling: SamplingConfig, run_dir: Path | None = None) -> Engine:
    """The backend named in the job, wrapped for budget forcing if asked."""
    engine = _backend(cfg, sampling, run_dir)
    if sampling.budget_forcing is not None:
        from factory.engines.budget import BudgetForcingEngine

        engine = BudgetForcingEngine(engine, sampling.budget_forcing)
    return engine


def _backend(cfg: EngineConfig, sampling: SamplingConfig, run_dir: Path | None) -> Engine:
    if cfg.backend == "openai":
        from factory.engines.openai_http import OpenAIEngine

        return OpenAIEngine(cfg, sampling)
    if cfg.backend == "vllm-server":
        from factory.engines.vllm_server import VLLMServerEngine

        return VLLMServerEngine(cfg, sampling, run_dir=run_dir)
    if cfg.backend == "vllm-offline":
        from factory.engines.vllm_offline import VLLMOfflineEngine

        return VLLMOfflineEngine(cfg, sampling)
    if cfg.backend == "sglang-server":
        from factory.engines.sglang import SGLangServerEngine

        return SGLangServerEngine(cfg, sampling, run_dir=run_dir)
    if cfg.backend == "sglang-offline":
        from factory.engines.sglang import SGLangOfflineEngine

        return SGLangOfflineEngine(cfg, sampling)
    raise ValueError(f"engine.backend: unknown backend {cfg.backend!r}")

"""Engine layer: budget forcing, the engine options, backends that need a GPU."""

import datasets
import pytest

from conftest import run_factory, sample_rows
from factory.config import EngineConfig, SamplingConfig
from factory.engines import Completion, Engine, GenerationResult, build_engine
from factory.engines.budget import BudgetForcingEngine
from factory.engines.sglang import SGLangServerEngine, sglang_unavailable
from factory.engines.vllm_server import VLLMServerEngine
from test_run_fake import fake_job


def test_budget_forcing_caps_thinking_and_forces_an_answer(tmp_path, fake_server):
    out = tmp_path / "out"
    job = fake_job(tmp_path, fake_server(), out, rows=sample_rows(6),
                   sampling={"n": 2, "max_tokens": 64, "budget_forcing": {"max_thinking_tokens": 5, "answer_max_tokens": 8}})
    run_factory("run", job, check=True)
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    for row in ds:
        assert row["budget_forced"] == [True, True]
        for g, e in zip(row["generations"], row["extracted_answers"]):
            assert len(g.split("</think>")[0].split(" ")) <= 5 + 1  # the thinking was cut at the budget
            assert "**Final Answer**" in g and e == "42"


def test_budget_wrapper_and_engine_flags():
    sampling = SamplingConfig(n=2, budget_forcing={"max_thinking_tokens": 100})
    eng = build_engine(EngineConfig(backend="openai", base_url="http://x"), sampling)
    assert isinstance(eng, BudgetForcingEngine) and eng.budget.max_thinking_tokens == 100
    cfg = EngineConfig(model="m", tensor_parallel_size=4, data_parallel_size=2, gpu_memory_utilization=0.85,
                       enforce_eager=False, extra_args=["--max-num-batched-tokens", "8192"])
    cmd = VLLMServerEngine(cfg, SamplingConfig()).command("/models/m", 8000)
    for flag in (["--tensor-parallel-size", "4"], ["--data-parallel-size", "2"], ["--gpu-memory-utilization", "0.85"],
                 ["--max-num-batched-tokens", "8192"]):
        i = cmd.index(flag[0])
        assert cmd[i + 1] == flag[1]
    assert "--enforce-eager" not in cmd
    sg = SGLangServerEngine(cfg, SamplingConfig()).command("/models/m", 8000)
    assert sg[sg.index("--tp-size") + 1] == "4" and sg[sg.index("--mem-fraction-static") + 1] == "0.85"


@pytest.mark.skipif(sglang_unavailable() is None, reason="SGLang is available here")
def test_sglang_says_why_it_cannot_run(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text(__import__("json").dumps(sample_rows(1)[0]) + "\n")
    from conftest import write_job

    job = write_job(tmp_path / "j.yaml", src, tmp_path / "out", engine={"backend": "sglang-server"})
    proc = run_factory("run", job)
    assert proc.returncode == 1 and "engine.backend sglang:" in proc.stderr and "Traceback" not in proc.stderr


GPU_REASON = sglang_unavailable()


@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"SGLang cannot run here: {GPU_REASON}")
@pytest.mark.parametrize("backend", ["sglang-server", "sglang-offline"])
def test_sglang_backends_on_gpu(tmp_path, backend):  # pragma: no cover - GPU machines only
    from conftest import write_job, write_jsonl

    src = write_jsonl(tmp_path / "p.jsonl", sample_rows(8))
    job = write_job(tmp_path / "j.yaml", src, tmp_path / "out", engine={"backend": backend, "model": "smollm2-135m"},
                    sampling={"n": 2, "max_tokens": 64})
    run_factory("run", job, check=True)
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"), split="train")
    assert len(ds) == 8 and all(len(g) == 2 for g in ds["generations"])


class _Recorder(Engine):
    """Answers every request at once and remembers the sampling it was asked for."""

    def __init__(self, sampling):
        super().__init__(EngineConfig(backend="openai", base_url="http://x", model="m"), sampling)
        self.asked: list[SamplingConfig] = []

    async def generate(self, messages, sampling=None):
        s = sampling or self.sampling
        self.asked.append(s)
        return GenerationResult([Completion("VERDICT: YES", "length", s.max_tokens)])

    async def continue_generation(self, messages, partial, sampling):
        raise AssertionError("a judge request must not be continued")


def test_budget_forcing_leaves_judge_requests_alone():
    """With budget forcing and the judge both on, the judge (here the
    generation engine itself, as when verify.judge.engine is unset) is asked
    with its own sampling, uncapped and never given the answer cue."""
    import asyncio

    from factory.config import JudgeConfig
    from factory.verify.judge import LLMJudge

    sampling = SamplingConfig(n=2, max_tokens=4096, budget_forcing={"max_thinking_tokens": 10})
    inner = _Recorder(sampling)
    engine = BudgetForcingEngine(inner, sampling.budget_forcing)
    judge = LLMJudge(JudgeConfig(enabled=True, max_tokens=300), engine)
    verdict = asyncio.run(judge.judge("1+1?", "2", "3", "<think>x</think> 3"))
    assert verdict == "correct"
    (asked,) = inner.asked
    assert asked.max_tokens == 300 and asked.n == 1 and "</think>" not in (asked.stop or [])


def test_a_judge_engine_is_never_budget_forced(tmp_path):
    from factory.config import JobConfig
    from factory.worker import build_engines

    job = JobConfig.model_validate({
        "name": "t", "source": {"path": str(tmp_path)}, "output": {"dir": str(tmp_path / "o")},
        "sampling": {"budget_forcing": {"max_thinking_tokens": 10}},
        "verify": {"judge": {"enabled": True, "engine": {"backend": "openai", "base_url": "http://j", "model": "j"}}}})
    gen, judge = build_engines(job, tmp_path)
    assert isinstance(gen, BudgetForcingEngine) and not isinstance(judge, BudgetForcingEngine)
    assert judge.sampling.budget_forcing is None

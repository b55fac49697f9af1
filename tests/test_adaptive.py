"""Adaptive sampling (factory/sampling.py): rounds per problem until the
goal is met, the per-problem record, run budgets, exact resume."""

import asyncio
import json
import urllib.request

import datasets
import pytest

from conftest import SAMPLE_PROBLEMS, kill_at_random, needs_ray, read_uuids, run_factory, sample_rows, stored_rows
from factory.config import AdaptiveConfig, SamplingConfig
from factory.sampling import SampleBudget, round_seed, spent_after_first, stop_reason
from factory.store.schema import SCHEMA
from test_run_fake import fake_job

ADAPTIVE_COLUMNS = ["generations", "correct", "samples_drawn", "sampling_rounds", "sampling_stop", "messages"]


@pytest.mark.parametrize("goal, skip, correct, drawn, rounds, cap, expected", [
    ("one_correct", True, 1, 1, 1, 4, "goal"),
    ("one_correct", True, 0, 3, 3, 4, None),
    ("one_correct", True, 0, 4, 4, 4, "cap"),
    ("correct_and_wrong", True, 2, 2, 1, 4, "all_solved"),  # easy: no wrong trace worth the samples
    ("correct_and_wrong", False, 2, 2, 1, 4, None),
    ("correct_and_wrong", True, 1, 3, 2, 4, "goal"),
    ("correct_and_wrong", True, 0, 4, 3, 4, "cap"),
    ("fixed", False, 1, 2, 1, 4, None),
    ("fixed", False, 1, 4, 2, 4, "cap"),
])
def test_stop_reason(goal, skip, correct, drawn, rounds, cap, expected):
    policy = AdaptiveConfig(goal=goal, skip_solved=skip)
    assert stop_reason(policy, cap, correct, drawn, rounds) == expected


def test_seeds_budget_and_spent():
    assert round_seed(None, "u", 0) is None
    assert round_seed(3, "u", 1) == round_seed(3, "u", 1) != round_seed(3, "u", 2) != round_seed(3, "v", 2)

    async def draws():
        b = SampleBudget(samples=5, tokens=None, spent_samples=2)
        return [await b.take(2) for _ in range(3)]

    assert asyncio.run(draws()) == [2, 1, 0]

    async def tokens():
        b = SampleBudget(samples=None, tokens=100)
        first = await b.take(4)
        await b.spend_tokens(120)
        return first, await b.take(4)

    assert asyncio.run(tokens()) == (4, 0)
    rows = [{"samples_drawn": 1, "completion_tokens": [9]}, {"samples_drawn": 3, "completion_tokens": [9, 4, 5]}]
    assert (spent_after_first(rows, 1).samples, spent_after_first(rows, 1).tokens) == (2, 9)
    with pytest.raises(ValueError, match="sampling.adaptive.first .5. is above the per-problem cap .4"):
        SamplingConfig(n=4, adaptive={"first": 5})
    assert {"samples_drawn", "sampling_rounds", "sampling_stop"} <= set(SCHEMA.names)


def adaptive_run(tmp_path, url, name, rows=None, **adaptive):
    out = tmp_path / name
    sampling = {"n": 6, "max_tokens": 64, "seed": 11, "adaptive": {"first": 1, "batch": 1, **adaptive}}
    job = fake_job(tmp_path, url, out, rows=rows, sampling=sampling)
    proc = run_factory("run", job, check=True)
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    return out, proc, ds


def test_one_correct_stops_at_the_first_verified_trace(tmp_path, fake_server):
    """The fake answers right about half the time per seed: problems stop at
    their first verified trace, the rest at the cap; lists vary in length."""
    _, proc, ds = adaptive_run(tmp_path, fake_server(), "one")
    assert len(ds) == SAMPLE_PROBLEMS
    stops = {r["sampling_stop"] for r in ds}
    assert stops <= {"goal", "cap"} and "goal" in stops
    for r in ds:
        n = r["samples_drawn"]
        assert n == len(r["generations"]) == len(r["correct"]) == len(r["finish_reasons"]) == r["sampling_rounds"]
        if r["sampling_stop"] == "goal":
            assert r["correct"] == [False] * (n - 1) + [True]  # stopped at the first verified one
        else:
            assert n == 6 and not any(r["correct"])
    assert len({n for n in ds["samples_drawn"]}) > 1  # the OpenR1 list columns simply vary in length
    assert sum(ds["samples_drawn"]) < 6 * SAMPLE_PROBLEMS
    assert "problems generated (this run)" in proc.stdout


def test_rounds_draw_new_samples_with_their_seeds(tmp_path, fake_server):
    """Each round sends its own seed: a problem's later samples are not its
    first one again (the fake is deterministic per prompt, index and seed)."""
    _, _, ds = adaptive_run(tmp_path, fake_server(), "seeds", rows=sample_rows(12), max_samples=4, goal="fixed",
                            skip_solved=False)
    assert all(r["samples_drawn"] == 4 and r["sampling_rounds"] == 4 and r["sampling_stop"] == "cap" for r in ds)
    assert any(len(set(r["correct"])) == 2 for r in ds)  # rounds differ: both verdicts within one problem


def easy_rows(k: int) -> list[dict]:
    """Problems the fake solves with every sample (and the usual ones after)."""
    easy = [dict(r, answer="7", problem=f"{r['problem']} The answer is always 7.") for r in sample_rows(k)]
    return easy + sample_rows()


def test_correct_and_wrong_and_skip_solved(tmp_path, fake_server):
    _, _, ds = adaptive_run(tmp_path, fake_server(), "pairs", rows=easy_rows(4), goal="correct_and_wrong", first=2)
    for r in ds:
        c = r["correct"]
        if r["sampling_stop"] == "goal":
            assert any(c) and not all(c)
        elif r["sampling_stop"] == "all_solved":
            assert c == [True, True] and r["sampling_rounds"] == 1
        else:
            assert r["sampling_stop"] == "cap" and r["samples_drawn"] == 6 and len(set(c)) == 1
    easy = [r["sampling_stop"] for r in ds if "The answer is always 7." in r["problem"]]
    assert easy == ["all_solved"] * 4 and "goal" in ds["sampling_stop"]


def test_a_run_budget_is_spent_only_after_first_rounds_and_survives_a_resume(tmp_path, fake_server):
    url = fake_server()
    out, _, first = adaptive_run(tmp_path, url, "budget", rows=sample_rows(20), budget_samples=12)
    extra = sum(r["samples_drawn"] - 1 for r in first)
    assert extra <= 12 and "budget" in set(first["sampling_stop"])
    # a resumed run over more problems shares what is left of the same budget
    job = fake_job(tmp_path, url, out, rows=sample_rows(), sampling={
        "n": 6, "max_tokens": 64, "seed": 11, "adaptive": {"first": 1, "batch": 1, "budget_samples": 12}})
    run_factory("run", job, check=True)
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(ds) == SAMPLE_PROBLEMS and sum(r["samples_drawn"] - 1 for r in ds) <= 12
    assert all(r["samples_drawn"] == 1 for r in ds if r["uuid"] not in set(first["uuid"]))  # nothing left


@pytest.mark.reliability
def test_kill9_between_and_within_rounds_then_resume_is_exact(tmp_path, fake_server):
    """Adaptive sampling SIGKILLed at random moments (between rounds and
    within them), each followed by a resume: the same samples per problem,
    none twice, as an uninterrupted run."""
    sampling = {"n": 4, "max_tokens": 64, "seed": 5, "adaptive": {"first": 1, "batch": 1}}
    ref = tmp_path / "ref"
    run_factory("run", fake_job(tmp_path, fake_server(), ref, sampling=sampling), check=True)
    out = tmp_path / "out"
    url = fake_server(latency=0.15)
    job = fake_job(tmp_path, url, out, engine={"max_concurrency": 2}, sampling=sampling,
                   output={"shard_rows": 2, "flush_interval_s": 0.2})
    kills = kill_at_random(job, out, 8, SAMPLE_PROBLEMS, seed=3, lives=(0.5, 3.0))
    assert kills >= 8
    run_factory("run", job, check=True)
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == SAMPLE_PROBLEMS
    assert stored_rows(out, ADAPTIVE_COLUMNS) == stored_rows(ref, ADAPTIVE_COLUMNS)
    requests = json.loads(urllib.request.urlopen(f"{url}/stats", timeout=5).read())["requests"]
    assert requests >= sum(r["sampling_rounds"] for r in stored_rows(ref, ADAPTIVE_COLUMNS).values())


@needs_ray
def test_adaptive_sampling_on_ray_replicas(tmp_path, fake_server):
    """Later rounds are work like any other on Ray: the same rows as locally."""
    url = fake_server()
    local, _, _ = adaptive_run(tmp_path, url, "local", rows=sample_rows(16))
    out = tmp_path / "ray"
    job = fake_job(tmp_path, url, out, rows=sample_rows(16),
                   sampling={"n": 6, "max_tokens": 64, "seed": 11, "adaptive": {"first": 1, "batch": 1, "budget_samples": 200}},
                   scale={"mode": "ray", "replicas": 2, "chunk_size": 4, "replica_cpus": 0.2, "verifier_cpus": 0.1})
    run_factory("run", job, check=True, timeout=600)
    cols = ["generations", "samples_drawn", "sampling_stop"]
    assert stored_rows(out, cols) == stored_rows(local, cols)


def test_bench_adaptive_simulation_is_paired_and_counts_right():
    """The simulated arms see the same draws in order: stopping at the first
    verified trace keeps the fixed recipe's coverage exactly, with fewer
    generations; a higher cap covers more."""
    from factory.bench.adaptive import bench_adaptive_sim, expected_coverage

    r = bench_adaptive_sim(problems=600)
    fixed, cap4, cap6 = r["arms"]
    assert fixed["generations"] == 4 * 600 and fixed["per_1k_generations_x"] == 1.0
    assert cap4["covered"] == fixed["covered"] and cap4["generations"] < fixed["generations"]
    assert cap4["tokens"] < fixed["tokens"] and cap6["covered"] >= fixed["covered"]
    assert abs(fixed["coverage"] - expected_coverage(4)) < 0.06  # the stated mixture: about 55% covered by four
    assert 0.5 < expected_coverage(4) < 0.6


@pytest.mark.parametrize("gpu", [False, True])
def test_per_request_seeds_never_reach_vllm_on_cpu(monkeypatch, gpu):
    from factory.config import EngineConfig
    from factory.engines import platform, vllm_offline, vllm_server

    for module in (platform, vllm_offline, vllm_server):
        monkeypatch.setattr(module, "on_gpu", lambda: gpu)
    s = SamplingConfig(seed=9)
    server = vllm_server.VLLMServerEngine(EngineConfig(), s)
    assert ("seed" in server._payload(s, messages=[])) == gpu
    from factory.engines.openai_http import OpenAIEngine

    assert OpenAIEngine(EngineConfig(backend="openai", base_url="http://x"), s)._payload(s, messages=[])["seed"] == 9

"""The OpenAI client against a misbehaving server: the fake server's `--faults`
answers 429/5xx, drops connections, stalls and sends garbage; every request
must still end, with its samples or a transient error once retries run out.

Fault draws are seeded by (seed, request body, attempt), so these runs are
deterministic. `--fault-limit` caps the faults any one request meets below
the client's retries, so success is certain and the backoff (0.5 s doubling)
stays short whatever the draws: the assertions hold for any seed."""

import asyncio
import json
import urllib.request

import pyarrow.parquet as pq
import pytest

from conftest import read_uuids, run_factory, sample_rows, write_job, write_jsonl
from factory.config import EngineConfig, SamplingConfig
from factory.engines.openai_http import OpenAIEngine

MIXED = "429=0.05,500=0.05,503=0.05,slow=0.05,drop=0.05,garbage=0.05"
FAULTS = ("429", "500", "503", "slow", "drop", "garbage")


@pytest.fixture
def faulty_server(fake_server):
    """The fake server with `--faults SPEC` (and a cap on faults per request body)."""

    def start(faults: str, seed: int = 0, limit: int | None = None, slow_seconds: float = 2.0,
              latency: float = 0.0) -> str:
        extra = ["--faults", faults, "--fault-seed", str(seed), "--slow-seconds", str(slow_seconds)]
        if limit is not None:
            extra += ["--fault-limit", str(limit)]
        return fake_server(latency, *extra)

    return start


def server_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/stats", timeout=5) as resp:
        return json.load(resp)


def generate_all(url: str, prompts: list[str], timeout_s: float = 50.0, **engine):
    """Every prompt at once through one OpenAIEngine; (results, engine.retries)."""
    cfg = EngineConfig(**{"backend": "openai", "base_url": url, "model": "fake", "max_concurrency": 16,
                          "max_retries": 8, "request_timeout_s": 1.0, **engine})

    async def main():
        async with OpenAIEngine(cfg, SamplingConfig(n=2)) as eng:
            calls = (eng.generate([{"role": "user", "content": p}]) for p in prompts)
            results = await asyncio.wait_for(asyncio.gather(*calls), timeout_s)  # nothing hangs
            return results, eng.retries

    return asyncio.run(main())


def test_mixed_faults_all_requests_end(faulty_server):
    url = faulty_server(MIXED, limit=4, slow_seconds=1.5)  # a slow answer outlasts the 1 s client timeout
    prompts = [f"Problem {i}: what is {i} + {i}?" for i in range(200)]
    results, retries = generate_all(url, prompts)

    assert len(results) == len(prompts)
    ok = [r for r in results if r.error is None and len(r.completions) == 2]
    failed = [r for r in results if r.transient and not r.completions and r.error.startswith("gave up")]
    assert len(ok) + len(failed) == len(prompts), [r.error for r in results if r not in ok and r not in failed]
    assert len(ok) == len(prompts)  # at most 4 faults each, 8 retries
    assert all(p in r.completions[0].text for p, r in zip(prompts, results) if r in ok)

    st = server_stats(url)
    outcomes = st["outcomes"]
    assert sum(outcomes.values()) == st["requests"]
    assert all(outcomes[kind] > 0 for kind in FAULTS), outcomes
    assert outcomes["400"] == 0
    assert outcomes["ok"] >= len(ok)
    # every fault the server injected failed one attempt of the client
    faults = sum(outcomes[kind] for kind in FAULTS)
    assert retries > 0 and retries + len(failed) >= faults


def test_client_error_is_not_retried(faulty_server):
    url = faulty_server("400=1.0")
    prompts = [f"Problem {i}" for i in range(20)]
    results, retries = generate_all(url, prompts, timeout_s=20)

    assert len(results) == len(prompts)
    assert all(r.error.startswith("HTTP 400") and not r.transient and not r.completions for r in results)
    assert retries == 0
    st = server_stats(url)
    assert st["requests"] == len(prompts) and st["outcomes"]["400"] == len(prompts)


def test_retries_run_out_as_transient_error(faulty_server):
    url = faulty_server("500=1.0")
    prompts = [f"Problem {i}" for i in range(10)]
    results, retries = generate_all(url, prompts, timeout_s=20, max_retries=2)

    assert len(results) == len(prompts)
    assert all(r.transient and not r.completions and r.error.startswith("gave up after 3 attempts: HTTP 500")
               for r in results)
    assert retries == 2 * len(prompts)
    st = server_stats(url)
    assert st["requests"] == st["outcomes"]["500"] == 3 * len(prompts)


@pytest.mark.parametrize("slow_seconds", [1.5, 0.5])
def test_slow_answer_times_out_and_is_retried(faulty_server, slow_seconds):
    """A stall longer than request_timeout_s is a timeout, retried; a shorter one is just slow."""
    url = faulty_server("slow=0.5", limit=2, slow_seconds=slow_seconds)
    prompts = [f"Problem {i}" for i in range(12)]
    results, retries = generate_all(url, prompts, timeout_s=40)

    assert all(r.error is None and len(r.completions) == 2 for r in results)
    slow = server_stats(url)["outcomes"]["slow"]
    assert slow > 0  # odds of none: 0.5**12
    if slow_seconds > 1.0:
        assert retries == slow  # each stall cost one timeout and one retry
        assert any(r.latency_s > 1.0 for r in results)
    else:
        assert retries == 0
        assert sum(r.latency_s >= slow_seconds for r in results) == slow


def test_cli_run_through_faulty_server(tmp_path, faulty_server):
    url = faulty_server("429=0.15,500=0.1,drop=0.05,garbage=0.05", limit=4)
    src = write_jsonl(tmp_path / "problems.jsonl", sample_rows(30))
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", src, out,
                    engine={"backend": "openai", "base_url": url, "model": "fake", "max_concurrency": 8, "max_retries": 8})
    proc = run_factory("run", job, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    accepted = json.loads((out / "prepared" / "report.json").read_text())["accepted"]
    assert 0 < accepted <= 30
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == accepted
    rows = [r for shard in sorted((out / "data").glob("*.parquet"))
            for r in pq.read_table(shard, columns=["generations", "error"]).to_pylist()]
    assert all(len(r["generations"]) == 2 and r["error"] is None for r in rows)
    outcomes = server_stats(url)["outcomes"]
    assert sum(outcomes[kind] for kind in FAULTS) > 0, outcomes
    assert outcomes["ok"] >= accepted

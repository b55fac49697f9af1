"""The Prometheus endpoint: exact values from RunStats, and live scrapes of
a running job that agree with its final metrics.json."""

import json
import subprocess
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import FACTORY, ROOT, wait_for, SAMPLE_PROBLEMS
from factory.engines.managed import free_port
from factory.metrics import RunStats, StatsCollector
from test_run_fake import fake_job


def samples(text: str) -> dict:
    """{(name, frozenset(labels without factory_job)): value}"""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            assert "job" not in s.labels  # Prometheus's own label: ours would become exported_job
            labels = frozenset((k, v) for k, v in s.labels.items() if k != "factory_job")
            out[(s.name, labels)] = s.value
    return out


def row(correct, latency, tokens=(10, 20), rules=None, status=("ok", "ok"), judge=None):
    """A stored row as RunStats reads it: `rules` what Math-Verify said, `judge` the judge's verdicts."""
    return {"generations": ["a", "b"], "correctness_count": sum(correct), "is_reasoning_complete": [True, False],
            "prompt_tokens": 7, "completion_tokens": list(tokens), "error": None, "generation_time_s": latency,
            "correctness_math_verify": list(rules if rules is not None else correct), "verify_status": list(status),
            "judge_verdicts": judge}


def test_collector_reports_runstats_exactly():
    st = RunStats()
    st.record(row([True, False], 0.7, judge=[None, "incorrect"]))
    other = RunStats()  # as shipped from a Ray replica
    other.record(row([False, False], 42.0, status=("no_answer", "no_answer")))
    st.merge(other.counts())
    st.problems_failed = 1
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector("t", lambda: st, {"factory_in_flight": ("in flight", lambda: 3)}))
    got = samples(generate_latest(registry).decode())
    assert got[("factory_problems_total", frozenset({("state", "done")}))] == 2
    assert got[("factory_problems_total", frozenset({("state", "failed")}))] == 1
    assert got[("factory_generations_total", frozenset())] == 4
    assert got[("factory_generations_correct_total", frozenset({("stage", "rules")}))] == 1
    assert got[("factory_verify_status_total", frozenset({("status", "no_answer")}))] == 2
    assert got[("factory_judge_verdicts_total", frozenset({("verdict", "incorrect")}))] == 1
    assert got[("factory_tokens_total", frozenset({("kind", "completion")}))] == 60
    assert got[("factory_generation_latency_seconds_bucket", frozenset({("le", "1.0")}))] == 1
    assert got[("factory_generation_latency_seconds_bucket", frozenset({("le", "30.0")}))] == 1
    assert got[("factory_generation_latency_seconds_bucket", frozenset({("le", "60.0")}))] == 2
    assert got[("factory_generation_latency_seconds_count", frozenset())] == 2
    assert abs(got[("factory_generation_latency_seconds_sum", frozenset())] - 42.7) < 1e-9
    assert got[("factory_in_flight", frozenset())] == 3


def test_live_scrapes_of_a_running_job(tmp_path, fake_server):
    out = tmp_path / "out"
    port = free_port()
    job = fake_job(tmp_path, fake_server(latency=0.2), out, engine={"max_concurrency": 2})
    proc = subprocess.Popen([*FACTORY, "run", str(job), "--metrics-port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scrapes = []

    def scrape():
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return False
        scrapes.append(samples(text))
        return scrapes[-1].get(("factory_problems_total", frozenset({("state", "done")})), 0) >= 10

    wait_for(scrape, 120, "10 problems seen through /metrics", interval=0.2)
    mid = scrapes[-1]
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"metrics: http://127.0.0.1:{port}/metrics" in err
    final = json.loads((out / "metrics.json").read_text())["stats"]
    done = mid[("factory_problems_total", frozenset({("state", "done")}))]
    assert 10 <= done <= final["problems_done"] == SAMPLE_PROBLEMS
    assert mid[("factory_generations_total", frozenset())] == 2 * done
    assert mid[("factory_problems_pending", frozenset())] == SAMPLE_PROBLEMS - done
    assert 0 <= mid[("factory_in_flight", frozenset())] <= 2  # bounded by engine.max_concurrency
    assert mid[("factory_generation_latency_seconds_count", frozenset())] == done
    # the endpoint goes away with the run
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
        raise AssertionError("the metrics server outlived the run")
    except OSError:
        pass


def test_dashboard_queries_only_exported_metrics():
    import re

    st = RunStats()
    st.record(row([False, False], 1.0, judge=["incorrect", "incorrect"]))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector("t", lambda: st, {"factory_problems_pending": ("", lambda: 0),
                                                     "factory_in_flight": ("", lambda: 0)}))
    exported = {name for name, _ in samples(generate_latest(registry).decode())}
    dashboard = json.loads((ROOT / "dashboards" / "factory.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bfactory_\w+", e)} - {"factory_job"}  # the label
    assert used and used <= exported, used - exported


VLLM_PAGE = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 1234.0
"""


def test_engine_metrics_are_re_exported_per_replica():
    """The engines' own pages, merged into the factory's with a replica
    label; a page that cannot be parsed is left out, not fatal."""
    odd = "# TYPE vllm:x counter\nvllm:x_total 1\n"  # a TYPE name without its samples' suffix
    pages = [("0", VLLM_PAGE), ("1", VLLM_PAGE.replace("3.0", "5.0")), ("2", "vllm:broken{"), ("3", odd)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector("t", RunStats, {}, engines=lambda: pages))
    text = generate_latest(registry).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    running = {s.labels["replica"]: s.value for s in fams["vllm:num_requests_running"].samples}
    assert running == {"0": 3.0, "1": 5.0}
    assert text.count("# TYPE vllm:x_total") == 1  # never two families of one name (Prometheus would drop the scrape)
    tokens = fams["vllm:generation_tokens"].samples
    assert {s.labels["factory_job"] for s in tokens} == {"t"} and all("job" not in s.labels for s in tokens)

"""Run statistics: what the progress bar, the summary, `status` and the
Prometheus endpoint report.

The counters live in one plain `RunStats` (mergeable, so Ray replicas ship
theirs to the driver); Prometheus reads them at scrape time through a
collector, so the hot path never touches a metrics library.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Callable

# upper bounds (seconds) of the per-problem generation latency histogram
LATENCY_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
WINDOW_S = 60.0  # the progress line's and the endpoint's rates are over the last minute


@dataclass
class RunStats:
    started_at: float = field(default_factory=time.time)
    problems_read: int = 0
    problems_skipped_done: int = 0
    problems_rejected: int = 0
    problems_done: int = 0
    problems_failed: int = 0
    problems_with_correct: int = 0
    generations: int = 0
    generations_correct: int = 0
    generations_rule_correct: int = 0
    generations_complete: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    request_errors: int = 0
    replica_restarts: int = 0  # Ray: dead replicas replaced
    chunks_resent: int = 0  # Ray: chunks sent again after a replica failed
    texts_repaired: int = 0  # generations with a lone surrogate or NUL byte, replaced by U+FFFD
    latency_sum_s: float = 0.0
    latency_buckets: list = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))  # last: +Inf
    verify_status: Counter = field(default_factory=Counter)
    judge_verdicts: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0  # engines ready -> last problem finished (ticked as problems finish)

    COUNTERS = ("problems_done", "problems_failed", "problems_with_correct", "generations", "generations_correct",
                "generations_rule_correct", "generations_complete", "prompt_tokens", "completion_tokens",
                "request_errors", "texts_repaired")

    def record(self, row: dict) -> None:
        """Count one stored problem from its row alone (as built by
        worker.build_row), so rows read back from a shard count the same."""
        self.problems_done += 1
        self.generations += len(row["generations"])
        self.generations_rule_correct += sum(row["correctness_math_verify"])
        self.judge_verdicts.update(j for j in row["judge_verdicts"] or [] if j)
        self.generations_correct += row["correctness_count"]
        self.problems_with_correct += row["correctness_count"] > 0
        self.generations_complete += sum(row["is_reasoning_complete"])
        self.prompt_tokens += row["prompt_tokens"] or 0
        self.completion_tokens += sum(t or 0 for t in row["completion_tokens"])
        self.verify_status.update(row["verify_status"])
        if row["error"]:
            self.request_errors += 1
        latency = row["generation_time_s"] or 0.0
        self.latency_sum_s += latency
        self.latency_buckets[next((i for i, b in enumerate(LATENCY_BUCKETS) if latency <= b), len(LATENCY_BUCKETS))] += 1

    def counts(self) -> dict:
        """The additive part, to ship from a Ray replica to the driver."""
        d = {k: getattr(self, k) for k in self.COUNTERS}
        d["latency_sum_s"] = self.latency_sum_s
        d["latency_buckets"] = list(self.latency_buckets)
        d["verify_status"] = dict(self.verify_status)
        d["judge_verdicts"] = dict(self.judge_verdicts)
        return d

    def merge(self, counts: dict) -> None:
        for k in self.COUNTERS:
            setattr(self, k, getattr(self, k) + counts.get(k, 0))
        self.verify_status.update(counts.get("verify_status", {}))
        self.judge_verdicts.update(counts.get("judge_verdicts", {}))
        self.latency_sum_s += counts.get("latency_sum_s", 0.0)
        for i, k in enumerate(counts.get("latency_buckets", [])):
            self.latency_buckets[i] += k

    def start_clock(self) -> None:
        """Throughput is measured from here: the engines are up."""
        self.started_at = time.time()

    def tick(self) -> None:
        now = time.time()
        self.elapsed_s = now - self.started_at
        window = self.__dict__.setdefault("_window", deque())  # not a field: never serialized or merged
        window.append((now, self.completion_tokens, self.problems_done))
        while len(window) > 2 and now - window[1][0] >= WINDOW_S:
            window.popleft()

    def window_rates(self) -> tuple[float, float]:
        """(completion tokens/s, problems/s) over about the last WINDOW_S
        seconds, not the mean since the start: what the engine does now."""
        window = self.__dict__.get("_window")
        if not window or len(window) < 2 or window[-1][0] <= window[0][0]:
            return self.tokens_per_s, (self.problems_done / self.elapsed_s if self.elapsed_s > 0 else 0.0)
        (t0, tok0, p0), (t1, tok1, p1) = window[0], window[-1]
        return (tok1 - tok0) / (t1 - t0), (p1 - p0) / (t1 - t0)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def generations_per_s(self) -> float:
        return self.generations / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def correct_share(self) -> float:
        return self.generations_correct / self.generations if self.generations else 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["verify_status"] = dict(self.verify_status)
        d["judge_verdicts"] = dict(self.judge_verdicts)
        d.update(
            tokens_per_s=round(self.tokens_per_s, 2),
            generations_per_s=round(self.generations_per_s, 2),
            correct_share=round(self.correct_share, 4),
        )
        return d


# The factory job's name. Not `job`: Prometheus attaches its own `job` (the
# scrape job) to every series and would rename ours to `exported_job`.
JOB_LABEL = "factory_job"


class StatsCollector:
    """The Prometheus view of a run, read from its RunStats at scrape time.

    `stats` returns the run's current RunStats (the runner replaces it when
    the engines come up); `gauges` maps extra gauge names to callables.
    """

    def __init__(self, job: str, stats: Callable[[], RunStats], gauges: dict[str, tuple[str, Callable[[], float]]],
                 engines: Callable[[], list[tuple[str, str]]] | None = None):
        self.job = job
        self.stats = stats
        self.gauges = gauges
        self.engines = engines  # (replica, the engine's /metrics text) for each engine up

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        st, job = self.stats(), [self.job]

        def counter(name, doc, values, label=None):
            fam = CounterMetricFamily(name, doc, labels=[JOB_LABEL, label] if label else [JOB_LABEL])
            for key, value in values:
                fam.add_metric(job + ([key] if label else []), value)
            return fam

        yield counter("factory_problems", "Problems by outcome (done: stored this run)", [
            ("done", st.problems_done), ("failed", st.problems_failed), ("skipped_done", st.problems_skipped_done),
            ("rejected", st.problems_rejected)], "state")
        yield counter("factory_generations", "Generations stored this run", [(None, st.generations)])
        yield counter("factory_generations_correct", "Correct generations by the stage that accepted them", [
            ("rules", st.generations_rule_correct), ("final", st.generations_correct)], "stage")
        yield counter("factory_verify_status", "Rule-stage verdicts by status", sorted(dict(st.verify_status).items()), "status")
        yield counter("factory_judge_verdicts", "LLM judge verdicts on rule rejects", sorted(dict(st.judge_verdicts).items()), "verdict")
        yield counter("factory_tokens", "Tokens by kind", [("prompt", st.prompt_tokens), ("completion", st.completion_tokens)], "kind")
        yield counter("factory_request_errors", "Requests that ended in an error", [(None, st.request_errors)])
        yield counter("factory_replica_restarts", "Ray replicas replaced", [(None, st.replica_restarts)])
        yield counter("factory_chunks_resent", "Ray chunks re-sent after a replica failed", [(None, st.chunks_resent)])
        hist = HistogramMetricFamily("factory_generation_latency_seconds", "Time to generate all samples of one problem",
                                     labels=[JOB_LABEL])
        cumulative, buckets = 0, []
        for bound, k in zip([*map(str, LATENCY_BUCKETS), "+Inf"], st.latency_buckets):
            cumulative += k
            buckets.append((bound, cumulative))
        hist.add_metric(job, buckets, st.latency_sum_s)
        yield hist
        for name, (doc, fn) in self.gauges.items():
            fam = GaugeMetricFamily(name, doc, labels=[JOB_LABEL])
            fam.add_metric(job, float(fn()))
            yield fam
        if self.engines is not None:
            yield from relabel_engines(self.engines(), self.job)


def serve_metrics(collector: StatsCollector, port: int, host: str = "127.0.0.1"):
    """Serve /metrics in a background thread; returns the server (call shutdown()).

    Always in Prometheus's classic text format: asked for OpenMetrics (as
    Prometheus asks), prometheus_client rewrites the `:` of the engines'
    names (vllm:num_requests_running) in the samples but not in their
    family, and Prometheus then drops them."""
    import threading
    from wsgiref.simple_server import make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    inner = make_wsgi_app(registry)

    def app(environ, start_response):
        environ.pop("HTTP_ACCEPT", None)  # the text format, whatever the scraper prefers
        return inner(environ, start_response)

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_SilentHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def fetch_text(url: str, timeout_s: float = 2.0) -> str | None:
    """An engine's /metrics page, or None when it cannot be had right now."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def relabel_engines(pages: list[tuple[str, str]], job: str):
    """The engines' own metrics (vLLM: running and waiting requests, KV-cache
    use, tokens, preemptions; SGLang's), one family per name across
    replicas, each sample labelled with its `replica` and the factory job."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    merged: dict[str, Metric] = {}
    for replica, text in pages:
        try:
            families = list(text_string_to_metric_families(text))
        except (ValueError, TypeError):
            continue  # a page cut short: skip this scrape of it
        for fam in families:
            if not fam.samples:  # a TYPE line with no samples under that name: nothing to re-export
                continue
            out = merged.get(fam.name)
            if out is None:
                out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            for sample in fam.samples:
                labels = {**sample.labels, "replica": replica, JOB_LABEL: job}
                out.add_sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
    yield from merged.values()

"""`factory report OUT`: a run judged from pictures. A self-contained HTML
page (the plots inlined) and the PNGs, from the folder alone, so it works
on a run in progress (committed shards only) as on a finished one.

Plots: throughput over time (windowed, from the manifest's commit times),
generation lengths for correct, wrong and cut-off traces, pass rate by
source and by problem type, finish reasons, outcomes per verification
stage, samples per problem, and cost (engine-hours, and money at the
GPU-hour price given). The dataset card shows the main ones (`CARD_PLOTS`).
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from factory.store.shards import Manifest

COLUMNS = ["source", "problem_type", "correct", "correctness_math_verify", "judge_verdicts", "verify_status",
           "finish_reasons", "completion_tokens", "samples_drawn"]
CARD_PLOTS = ("throughput", "lengths", "pass_rate_by_source", "verification")
COLORS = {"correct": "#2a9d8f", "wrong": "#e76f51", "cut off": "#8d99ae"}


@dataclass
class RunData:
    rows: list[dict] = field(default_factory=list)
    commits: list[tuple[float, int]] = field(default_factory=list)  # (time, rows) per shard committed
    job: dict = field(default_factory=dict)
    last_run: dict = field(default_factory=dict)


def load(out: Path) -> RunData:
    """Committed shards only: a shard being written is not in the manifest yet."""
    import pyarrow.parquet as pq

    data, files = load_meta(out)
    for path in files:
        names = set(pq.read_schema(path).names)
        data.rows += pq.read_table(path, columns=[c for c in COLUMNS if c in names]).to_pylist()
    return data


def load_meta(out: Path) -> tuple[RunData, list[Path]]:
    """Everything but the rows, and the committed shard files to read them from."""
    manifest = Manifest(out / "manifest.jsonl")
    manifest.load(repair=False)
    data, files = RunData(), []
    for entry in manifest.entries:
        path = out / entry["file"]
        if path.is_file():
            files.append(path)
            if "time" in entry:
                data.commits.append((entry["time"], entry["rows"]))
    if (out / "job.json").is_file():
        data.job = json.loads((out / "job.json").read_text())
    if (out / "metrics.json").is_file():
        data.last_run = json.loads((out / "metrics.json").read_text()).get("stats", {})
    return data, files


def add_table(data: RunData, table) -> None:
    """The rows of a shard already read (finalize reads each shard once)."""
    data.rows += table.select([c for c in COLUMNS if c in table.column_names]).to_pylist()


def traces(rows: list[dict]):
    """(kind, completion tokens) per generation: correct, wrong (finished) or cut off."""
    for r in rows:
        for ok, finish, tokens in zip(r["correct"], r["finish_reasons"], r["completion_tokens"] or []):
            kind = "correct" if ok else ("cut off" if finish == "length" else "wrong")
            yield kind, tokens or 0


def verification_outcomes(rows: list[dict]) -> Counter:
    c: Counter = Counter()
    for r in rows:
        judged = r.get("judge_verdicts") or [None] * len(r["correct"])
        for rule, judge, status in zip(r["correctness_math_verify"], judged, r["verify_status"]):
            if rule:
                c["rules: correct"] += 1
            elif status == "timeout":
                c["rules: timeout"] += 1
            elif status == "no_answer":
                c["rules: no answer"] += 1
            elif judge is None:
                c["rules: wrong"] += 1
            else:
                c[f"judge: {judge}"] += 1
    return c


def engine_hours(data: RunData) -> float:
    """Engine time of the run: the last run's engine-up time, else the span of its commits."""
    seconds = data.last_run.get("elapsed_s") or 0.0
    if not seconds and len(data.commits) > 1:
        seconds = max(t for t, _ in data.commits) - min(t for t, _ in data.commits)
    return seconds / 3600


def gpus(job: dict) -> int:
    eng, scale = job.get("engine", {}), job.get("scale", {})
    per = scale.get("gpus_per_replica") or eng.get("tensor_parallel_size", 1) * eng.get("data_parallel_size", 1)
    return per * (scale.get("replicas") or 1)


def _figure(title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    ax.set_title(title)
    return fig, ax


def _bars(ax, labels, values, color="#264653", horizontal=False):
    if horizontal:
        ax.barh(labels, values, color=color)
    else:
        ax.bar(labels, values, color=color)
        ax.tick_params(axis="x", labelrotation=20)
    if not values:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)


def plots(data: RunData, price_per_gpu_hour: float | None = None) -> dict[str, object]:
    """{name: matplotlib figure}."""
    figs = {}
    rows = data.rows

    fig, ax = _figure("Throughput (problems stored per minute, windowed)")
    if data.commits:
        commits = sorted(data.commits)
        t0 = commits[0][0]
        span = max(commits[-1][0] - t0, 60.0)
        width = max(span / 30, 10.0)  # about 30 windows over the run
        bins: dict[int, int] = defaultdict(int)
        for t, n in commits:
            bins[int((t - t0) // width)] += n
        xs = [(k + 0.5) * width / 60 for k in range(max(bins) + 1)]
        ax.plot(xs, [60 * bins.get(k, 0) / width for k in range(len(xs))], marker="o", color="#264653")
        ax.set_xlabel("minutes since the first commit")
        ax.set_ylabel("problems / min")
    else:
        ax.text(0.5, 0.5, "no shard committed yet", ha="center", va="center", transform=ax.transAxes)
    figs["throughput"] = fig

    fig, ax = _figure("Generation length by outcome")
    by_kind: dict[str, list[int]] = defaultdict(list)
    for kind, tokens in traces(rows):
        by_kind[kind].append(tokens)
    for kind in ("correct", "wrong", "cut off"):
        if by_kind[kind]:
            ax.hist(by_kind[kind], bins=30, alpha=0.6, label=f"{kind} ({len(by_kind[kind])})", color=COLORS[kind])
    ax.set_xlabel("completion tokens")
    ax.set_ylabel("generations")
    if by_kind:
        ax.legend()
    figs["lengths"] = fig

    for key, title in (("source", "Pass rate by source"), ("problem_type", "Pass rate by problem type")):
        groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in rows:
            g = groups[str(r.get(key) or "unknown")]
            g[0] += sum(r["correct"])
            g[1] += len(r["correct"])
        top = sorted(groups.items(), key=lambda kv: -kv[1][1])[:15]
        fig, ax = _figure(f"{title} (share of generations verified correct)")
        _bars(ax, [k for k, _ in top], [100 * c / n if n else 0 for _, (c, n) in top], horizontal=True)
        ax.set_xlabel("% correct")
        figs[f"pass_rate_by_{key}"] = fig

    fig, ax = _figure("Finish reasons")
    finish = Counter(f for r in rows for f in r["finish_reasons"])
    _bars(ax, list(finish), list(finish.values()))
    figs["finish_reasons"] = fig

    fig, ax = _figure("Outcomes per verification stage")
    outcomes = verification_outcomes(rows)
    _bars(ax, list(outcomes), list(outcomes.values()), color="#2a9d8f", horizontal=True)
    ax.set_xlabel("generations")
    figs["verification"] = fig

    fig, ax = _figure("Samples per problem")
    samples = Counter(r.get("samples_drawn") or len(r["correct"]) for r in rows)
    ks = sorted(samples)
    _bars(ax, [str(k) for k in ks], [samples[k] for k in ks])
    ax.set_xlabel("samples drawn")
    ax.set_ylabel("problems")
    figs["samples_per_problem"] = fig

    fig, ax = _figure("Cost")
    hours = engine_hours(data)
    gpu_hours = hours * max(gpus(data.job), 1)
    labels, values = ["engine-hours", "GPU-hours"], [hours, gpu_hours]
    if price_per_gpu_hour is not None:
        labels.append(f"money (at {price_per_gpu_hour:g}/GPU-h)")
        values.append(gpu_hours * price_per_gpu_hour)
    _bars(ax, labels, values, color="#e9c46a")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.3g}", ha="center", va="bottom")
    figs["cost"] = fig
    return figs


def write_plots(data: RunData, folder: Path, price_per_gpu_hour: float | None = None,
                names: tuple[str, ...] | None = None) -> dict[str, Path]:
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, fig in plots(data, price_per_gpu_hour).items():
        if names is None or name in names:
            path = folder / f"{name}.png"
            fig.tight_layout()
            fig.savefig(path)
            written[name] = path
        plt.close(fig)
    return written


def write_report(out: Path, price_per_gpu_hour: float | None = None, folder: Path | None = None) -> Path:
    """OUT/report/index.html (self-contained) and the PNGs beside it."""
    data = load(out)
    folder = folder or out / "report"
    pngs = write_plots(data, folder, price_per_gpu_hour)
    rows = data.rows
    generations = sum(len(r["correct"]) for r in rows)
    solved = sum(any(r["correct"]) for r in rows)
    hours = engine_hours(data)
    facts = [("problems stored", len(rows)), ("generations", generations),
             ("problems with a verified trace", f"{solved} ({100 * solved / len(rows):.1f}%)" if rows else "0"),
             ("engine-hours", f"{hours:.3f}"), ("GPUs per run", max(gpus(data.job), 1))]
    if price_per_gpu_hour is not None:
        facts.append(("cost", f"{hours * max(gpus(data.job), 1) * price_per_gpu_hour:.2f} at {price_per_gpu_hour:g} per GPU-hour"))
    images = "\n".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{html.escape(name.replace('_', ' '))}</figcaption></figure>" for name, p in pngs.items())
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    title = html.escape(data.job.get("name", out.name))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}: run report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1500px}}figure{{display:inline-block;margin:0.5em}}
img{{max-width:700px}}th{{text-align:left;padding-right:1em}}</style></head><body>
<h1>{title}</h1><p>{html.escape(str(out))}, {time.strftime('%Y-%m-%d %H:%M:%S')}</p>
<table>{table}</table>
{images}
</body></html>
"""
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    return index

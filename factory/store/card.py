"""The dataset card: Hub front matter, the run's numbers, how to load it."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pyarrow.parquet as pq

from factory import assets

CARD_TEMPLATE = Path(__file__).with_name("card.md.jinja")
_LEN_BUCKETS = [0, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def run_stats(data_dir: Path) -> dict[str, Any]:
    """Counts from the shards themselves, so the card matches the data."""
    st: dict[str, Any] = defaultdict(int)
    src: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    lengths: list[int] = []
    cols = ["source", "correctness_math_verify", "correct", "is_reasoning_complete", "completion_tokens",
            "prompt_tokens", "correctness_count", "judge_verdicts", "judge_model"]
    judge_model = None
    for shard in sorted(data_dir.glob("*.parquet")):
        for batch in pq.ParquetFile(shard).iter_batches(columns=cols, batch_size=4096):
            for r in batch.to_pylist():
                s = src[r["source"] or "unknown"]
                n = len(r["correct"] or [])
                st["problems"] += 1
                st["generations"] += n
                st["rule_correct"] += sum(r["correctness_math_verify"] or [])
                st["correct"] += sum(r["correct"] or [])
                st["complete"] += sum(r["is_reasoning_complete"] or [])
                st["prompt_tokens"] += r["prompt_tokens"] or 0
                toks = [t for t in (r["completion_tokens"] or []) if t is not None]
                st["completion_tokens"] += sum(toks)
                lengths += toks
                st["judge_recovered"] += sum(v == "correct" for v in (r["judge_verdicts"] or []))
                judge_model = judge_model or r["judge_model"]
                solved = (r["correctness_count"] or 0) > 0
                st["problems_with_correct"] += solved
                s["problems"] += 1
                s["generations"] += n
                s["correct"] += sum(r["correct"] or [])
                s["solved"] += solved
    arr = np.array(lengths or [0])
    st.update(len_p10=int(np.percentile(arr, 10)), len_p50=int(np.percentile(arr, 50)),
              len_p90=int(np.percentile(arr, 90)), len_max=int(arr.max()))
    hist = []
    for lo, hi in zip(_LEN_BUCKETS, _LEN_BUCKETS[1:] + [None]):
        c = int(((arr >= lo) & (arr < hi)).sum()) if hi else int((arr >= lo).sum())
        if c and lengths:
            hist.append((f"{lo}-{hi - 1}" if hi else f">={lo}", c))
    st["len_hist"] = hist
    st["by_source"] = [dict(source=k, **v) for k, v in sorted(src.items())]
    st["judge_model"] = judge_model
    return dict(st)


def _pct(a: int, b: int) -> str:
    return f"{a} ({100 * a / b:.1f}%)" if b else "0"


def render_card(out: Path, repo_id: str, job: dict[str, Any], schema, license: str = "apache-2.0") -> str:
    stats = run_stats(out / "data")
    prompt = assets.prompt_path(job["prompt"]["template"])
    model = job["engine"].get("served_model_name") or job["engine"]["model"]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.globals["pct"] = _pct
    tpl = env.from_string(CARD_TEMPLATE.read_text(encoding="utf-8"))
    configs = [dict(name=name, folder=folder, rows=rows, what=what) for name, folder, rows, what in (
        ("default", "default", stats["problems_with_correct"], "problems with at least one verified-correct generation"),
        ("all", "data", stats["problems"], "every problem generated"),
    ) if rows]  # a config without files would make `load_dataset` fail for every config
    return tpl.render(
        configs=configs, license=license, size_category=size_category(stats["problems"]), title=repo_id.split("/")[-1],
        repo_id=repo_id, stats=stats, sampling=job["sampling"], job=job, model=model, judge_model=stats["judge_model"],
        prompt_text=prompt.read_text(encoding="utf-8").strip() if prompt else job["prompt"]["template"],
        features=[{"name": f.name, "type": str(f.type)} for f in schema],
    )


def load_job_snapshot(out: Path) -> dict[str, Any]:
    path = out / "job.json"
    if not path.is_file():
        raise FileNotFoundError(f"{out}: no job.json; is this the output folder of a `factory run`?")
    return json.loads(path.read_text(encoding="utf-8"))

"""The dataset card: Hub front matter, the run's numbers, how to load it."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pyarrow as pa

from factory import assets
from factory.config import EngineConfig

CARD_TEMPLATE = Path(__file__).with_name("card.md.jinja")
_LEN_BUCKETS = [0, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


class CardStats:
    """The card's counts, added up shard by shard as `finalize` reads them,
    so the card matches the data and no shard is read twice."""

    COUNTS = ("problems", "generations", "rule_correct", "correct", "complete", "prompt_tokens", "completion_tokens",
              "judge_recovered", "problems_with_correct")
    COLUMNS = ["source", "correctness_math_verify", "correct", "is_reasoning_complete", "completion_tokens",
               "prompt_tokens", "correctness_count", "judge_verdicts", "judge_model"]

    def __init__(self) -> None:
        self.st: dict[str, int] = dict.fromkeys(self.COUNTS, 0)  # an empty run still has every count
        self.src: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.lengths: list[int] = []
        self.judge_model: str | None = None

    def add(self, table: pa.Table) -> None:
        st = self.st
        for r in table.select(self.COLUMNS).to_pylist():
            s = self.src[r["source"] or "unknown"]
            n = len(r["correct"] or [])
            st["problems"] += 1
            st["generations"] += n
            st["rule_correct"] += sum(r["correctness_math_verify"] or [])
            st["correct"] += sum(r["correct"] or [])
            st["complete"] += sum(r["is_reasoning_complete"] or [])
            st["prompt_tokens"] += r["prompt_tokens"] or 0
            toks = [t for t in (r["completion_tokens"] or []) if t is not None]
            st["completion_tokens"] += sum(toks)
            self.lengths += toks
            st["judge_recovered"] += sum(v == "correct" for v in (r["judge_verdicts"] or []))
            self.judge_model = self.judge_model or r["judge_model"]
            solved = (r["correctness_count"] or 0) > 0
            st["problems_with_correct"] += solved
            s["problems"] += 1
            s["generations"] += n
            s["correct"] += sum(r["correct"] or [])
            s["solved"] += solved

    def result(self) -> dict[str, Any]:
        st: dict[str, Any] = dict(self.st)
        lengths = self.lengths
        arr = np.array(lengths or [0])
        st.update(len_p10=int(np.percentile(arr, 10)), len_p50=int(np.percentile(arr, 50)),
                  len_p90=int(np.percentile(arr, 90)), len_max=int(arr.max()))
        hist = []
        for lo, hi in zip(_LEN_BUCKETS, _LEN_BUCKETS[1:] + [None]):
            c = int(((arr >= lo) & (arr < hi)).sum()) if hi else int((arr >= lo).sum())
            if c and lengths:
                hist.append((f"{lo}-{hi - 1}" if hi else f">={lo}", c))
        st["len_hist"] = hist
        st["by_source"] = [dict(source=k, **v) for k, v in sorted(self.src.items())]
        st["judge_model"] = self.judge_model
        return st


def _pct(a: int, b: int) -> str:
    return f"{a} ({100 * a / b:.1f}%)" if b else "0"


def prompt_text(job: dict[str, Any]) -> str:
    """The prompt template as the card quotes it (config stores its resolved path)."""
    path = assets.prompt_path(job["prompt"]["template"])
    return path.read_text(encoding="utf-8").strip() if path else job["prompt"]["template"]


def render_card(repo_id: str, job: dict[str, Any], schema, stats: dict[str, Any], plots: list[str] | None = None) -> str:
    model = EngineConfig.model_validate(job["engine"]).model_name
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.globals["pct"] = _pct
    tpl = env.from_string(CARD_TEMPLATE.read_text(encoding="utf-8"))
    configs = [dict(name=name, folder=folder, rows=rows, what=what) for name, folder, rows, what in (
        ("default", "default", stats["problems_with_correct"], "problems with at least one verified-correct generation"),
        ("all", "data", stats["problems"], "every problem generated"),
    ) if rows]  # a config without files would make `load_dataset` fail for every config
    return tpl.render(
        configs=configs, license=job["output"]["license"], size_category=size_category(stats["problems"]),
        title=repo_id.split("/")[-1], repo_id=repo_id, stats=stats, sampling=job["sampling"], job=job, model=model,
        judge_model=stats["judge_model"], prompt_text=prompt_text(job),
        prompt_name=Path(job["prompt"]["template"]).name,  # config stores a resolved path: no local folder on the Hub
        features=[{"name": f.name, "type": str(f.type)} for f in schema],
        plots=[{"path": p, "name": Path(p).stem.replace("_", " ")} for p in plots or []],
    )


def load_job_snapshot(out: Path) -> dict[str, Any]:
    path = out / "job.json"
    if not path.is_file():
        raise FileNotFoundError(f"{out}: no job.json; is this the output folder of a `factory run`?")
    return json.loads(path.read_text(encoding="utf-8"))

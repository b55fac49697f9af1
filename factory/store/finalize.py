"""The Hub layout of a run folder: `default/` (problems with a verified
generation), the `all` config (`data/`) and the card, from one pass over the
shards. Written at the end of a run and at push, with the job's license;
re-running it after more shards land simply refreshes it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from factory.report import CARD_PLOTS, add_table, load_meta, write_plots
from factory.store.card import CardStats, load_job_snapshot, render_card
from factory.store.schema import SCHEMA
from factory.store.shards import shard_paths, write_table_atomic, write_text_atomic


def default_repo_id(job: dict) -> str:
    push = job["output"].get("push")
    return push["repo_id"] if push else f"your-org/{job['name']}"


def finalize(out: Path, repo_id: str | None = None) -> Path:
    """Write `default/` and README.md; `repo_id` defaults to the job's push target."""
    job = load_job_snapshot(out)
    default_dir = out / "default"
    default_dir.mkdir(exist_ok=True)
    stats = CardStats()
    wanted = set()
    plot_data, committed = load_meta(out)
    committed = set(committed)
    for shard in shard_paths(out / "data"):
        table = pq.read_table(shard)
        stats.add(table)
        if shard in committed:
            add_table(plot_data, table)
        kept = table.filter(pc.greater(table.column("correctness_count"), 0))
        if kept.num_rows:
            target = default_dir / shard.name
            wanted.add(target.name)
            if not target.exists() or pq.read_metadata(target).num_rows != kept.num_rows:
                write_table_atomic(kept, target)
    for stale in default_dir.glob("*.parquet"):
        if stale.name not in wanted:
            stale.unlink()
    plots = [p.relative_to(out).as_posix() for p in write_plots(plot_data, out / "plots", names=CARD_PLOTS).values()]
    card = render_card(repo_id or default_repo_id(job), job, SCHEMA, stats.result(), plots)
    write_text_atomic(out / "README.md", card)
    return out


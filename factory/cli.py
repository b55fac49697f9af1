"""The `factory` command line (typer + rich).

User mistakes (a bad job file, a missing path) print one line and exit 2;
no traceback. Interrupted runs exit 130 and keep every finished problem.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from factory.config import ConfigError, load_job
from factory.logs import log_to

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Reasoning Factory: verified reasoning-trace datasets.")
model_app = typer.Typer(no_args_is_help=True, help="Built-in models.")
app.add_typer(model_app, name="model")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


@app.callback()
def _setup() -> None:
    """Runs before every command, however the CLI was started (entry point, `-m`)."""
    log_to(lambda m: console.print(m, highlight=False))  # every module's log lines, on stderr


def fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _summary(result) -> Table:
    st = result.stats
    t = Table(title="run summary", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("problems generated (this run)", f"{st.problems_done}")
    t.add_row("problems skipped (already stored)", f"{st.problems_skipped_done}")
    t.add_row("problems rejected by preparation", f"{st.problems_rejected}")
    if st.problems_failed:
        t.add_row("problems failed (re-run to retry)", f"[red]{st.problems_failed}[/]")
    t.add_row("generations", f"{st.generations}")
    t.add_row("prompt / completion tokens", f"{st.prompt_tokens} / {st.completion_tokens}")
    t.add_row("tokens/s", f"{st.tokens_per_s:.1f}")
    t.add_row("verified correct", f"{st.generations_correct}/{st.generations} ({100 * st.correct_share:.1f}%)")
    if st.judge_verdicts:
        t.add_row("  by the rules (Math-Verify)", f"{st.generations_rule_correct}")
        t.add_row("  judge verdicts on rejects", ", ".join(f"{k}={v}" for k, v in sorted(st.judge_verdicts.items())))
    t.add_row("problems with a correct trace", f"{st.problems_with_correct}")
    t.add_row("verify status", ", ".join(f"{k}={v}" for k, v in sorted(st.verify_status.items())) or "-")
    if st.replica_restarts or st.chunks_resent:
        t.add_row("Ray replicas replaced / chunks re-sent", f"{st.replica_restarts} / {st.chunks_resent}")
    t.add_row("problems in the store", f"{result.stored_problems}")
    t.add_row("output", str(result.out_dir / "data"))
    return t


@app.command()
def run(
    job_file: Path = typer.Argument(..., help="job YAML file"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="output folder (overrides output.dir)"),
    set_: list[str] = typer.Option([], "--set", help="override a setting: key.sub=value (repeatable)"),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS",
                                      help="run on Ray: a cluster address, 'auto', or 'local' to start one here"),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="serve Prometheus /metrics on this port"),
) -> None:
    """Run a job, or resume it: problems already stored are not generated again."""
    if ray is not None:
        set_ = [*set_, "scale.mode=ray", f"scale.address={ray}"]
    if metrics_port is not None:
        set_ = [*set_, f"metrics.port={metrics_port}"]
    try:
        job = load_job(job_file, set_, output)
    except ConfigError as exc:
        fail(str(exc))
    from factory.engines.managed import EngineStartError
    from factory.models import ModelError
    from factory.pipeline import RunError, run_job
    from factory.worker import EngineFailing
    from factory.prompts import PromptError

    console.print(f"[bold]{job.name}[/]: {job.source.label} -> {job.output.dir}  "
                  f"(engine {job.engine.backend}, model {job.engine.model}, n={job.sampling.n})", highlight=False)
    progress = Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        transient=False, disable=not console.is_terminal and os.environ.get("FACTORY_PROGRESS") != "1",
    )
    task = progress.add_task("problems", total=None, rate="")

    def on_progress(stats, total):
        tokens_s, _ = stats.window_rates()  # the last minute, not the mean since the start
        progress.update(task, total=total, completed=stats.problems_done + stats.problems_failed,
                        rate=f"{tokens_s:.0f} tok/s, {100 * stats.correct_share:.0f}% correct")

    last_print = [0.0]

    def plain_progress(stats, total):  # for logs when stderr is not a terminal
        on_progress(stats, total)
        if progress.disable and stats.elapsed_s - last_print[0] >= 10:
            last_print[0] = stats.elapsed_s
            console.print(f"progress: {stats.problems_done}/{total} problems, {stats.window_rates()[0]:.0f} tok/s "
                          "(last minute)", highlight=False)

    try:
        with progress:
            result = run_job(job, on_progress=plain_progress)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished problems are stored; run the same command to resume")
        raise typer.Exit(130)
    except ConfigError as exc:  # what a stage found wrong with the job when it was built
        fail(str(exc))
    except (PromptError, ModelError, EngineStartError, RunError, EngineFailing) as exc:
        fail(str(exc), 1)
    except OSError as exc:  # a full disk, a quota, a file size limit (pyarrow's errors carry no errno)
        what = exc.strerror or str(exc) or type(exc).__name__
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or "written" in what or "space" in what
        fail(f"cannot write {exc.filename or job.output.dir}: {what}. Every shard is written whole or not at all, "
             f"so nothing stored is damaged: {'free some space and ' if full else ''}run the same command to resume", 1)
    out.print(_summary(result))
    if job.output.push is not None:
        if result.stats.problems_failed:
            fail("not pushing: some problems failed; re-run to finish them first", 1)
        p = job.output.push
        _push(result.out_dir, p.repo_id, p.private, p.revision, refresh=False)  # the run just wrote the card


def _push(run_dir: Path, repo_id: str, private: bool, revision: Optional[str], refresh: bool = True) -> None:
    from factory.hub import PushError, push as hub_push

    try:
        res = hub_push(run_dir, repo_id, private=private, revision=revision, refresh=refresh)
    except (PushError, FileNotFoundError) as exc:
        fail(str(exc), 1)
    out.print(f"pushed to {res.repo_id}@{res.revision}: {len(res.uploaded)} file(s) uploaded in {res.commits} "
              f"commit(s), {len(res.skipped)} already there, {len(res.deleted)} stale deleted", highlight=False)


@app.command()
def push(
    run_dir: Path = typer.Argument(..., help="output folder of a run"),
    repo_id: str = typer.Option(..., "--repo-id", help="ORG/NAME of the dataset repo"),
    private: bool = typer.Option(False, "--private", help="create the repo private"),
    revision: Optional[str] = typer.Option(None, "--revision", help="branch to push to (created if missing)"),
) -> None:
    """Dataset card + shards to the Hub; a second push sends only what is missing."""
    if not (run_dir / "data").is_dir():
        fail(f"{run_dir}: no data/ folder; is this the output folder of a run?")
    _push(run_dir, repo_id, private, revision)


@app.command("export")
def export_cmd(
    kind: str = typer.Argument(..., help="sft | rl | dpo"),
    run_dir: Path = typer.Argument(..., help="output folder of a run"),
    output: Path = typer.Option(..., "-o", "--output", help="folder for train-00000.parquet"),
) -> None:
    """Layouts for trainers: sft (messages), rl (prompt, answer, rewards), dpo (prompt, chosen, rejected)."""
    from factory.store.export import EXPORTS, export

    if kind not in EXPORTS:
        fail(f"unknown export {kind!r}: choose one of {', '.join(EXPORTS)}")
    if not (run_dir / "data").is_dir():
        fail(f"{run_dir}: no data/ folder; is this the output folder of a run?")
    n = export(kind, run_dir, output)
    out.print(f"{kind}: {n} rows -> {output / 'train-00000.parquet'}")


@app.command()
def prepare(
    source: str = typer.Argument(..., help="jsonl(.gz/.zst) or parquet file, folder or glob; or a Hub dataset name"),
    output: Path = typer.Option(..., "-o", "--output", help="folder for problems.parquet, rejects.jsonl, report.json"),
    set_: list[str] = typer.Option([], "--set", help="a source setting: key=value, e.g. dedup.threshold=0.9"),
) -> None:
    """Only the preparation stage: validate, normalize, dedupe, decontaminate."""
    from factory.config import load_source
    from factory.sources.prepare import check_source, prepare_to_dir

    try:
        cfg = load_source(source, set_)
        check_source(cfg)
    except ConfigError as exc:
        fail(str(exc))
    progress = Progress(TextColumn("rows read"), TextColumn("{task.completed}"), TimeElapsedColumn(),
                        console=console, transient=True)
    task = progress.add_task("read", total=None)
    try:
        with progress:
            report = prepare_to_dir(cfg, output, on_progress=lambda r: progress.update(task, completed=r.read))
    except (OSError, ValueError) as exc:
        fail(f"{source}: {exc}", 1)
    t = Table(title=f"prepare: {source}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("rows read", str(report.read))
    t.add_row("accepted", str(report.accepted))
    t.add_row("rejected", str(sum(report.rejected.values())))
    for reason, n in sorted(report.rejected.items()):
        t.add_row(f"  {reason}", str(n))
    t.add_row("output", str(output))
    out.print(t)


@app.command()
def status(
    run_dir: Path = typer.Argument(..., help="output folder of a run"),
    check: bool = typer.Option(False, "--check", help="verify the manifest against the shards"),
    watch: bool = typer.Option(False, "--watch", help="refresh until Ctrl-C or the run is done"),
    interval: float = typer.Option(10.0, min=0.1, help="seconds between refreshes with --watch"),
    window: float = typer.Option(10.0, min=0.1, help="minutes the rate is taken over"),
) -> None:
    """Where a run stands (also while it runs): stored, pending, rate, ETA, errors by kind."""
    from factory.store.check import check_store
    from factory.store.status import run_status

    if not run_dir.is_dir():
        fail(f"not a folder: {run_dir}")
    if check:
        res = check_store(run_dir)
        for p in res.problems:
            console.print(f"[red]damage:[/] {p}", highlight=False)
        out.print(f"check: {res.shards} shard(s), {res.rows} rows: {'ok' if res.ok else f'{len(res.problems)} problem(s)'}")
        if not res.ok:
            raise typer.Exit(1)
        return
    try:
        while True:
            st = run_status(run_dir, window * 60)
            _print_status(st)
            if not watch or (st.running is None and st.pending == 0):  # --watch ends with the run it watched
                return
            time.sleep(interval)
            out.print("")
    except KeyboardInterrupt:
        return


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h} h {rest // 60:02d} min" if h else f"{rest // 60} min {rest % 60:02d} s"


def _print_status(st) -> None:
    who = st.running
    state = f"running (pid {who.get('pid')} on {who.get('host')}, since {who.get('started')})" if who else "not running"
    out.print(f"{time.strftime('%H:%M:%S')} {st.stored} problems stored in {st.shards} shard(s); {state}", highlight=False)
    if st.pending is not None:
        out.print(f"pending (prepared, not stored yet): {st.pending}", highlight=False)
    minutes = f"{st.window_s / 60:g} min"
    if st.rate_per_s is None:
        out.print(f"rate (last {minutes}): not enough commits yet", highlight=False)
    else:
        out.print(f"rate (last {minutes}): {60 * st.rate_per_s:.1f} problems/min", highlight=False)
    if st.pending:
        eta = st.eta_s
        out.print(f"ETA: {_duration(eta) if eta is not None else 'unknown'}" + ("" if who else " (once a run is going)"),
                  highlight=False)
    if st.last_run:
        lr = st.last_run
        out.print(f"last run: {lr['problems_done']} problems, {lr['generations']} generations, "
                  f"{lr['tokens_per_s']} tok/s, {100 * lr['correct_share']:.1f}% correct", highlight=False)
    out.print(f"failed in the last run (not stored, tried again on the next run): {st.failed_last_run}", highlight=False)
    kinds = ", ".join(f"{k}: {v}" for k, v in st.errors.most_common()) or "none"
    out.print(f"stored with an error (the request itself was rejected, e.g. a prompt over the context length): "
              f"{sum(st.errors.values())} ({kinds})", highlight=False)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="output folder of a run (finished or in progress)"),
    price: Optional[float] = typer.Option(None, "--price-per-gpu-hour", min=0, help="for the cost plot, in your currency"),
    folder: Optional[Path] = typer.Option(None, "-o", "--output", help="where the report goes (default OUT/report)"),
) -> None:
    """An HTML report with plots (and the PNGs): throughput, lengths, pass rates, finish reasons, verification, samples, cost."""
    from factory.report import write_report

    if not (run_dir / "manifest.jsonl").is_file() and not (run_dir / "job.json").is_file():
        fail(f"not the output folder of a run: {run_dir}")
    index = write_report(run_dir, price, folder)
    out.print(f"report: {index} ({len(list(index.parent.glob('*.png')))} plots)", highlight=False)


def _judge_engine(backend: str | None, model: str | None, base_url: str | None):
    """An engine for `--judge-*` options, or None when no judge is asked for."""
    if not model and not base_url:
        return None
    from factory.config import EngineConfig, SamplingConfig
    from factory.engines import build_engine

    backend = backend or ("openai" if base_url else "vllm-server")
    try:
        cfg = EngineConfig(backend=backend, model=model or "judge", base_url=base_url, max_concurrency=16)
    except ValueError as exc:
        fail(f"judge settings: {exc}")
    return build_engine(cfg, SamplingConfig(n=1))


@app.command()
def verify(
    src: Optional[Path] = typer.Argument(None, help="jsonl or parquet of (gold, generation) rows"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="output file (.jsonl or .parquet)"),
    gold_column: str = typer.Option("answer", help="column with the gold answer"),
    generation_column: str = typer.Option("generation", help="column with the generation (a list is verified element-wise)"),
    preset: str = typer.Option("default", help="cascade preset from verifiers/presets.yaml"),
    workers: int = typer.Option(2, min=1, help="verification worker processes"),
    timeout: int = typer.Option(5, min=1, help="seconds per comparison (whole seconds)"),
    judge_model: Optional[str] = typer.Option(None, help="LLM judge model for rule rejects"),
    judge_base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible URL of the judge"),
    judge_backend: Optional[str] = typer.Option(None, help="openai | vllm-server (default: openai if a URL is given)"),
    calibrate: bool = typer.Option(False, "--calibrate", help="score raw Math-Verify and the cascade on the labelled sets in verifiers/"),
    cases: Optional[list[Path]] = typer.Option(None, "--cases", help="with --calibrate: labelled jsonl file(s) instead of verifiers/*.jsonl"),
) -> None:
    """Run the verification cascade on a file, standalone (or --calibrate)."""
    import asyncio

    from factory.config import JudgeConfig, VerifyConfig
    from factory.verify.normalize import RulesError, load_preset
    from factory.verify.standalone import VerifyInputError, calibrate as run_calibration, maybe_engine, verify_file

    try:
        load_preset(preset)
    except RulesError as exc:
        fail(str(exc))
    engine = _judge_engine(judge_backend, judge_model, judge_base_url)
    cfg = VerifyConfig(preset=preset, workers=workers, timeout_s=timeout, judge=JudgeConfig(enabled=engine is not None))
    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
    if calibrate:
        for path in cases or []:
            if not path.is_file():
                fail(f"--cases {path}: file not found")
        task = progress.add_task("calibration cases", total=None)

        async def go_cal():
            async with maybe_engine(engine) as judge:
                return await run_calibration(cfg, judge, cases or None,
                                             on_progress=lambda d, t: progress.update(task, completed=d, total=t))

        try:
            with progress:
                results = asyncio.run(go_cal())
        except VerifyInputError as exc:
            fail(str(exc))
        for res in results:
            _print_calibration(res, f"{preset} preset{' + judge' if engine else ''}")
        return
    if src is None or output is None:
        fail("give an input file and -o OUTPUT (or --calibrate)")
    if not src.exists():
        fail(f"input not found: {src}")
    if output.suffix not in (".jsonl", ".parquet"):
        fail(f"-o {output}: use a .jsonl or .parquet file name")
    task = progress.add_task("rows verified", total=None)

    async def go():
        async with maybe_engine(engine) as judge:
            return await verify_file(src, output, cfg, judge, gold_column, generation_column,
                                     on_progress=lambda c: progress.update(task, completed=c.rows))

    try:
        with progress:
            counts = asyncio.run(go())
    except VerifyInputError as exc:
        fail(str(exc))
    status = ", ".join(f"{k}={v}" for k, v in sorted(counts.status.items())) or "-"
    out.print(f"{counts.rows} rows, {counts.generations} generations: {counts.correct} correct; "
              f"status {status}; judged {counts.judged}; rejected rows {counts.rejected} -> {output}", highlight=False)


def _print_calibration(res, what: str) -> None:
    """Raw Math-Verify and the cascade side by side per category, then every case where they disagree."""
    t = Table(title=f"{res.path.name}: {what} vs raw Math-Verify")
    for col in ("category", "cases", "raw acc", "raw FP", "raw FN", "ours acc", "ours FP", "ours FN", "raw right, ours wrong"):
        t.add_column(col, justify="left" if col == "category" else "right", no_wrap=True)
    for cat in sorted(res.scores, key=lambda c: (c == "ALL", c)):
        s = res.scores[cat]
        t.add_row(cat, str(s.n), f"{100 * s.raw_right / s.n:.1f}%", str(s.raw_fp), str(s.raw_fn),
                  f"{100 * s.ours_right / s.n:.1f}%", str(s.fp), str(s.fn), str(s.lost))
    out.print(t)
    if res.disagreements:
        d = Table(title=f"{res.path.name}: {len(res.disagreements)} case(s) where the cascade and raw Math-Verify disagree")
        for col in ("id", "category", "gold", "cascade read", "cascade", "raw", "label", "right"):
            d.add_column(col, overflow="fold")
        for e in res.disagreements:
            d.add_row(e["id"], e["category"], str(e["gold"]), str(e["extracted"]), str(e["cascade"]), str(e["raw"]),
                      str(e["label"]), "cascade" if e["cascade"] == e["label"] else "raw")
        out.print(d)
    if res.mistakes:
        out.print(f"{len(res.mistakes)} case(s) the cascade gets wrong: " + ", ".join(m["id"] for m in res.mistakes),
                  highlight=False)


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print figures.")
app.add_typer(bench_app, name="bench")


@bench_app.command("verify")
def bench_verify_cmd(
    pairs: int = typer.Option(1000, min=10, help="distinct (gold, generation) pairs"),
    workers: int = typer.Option(2, min=1, help="workers for the multi-core figure"),
    rounds: int = typer.Option(3, min=1, help="rounds of new pairs, paths interleaved (steadier on a busy machine)"),
) -> None:
    """Pairs/s of the rule stage vs raw Math-Verify, on the same pairs."""
    from factory.bench import bench_verify

    r = bench_verify(pairs, workers, rounds=rounds)
    t = Table(title=f"verification throughput, {pairs} distinct pairs x {rounds} rounds")
    t.add_column("path")
    t.add_column("pairs/s", justify="right")
    t.add_column("correct", justify="right")
    t.add_row("raw Math-Verify, in process (1 core)", f"{r.raw_pairs_per_s:.0f}", str(r.raw_correct))
    t.add_row("factory rule stage, 1 worker", f"{r.ours_1_pairs_per_s:.0f}", str(r.ours_correct))
    t.add_row(f"factory rule stage, {r.workers} workers", f"{r.ours_n_pairs_per_s:.0f}", "")
    out.print(t)
    out.print(f"ratio per core (ours 1 worker / raw): {r.ratio_per_core:.2f}")


@bench_app.command("overhead")
def bench_overhead_cmd(problems: int = typer.Option(4000, min=100, help="problems (n=2 each)")) -> None:
    """Generations/s through the whole pipeline against an instant fake server (verification off)."""
    from factory.bench import bench_overhead

    for r in bench_overhead(problems):
        out.print(f"{r['concurrency']:>4} in flight: {r['generations']} generations in {r['seconds']} s = "
                  f"{r['generations_per_s']} generations/s", highlight=False)


@bench_app.command("engine")
def bench_engine_cmd(
    problems: int = typer.Option(32, min=1), n: int = typer.Option(2, min=1), max_tokens: int = typer.Option(128, min=8),
    backend: str = typer.Option("vllm-offline", help="the factory's engine path: vllm-offline or vllm-server"),
) -> None:
    """The factory against raw vLLM on the same prompts, model and sampling."""
    from factory.bench import bench_engine

    r = bench_engine(problems, n, max_tokens, backend=backend)
    out.print(f"factory ({r['backend']}): {r['factory_tokens']} tokens in {r['factory_s']} s = {r['factory_tokens_per_s']} tok/s", highlight=False)
    out.print(f"raw vLLM (LLM.chat): {r['raw_tokens']} tokens in {r['raw_s']} s = {r['raw_tokens_per_s']} tok/s", highlight=False)
    out.print(f"ratio factory/raw: {r['ratio']}", highlight=False)


@bench_app.command("dtype")
def bench_dtype_cmd(prompts: int = typer.Option(16, min=1), tokens: int = typer.Option(128, min=8)) -> None:
    """Tokens/s of the embedded model in float32 and bf16 side by side: what `engine.dtype: auto` is based on."""
    from factory.bench import bench_dtype
    from factory.engines.platform import cpu_model

    r = bench_dtype(prompts=prompts, tokens=tokens)
    for row in r["rows"]:
        out.print(f"{row['dtype']:>9}: {row['tokens']} tokens at {row['tokens_per_s']} tok/s "
                  f"(engine start {row['start_s']} s)", highlight=False)
    out.print(f"CPU: {cpu_model()}; native bf16: {'yes' if r['native_bf16'] else 'no'}; engine.dtype auto -> {r['auto']}",
              highlight=False)


@bench_app.command("scale")
def bench_scale_cmd(
    nodes: int = typer.Option(512, min=1, help="simulated engine nodes"),
    rate: float = typer.Option(25.0, min=0.1, help="answers/s per node (OpenR1 saw ~25 with SGLang on 8xH100)"),
    n: int = typer.Option(4, min=1, help="answers per problem"),
    seconds: float = typer.Option(12.0, min=3, help="length of the live run"),
    ray_replicas: int = typer.Option(0, "--ray", min=0, help="also time N no-op replicas on a local Ray cluster"),
) -> None:
    """The coordinator against a simulated cluster: does one driver keep up?"""
    from factory.bench import bench_scale, bench_scale_ray

    r = bench_scale(nodes, rate, n, seconds=seconds)
    t = Table(title=f"coordination capacity (instant replicas, {nodes} of them, n={n})")
    for col in ("chunk (problems)", "chunks/s", "max answers/s", f"needed chunks/s at {nodes}x{rate:g}", "headroom"):
        t.add_column(col, justify="right")
    for c in r["capacity"]:
        t.add_row(str(c["chunk"]), str(c["chunks_per_s"]), str(c["max_answers_per_s"]), str(c["needed_chunks_per_s"]),
                  f"{c['headroom']}x")
    out.print(t)
    lv = r["live"]
    out.print(f"live: {lv['nodes']} nodes x {rate:g} answers/s, chunks of {lv['chunk']}: {lv['answers_per_s']} answers/s "
              f"of {lv['target_answers_per_s']:g} ({100 * lv['efficiency']:.1f}%) in the steady state; "
              f"driver CPU {100 * lv['driver_cpu_share']:.0f}% of one core; {lv['chunks']} chunks in {lv['seconds']} s",
              highlight=False)
    if ray_replicas:
        rr = bench_scale_ray(ray_replicas)
        out.print(f"ray: {rr['replicas']} no-op replicas on a local cluster, chunks of {rr['chunk']}: "
                  f"{rr['chunks_per_s']} chunks/s ({rr['problems_per_s']} problems/s), "
                  f"driver CPU {100 * rr['driver_cpu_share']:.0f}%", highlight=False)


@bench_app.command("prepare")
def bench_prepare_cmd(
    rows: int = typer.Option(1_000_000, min=1000, help="rows in the synthetic source"),
    workdir: Path = typer.Option(Path("out/bench-prepare"), help="where the source and output go"),
) -> None:
    """Time and peak memory of the preparation stage on a synthetic source."""
    from factory.bench import bench_prepare

    r = bench_prepare(rows, workdir)
    out.print(f"prepare {r['read']} rows: {r['accepted']} accepted, rejected {r['rejected_by_reason']}; "
              f"{r['seconds']:.1f} s ({r['read'] / r['seconds']:.0f} rows/s), peak RSS {r['peak_rss_mb']:.0f} MB",
              highlight=False)


@bench_app.command("decontam")
def bench_decontam_cmd(
    rows: int = typer.Option(20_000, min=100, help="synthetic rows for the speed figure"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
) -> None:
    """Decontamination: caught / falsely flagged on the labelled set, our rule against open-r1's plain 8-gram rule."""
    from factory.bench import bench_decontam

    r = bench_decontam(rows)
    if as_json:
        out.print_json(data=r)
        return
    for split, kinds in r["labelled"].items():
        table = Table(title=f"labelled set, {split} split (against all shipped benchmarks)")
        for col in ("kind", "rows", "plain 8-gram flagged", "evidence flagged"):
            table.add_column(col, justify="left" if col == "kind" else "right")
        for kind, c in kinds.items():
            what = "falsely flagged" if kind == "clean_similar" else "caught"
            table.add_row(f"{kind} ({what})", str(c["rows"]), str(c["ngram"]["flagged"]), str(c["evidence"]["flagged"]))
        out.print(table)
    for name, s in r["speed"].items():
        out.print(f"{name}: " + ", ".join(f"{k} {v['rows_per_s']} rows per CPU-second" for k, v in s.items() if isinstance(v, dict))
                  + f" (index built in {s['init_s']} s)", highlight=False)


@bench_app.command("adaptive")
def bench_adaptive_cmd(
    problems: int = typer.Option(4000, min=10, help="simulated problems"),
    real: int = typer.Option(96, min=0, help="problems for the real CPU engine arm (0: skip it)"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
) -> None:
    """Adaptive sampling against fixed n=4: verified problems per 1,000 generations, per million tokens, per engine-hour."""
    from factory.bench.adaptive import HOPELESS, EASY, MIDDLE, bench_adaptive_real, bench_adaptive_sim

    results = {"simulated": bench_adaptive_sim(problems)}
    if real:
        results["real"] = bench_adaptive_real(real)
    if as_json:
        out.print_json(data=results)
        return
    sim = results["simulated"]
    out.print(f"simulated: {problems} problems; solve rate per sample p = 0 for {HOPELESS:.0%}, 0.95 for {EASY:.0%}, "
              f"U(0.05, 0.6) for {MIDDLE:.0%} (P(a correct trace among 4) = {sim['expected_coverage_4']})", highlight=False)
    for name, r in results.items():
        table = Table(title=f"{name} engine")
        cols = ["arm", "coverage", "generations", "tokens", "per 1k gens", "x", "per M tokens", "x"]
        if name == "real":
            cols += ["per engine-hour", "x"]
        for col in cols:
            table.add_column(col, justify="left" if col == "arm" else "right")
        for a in r["arms"]:
            cells = [a["name"], f"{a['coverage']:.1%}", str(a["generations"]), str(a["tokens"]),
                     str(a["per_1k_generations"]), str(a["per_1k_generations_x"]), str(a["per_million_tokens"]),
                     str(a["per_million_tokens_x"])]
            if name == "real":
                cells += [str(a["per_engine_hour"]), str(a["per_engine_hour_x"])]
            table.add_row(*cells)
        out.print(table)


@model_app.command("prepare")
def model_prepare(name: str = typer.Argument("smollm2-135m")) -> None:
    """Convert the embedded model once into the cache folder (idempotent)."""
    from factory.models import ModelError, ensure_model

    try:
        path = ensure_model(name)
    except ModelError as exc:
        fail(str(exc), 1)
    out.print(path)


def main() -> None:  # pragma: no cover
    app(prog_name="factory")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

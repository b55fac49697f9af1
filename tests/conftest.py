"""Shared fixtures: job files, a fake OpenAI server, the factory CLI."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

# A fresh datasets cache per test session: `load_dataset(folder)` caches by
# folder name, and a stale build from an earlier session would be reused.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="factory-test-datasets-")

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "jobs" / "data" / "numina-sample.jsonl"
SAMPLE_PROBLEMS = 50  # the quickstart set: every row passes preparation (none is a benchmark copy)
FACTORY = [sys.executable, "-m", "factory.cli"]
RAY = str(Path(sys.executable).with_name("ray"))
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (the [ray] extra)")


def sample_rows(k: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:k] if k else rows


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_job(path: Path, source: Path, out: Path, **sections) -> Path:
    """A job YAML; `sections` are merged over a small default job."""
    job = {
        "name": "test",
        "source": {"path": str(source)},
        "sampling": {"n": 2, "max_tokens": 32},
        "output": {"dir": str(out), "shard_rows": 2},
    }
    for key, value in sections.items():
        job.setdefault(key, {}).update(value) if isinstance(value, dict) else job.__setitem__(key, value)
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    return path


def run_factory(*args, timeout=600, env=None, check=False) -> subprocess.CompletedProcess:
    proc = subprocess.run([*FACTORY, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"factory {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stored_rows(out: Path, columns: list[str]) -> dict[str, dict]:
    """The stored rows of a run, by uuid: what two runs' stores are compared on."""
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    return {r["uuid"]: r for r in ds.select_columns(["uuid", *columns]).to_list()}


def read_uuids(out: Path) -> list[str]:
    import pyarrow.parquet as pq

    uuids: list[str] = []
    for shard in sorted((out / "data").glob("*.parquet")):
        uuids += pq.read_table(shard, columns=["uuid"]).column("uuid").to_pylist()
    return uuids


def kill_at_random(job: Path, out: Path, kills: int, problems: int, seed: int = 7, lives=(0.3, 3.5)) -> int:
    """`factory run JOB` SIGKILLed at random moments `kills` times (each
    run a resume of the last), checking that every shard a reader can see
    stays whole; the number of kills that landed mid-run."""
    import pyarrow.parquet as pq
    import random

    rng = random.Random(seed)
    landed = 0
    for _ in range(3 * kills):
        if landed >= kills:
            break
        proc = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(*lives))
        if proc.poll() is not None:
            assert proc.returncode == 0, "a resumed run failed"
            if len(set(read_uuids(out))) == problems:
                break
            continue
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        landed += 1
        for shard in (out / "data").glob("*.parquet"):
            pq.read_metadata(shard)
    return landed


@contextlib.contextmanager
def run_in_background(job: Path, out: Path, shards: int = 3, finish: bool = True):
    """`factory run JOB` in its own process, yielded once `shards` shards are
    committed; at the end waited for (`finish`) or killed."""
    run = subprocess.Popen([*FACTORY, "run", str(job)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: manifest_shards(out) >= shards, 120, f"{shards} shards committed")
        yield run
    finally:
        if not finish:
            run.kill()
        run.wait(timeout=300)


def manifest_shards(out: Path) -> int:
    m = out / "manifest.jsonl"
    return len(m.read_text().splitlines()) if m.exists() else 0


@pytest.fixture
def fake_server():
    """Start the fake OpenAI server in its own process; yields a factory for URLs."""
    procs = []

    def start(latency: float = 0.0, *extra: str, port: int | None = None) -> str:
        """`extra`: more fake_openai options, e.g. "--faults", "429=0.1"; `port`: a fixed one (a restart)."""
        from factory.engines.managed import free_port

        port = port or free_port()
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "doubles" / "fake_openai.py"), "--port", str(port),
                                 "--latency", str(latency), *extra], start_new_session=True)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        import urllib.request

        def up():
            if proc.poll() is not None:
                raise AssertionError(f"fake server exited with {proc.returncode}")
            try:
                return urllib.request.urlopen(f"{url}/health", timeout=1).status == 200
            except OSError:
                return False

        wait_for(up, 30, "fake server")
        return url

    start.procs = procs  # a test may kill one to stage an outage
    yield start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


HUB_TOKEN = "hf_fake_local_hub_token"


def hub_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    """Environment for a Hub client talking to the local Hub (Xet off before import)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_DISABLE_XET="1", HF_TOKEN=HUB_TOKEN, HF_HUB_OFFLINE="0",
               HF_DATASETS_OFFLINE="0", HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    return env


def client(script: str, tmp_path: Path, hub, *args) -> dict:
    """Run a Hub client script in its own process (Xet off before import); its `RESULT {json}` line."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], capture_output=True,
                          text=True, env=hub_env(tmp_path, hub.url), timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][7:])


UPLOAD = """
from huggingface_hub import HfApi
import sys
api = HfApi()
api.create_repo(sys.argv[2], repo_type="dataset", exist_ok=True)
api.upload_folder(folder_path=sys.argv[1], repo_id=sys.argv[2], repo_type="dataset")
print("RESULT {}")
"""


def publish_rows(tmp_path: Path, hub, repo: str, rows: list[dict]) -> None:
    """A dataset repo on the local Hub holding `rows` as one Parquet shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / f"publish-{repo.replace('/', '-')}"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet")
    client(UPLOAD, tmp_path, hub, folder, repo)


@pytest.fixture
def hub(tmp_path):
    """A local Hub server on loopback (tests/doubles/local_hub.py)."""
    from doubles.local_hub import LocalHub

    with LocalHub(tmp_path / "hub") as server:
        yield server


def stop_ray(env: dict) -> None:
    """`ray stop --force`: every Ray process on this machine (tests run one at a time)."""
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


@contextlib.contextmanager
def ray_head(env: dict, *flags: str):
    """A Ray head started with `ray start --head FLAGS`; yields its GCS port."""
    from factory.engines.managed import free_port

    port = free_port()
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--disable-usage-stats", *flags], env=env, check=True,
                   capture_output=True, timeout=180)
    try:
        yield port
    finally:
        stop_ray(env)

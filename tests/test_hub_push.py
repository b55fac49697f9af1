"""Pushing a run to a local Hub server: retries, resumable uploads, loading
it back with `datasets`, and a real TRL SFT step on what was pushed."""

import json
import math
import shutil
import subprocess

import datasets
import pytest
import yaml

from conftest import HUB_TOKEN, client, hub_env, publish_rows, run_factory, SAMPLE_PROBLEMS
from factory.hub import sha256_of
from test_run_fake import fake_job

REPO = "org/math-traces"


@pytest.fixture
def run_out(tmp_path, fake_server):
    out = tmp_path / "out"
    run_factory("run", fake_job(tmp_path, fake_server(), out, output={"shard_rows": 6}), check=True)
    return out


LOAD = """
import json, sys, datasets
out = {}
for config in ("all", "default"):
    ds = datasets.load_dataset(sys.argv[1], config, split="train")
    out[config] = {"uuids": list(ds["uuid"]), "columns": ds.column_names, "counts": list(ds["correctness_count"])}
print("RESULT " + json.dumps(out))
"""


def push(tmp_path, hub, out, *extra, **env):
    return run_factory("push", out, "--repo-id", REPO, *extra,
                       env={**hub_env(tmp_path, hub.url), "FACTORY_PUSH_BACKOFF_S": "0.05", **env})


@pytest.mark.reliability
def test_push_survives_429_and_500_and_round_trips(tmp_path, hub, run_out):
    hub.fail_next(r"/commit/", 429, times=2)
    hub.fail_next(r"/commit/", 500, times=1)
    proc = push(tmp_path, hub, run_out, "--private")
    assert proc.returncode == 0, proc.stderr
    assert hub.calls("commit") >= 4  # three refused, then accepted
    assert HUB_TOKEN not in proc.stdout + proc.stderr
    assert all(a == f"Bearer {HUB_TOKEN}" for a in hub.authorizations("commit"))
    assert HUB_TOKEN not in (run_out / "README.md").read_text()

    got = client(LOAD, tmp_path, hub, REPO)
    local_all = datasets.load_dataset(str(run_out), "all", split="train")
    local_default = datasets.load_dataset(str(run_out), "default", split="train")
    assert sorted(got["all"]["uuids"]) == sorted(local_all["uuid"])
    assert sorted(got["default"]["uuids"]) == sorted(local_default["uuid"])
    assert got["all"]["columns"] == local_all.column_names
    assert all(c > 0 for c in got["default"]["counts"])

    again = push(tmp_path, hub, run_out)
    assert again.returncode == 0 and "0 file(s) uploaded" in again.stdout, again.stdout


def test_partial_push_then_second_push_sends_only_the_rest(tmp_path, hub, run_out):
    shards = sorted((run_out / "data").glob("*.parquet"))
    # the last data shard's upload is refused: earlier commits land, then the push stops
    hub.fail_next(rf"/_lfs/upload/{sha256_of(shards[-1])}", 403, times=1)
    first = push(tmp_path, hub, run_out, FACTORY_PUSH_CHUNK_FILES="3", FACTORY_PUSH_ATTEMPTS="2")
    assert first.returncode == 1
    assert "push again to send the rest" in first.stderr and "Traceback" not in first.stderr
    n_files = len(shards) + len(list((run_out / "default").glob("*.parquet"))) + len(list((run_out / "plots").glob("*.png"))) + 1
    second = push(tmp_path, hub, run_out, FACTORY_PUSH_CHUNK_FILES="3")
    assert second.returncode == 0, second.stderr
    landed = (len(shards) - 1) // 3 * 3
    assert f"{n_files - landed} file(s) uploaded" in second.stdout and f"{landed} already there" in second.stdout
    got = client(LOAD, tmp_path, hub, REPO)
    assert len(got["all"]["uuids"]) == SAMPLE_PROBLEMS


def test_push_to_a_branch(tmp_path, hub, run_out):
    assert push(tmp_path, hub, run_out, "--revision", "v1").returncode == 0
    assert hub.branch_head(REPO, "v1") != hub.branch_head(REPO, "main")


@pytest.mark.slow
def test_trl_sft_cli_trains_on_the_pushed_dataset(tmp_path, hub, run_out):
    """The shipped SFT recipe through TRL's own command line, with only the
    model and the size overridden (the rehearsal runs the same command)."""
    from rehearsal import sft_command, sft_losses

    assert push(tmp_path, hub, run_out).returncode == 0
    proc = subprocess.run(sft_command(REPO, "default", tmp_path / "sft"), capture_output=True, text=True,
                          env=hub_env(tmp_path, hub.url), timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses = sft_losses(proc.stdout + proc.stderr)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), losses


def test_run_pushes_when_the_job_says_so(tmp_path, hub, fake_server):
    out = tmp_path / "pushed-run"
    job = fake_job(tmp_path, fake_server(), out, output={"push": {"repo_id": REPO, "private": True},
                                                         "license": "cc-by-4.0"})
    proc = run_factory("run", job, env=hub_env(tmp_path, hub.url), check=True)
    assert f"pushed to {REPO}@main" in proc.stdout
    assert len(client(LOAD, tmp_path, hub, REPO)["all"]["uuids"]) == SAMPLE_PROBLEMS
    card = client(READ_CARD, tmp_path, hub, REPO)["card"]
    assert yaml.safe_load(card.split("---")[1])["license"] == "cc-by-4.0"  # the job's, not the default
    assert card == (out / "README.md").read_text()
    again = push(tmp_path, hub, out)  # a push on its own keeps the job's license too
    assert again.returncode == 0 and "0 file(s) uploaded" in again.stdout, again.stdout


READ_CARD = """
import json, sys
from huggingface_hub import hf_hub_download
path = hf_hub_download(sys.argv[1], "README.md", repo_type="dataset")
print("RESULT " + json.dumps({"card": open(path, encoding="utf-8").read()}))
"""


def test_prepare_streams_a_hub_dataset_by_name(tmp_path, hub):
    from conftest import sample_rows

    publish_rows(tmp_path, hub, "org/problems", sample_rows(10) + sample_rows(1))
    out = tmp_path / "prep"
    run_factory("prepare", "org/problems", "-o", out, "--set", "split=train", env=hub_env(tmp_path, hub.url), check=True)
    report = json.loads((out / "report.json").read_text())
    assert (report["read"], report["accepted"], report["rejected_by_reason"]) == (11, 10, {"duplicate_exact": 1})
    assert hub.calls("resolve") > 0  # the rows really came from the Hub server


LOAD_DECLARED = """
import json, sys, datasets
names = datasets.get_dataset_config_names(sys.argv[1])
print("RESULT " + json.dumps({n: len(datasets.load_dataset(sys.argv[1], n, split="train")) for n in names}))
"""


def test_nothing_verified_still_pushes_configs_that_all_load(tmp_path, hub, fake_server):
    """A run (or a hard problem set) with no verified trace yet: the card
    declares only configs that have files, so every one of them loads."""
    from conftest import sample_rows

    out = tmp_path / "out"
    rows = [dict(r, answer="987654321") for r in sample_rows(6)]  # the fake server never says that
    run_factory("run", fake_job(tmp_path, fake_server(), out, rows=rows), check=True)
    card = (out / "README.md").read_text()
    assert [c["config_name"] for c in yaml.safe_load(card.split("---")[1])["configs"]] == ["all"]
    assert "`default` config" in card and "not declared" in card
    assert push(tmp_path, hub, out).returncode == 0
    assert client(LOAD_DECLARED, tmp_path, hub, REPO) == {"all": 6}


def test_push_deletes_remote_shards_the_local_dataset_no_longer_has(tmp_path, hub, run_out):
    from conftest import UPLOAD

    assert push(tmp_path, hub, run_out).returncode == 0
    stray = tmp_path / "stray"
    (stray / "data").mkdir(parents=True)
    shutil.copy(run_out / "data" / "train-00000.parquet", stray / "data" / "train-99999.parquet")
    client(UPLOAD, tmp_path, hub, stray, REPO)
    proc = push(tmp_path, hub, run_out)
    assert proc.returncode == 0 and "1 stale deleted" in proc.stdout, proc.stdout
    got = client(LOAD, tmp_path, hub, REPO)
    assert sorted(got["all"]["uuids"]) == sorted(datasets.load_dataset(str(run_out), "all", split="train")["uuid"])

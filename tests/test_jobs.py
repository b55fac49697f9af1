"""Every job file shipped in jobs/ runs, not only loads. The engine is the
fast fake server (the real engines run in the engine tests, `make demo` and
the rehearsal); everything else is the job's own: its source (a Hub
dataset is served by the local Hub), prompt, sampling, verification,
scale-out and push."""

import json
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, hub_env, publish_rows, read_uuids, run_factory
from factory.config import load_job
from numina_like import rows as numina_like_rows

JOBS = sorted(p for p in (ROOT / "jobs").rglob("*.yaml") if not p.name.startswith("sft-"))


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.relative_to(ROOT / "jobs").as_posix())
def test_every_shipped_job_runs(path: Path, tmp_path, fake_server, hub):
    job = load_job(path)
    judge = job.verify.judge
    served = ["fake"] + ([judge.engine.model_name] if judge.enabled and judge.engine is not None else [])
    url = fake_server(0.0, "--models", ",".join(served))  # what preflight asks for
    env = hub_env(tmp_path, hub.url)
    sets = ["engine.backend=openai", f"engine.base_url={url}", "engine.model=fake", "engine.max_concurrency=8"]
    if job.verify.judge.enabled and job.verify.judge.engine is not None:
        sets.append(f"verify.judge.engine.base_url={url}")
    if job.source.dataset is not None:  # the recipe's Hub source, under its real name on the local Hub
        publish_rows(tmp_path, hub, job.source.dataset, numina_like_rows())
    if job.scale.mode == "ray":  # this machine's two cores
        sets += ["scale.replicas=1", "scale.replica_cpus=0.2", "scale.verifier_cpus=0.1"]
    out = tmp_path / "out"
    proc = run_factory("run", path, "-o", out, *[a for s in sets for a in ("--set", s)], env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads((out / "prepared" / "report.json").read_text())
    uuids = read_uuids(out)
    assert len(uuids) == len(set(uuids)) == report["accepted"] > 0
    card = (out / "README.md").read_text()
    assert yaml.safe_load(card.split("---")[1])["configs"]
    if job.output.push is not None:
        assert f"pushed to {job.output.push.repo_id}@main" in proc.stdout

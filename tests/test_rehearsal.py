"""The OpenR1 recipe rehearsed end to end (tests/rehearsal.py): a Hub source,
a two-node Ray cluster through both launchers, CPU vLLM replicas, a vLLM
judge server, the push, TRL on what was pushed. About 8 minutes here."""

import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.rehearsal, pytest.mark.slow, pytest.mark.timeout(2400)]


def test_openr1_recipe_rehearsal(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "rehearsal.py"), "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=2300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    fig = json.loads((tmp_path / "rehearsal.json").read_text())
    killed, finished, again = fig["runs"]
    sample = 12  # source.sample in jobs/openr1-math-rehearsal.yaml
    # run 1 (sbatch, two nodes) was killed mid-run; run 2 (ray job submit) did the rest, once each
    assert killed["killed"] and 0 < killed["stored_after"] < sample
    assert killed["ray_nodes"] == [2] and finished["ray_nodes"] == [2]
    assert finished["generated"] == sample - killed["stored_after"] and finished["stored_after"] == sample
    assert finished["files_uploaded"] > 0
    # run 3: the same sbatch command generates and uploads nothing
    assert again["nothing_to_generate"] and again["generated"] == 0 and again["files_uploaded"] == 0
    # the pushed dataset: each problem once, every declared config loads, 4 traces each
    assert fig["problems"] == fig["unique_problems"] == fig["configs"]["all"] == sample
    assert set(fig["configs"]) <= {"all", "default"} and fig["configs"].get("default", 1) > 0
    assert fig["generations"] == 4 * sample
    assert finished["nodes_writing"] == 2, f"replicas on both nodes should write shards: {fig['replicas']}"
    assert fig["judge_calls"] > 0  # the judge server ruled on rule rejects
    # TRL's CLI trained on it
    assert len(fig["sft"]["losses"]) == 2 and all(math.isfinite(v) for v in fig["sft"]["losses"])

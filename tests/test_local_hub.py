"""Round trip through the local Hub: create, upload, load with `datasets`, conflicts and injected faults.

Client code runs in a subprocess because HF_HUB_DISABLE_XET and HF_ENDPOINT must be set before
`huggingface_hub` is imported, and this process may have imported it already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path


from conftest import HUB_TOKEN as TOKEN, hub_env

REPO = "org/name"
ROWS = [
    {"problem": "1+1?", "generations": ["2", "two"]},
    {"problem": "2+2?", "generations": ["4"]},
    {"problem": "Empty list", "generations": []},
    {"problem": "3*3?", "generations": ["9", "nine", "IX"]},
    {"problem": "unicode ∑", "generations": ["ok"]},
]
README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
# test dataset
"""

ROUND_TRIP = """
import json, sys
import datasets, pyarrow.parquet as pq
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

folder = sys.argv[1]
api = HfApi()
out = {}
url = api.create_repo("org/name", repo_type="dataset", private=True)
out["url"] = str(url)
first = api.dataset_info("org/name").sha
api.upload_folder(folder_path=folder, repo_id="org/name", repo_type="dataset", commit_message="add data")
info = api.dataset_info("org/name")
out["private"] = info.private
out["siblings"] = sorted(s.rfilename for s in info.siblings)
api.create_repo("org/name", repo_type="dataset", private=True, exist_ok=True)  # must not raise
try:
    api.upload_file(path_or_fileobj=b"x", path_in_repo="stale.txt", repo_id="org/name", repo_type="dataset",
                    parent_commit=first)
    out["stale_status"] = None
except HfHubHTTPError as exc:
    out["stale_status"] = exc.response.status_code

ds = datasets.load_dataset("org/name", split="train")
out["num_rows"] = ds.num_rows
out["rows"] = ds.to_list()
out["features"] = ds.features.to_dict()
local = pq.read_table(folder + "/data/train-00000.parquet").schema
out["local_features"] = datasets.Features.from_arrow_schema(local).to_dict()
print("RESULT " + json.dumps(out))
"""

FAULTY_UPLOAD = """
import json
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

api = HfApi()
out = {}
try:
    api.upload_file(path_or_fileobj=b"first", path_in_repo="notes.txt", repo_id="org/name", repo_type="dataset")
    out["first"] = None
except HfHubHTTPError as exc:
    out["first"] = exc.response.status_code
info = api.upload_file(path_or_fileobj=b"second", path_in_repo="notes.txt", repo_id="org/name", repo_type="dataset")
out["second_oid"] = info.oid
api.create_branch("org/name", branch="dev", repo_type="dataset")
api.upload_file(path_or_fileobj=b"dev", path_in_repo="dev.txt", repo_id="org/name", repo_type="dataset",
                revision="dev")
out["dev_files"] = api.list_repo_files("org/name", repo_type="dataset", revision="dev")
out["main_files"] = api.list_repo_files("org/name", repo_type="dataset")
print("RESULT " + json.dumps(out))
"""


def run_client(script: str, tmp_path: Path, endpoint: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          env=hub_env(tmp_path, endpoint), timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"client failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def write_folder(folder: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True)
    table = pa.table({"problem": pa.array([r["problem"] for r in ROWS], pa.string()),
                      "generations": pa.array([r["generations"] for r in ROWS], pa.list_(pa.string()))})
    pq.write_table(table, folder / "data" / "train-00000.parquet")
    (folder / "README.md").write_text(README, encoding="utf-8")
    return folder


def test_round_trip_conflicts_and_faults(hub, tmp_path):
    folder = write_folder(tmp_path / "upload")
    out = run_client(ROUND_TRIP, tmp_path, hub.url, str(folder))

    assert out["url"].endswith("/datasets/org/name")
    assert out["private"] is True
    assert out["siblings"] == [".gitattributes", "README.md", "data/train-00000.parquet"]
    assert out["num_rows"] == len(ROWS)
    assert out["rows"] == ROWS
    assert out["features"] == out["local_features"]
    assert out["features"]["problem"] == {"dtype": "string", "_type": "Value"}
    assert out["features"]["generations"]["feature"] == {"dtype": "string", "_type": "Value"}
    assert out["stale_status"] == 412

    assert hub.calls("create_repo") == 2  # the second answered 409, which exist_ok swallows
    assert [r.status for r in hub.requests if r.kind == "create_repo"] == [200, 409]
    assert hub.calls("lfs_batch") == 1 and hub.calls("lfs_upload") == 1  # the parquet went through LFS
    assert hub.calls("resolve", "GET") >= 1
    statuses = [r.status for r in hub.requests if r.kind == "commit"]
    assert statuses == [200, 412]
    head = hub.branch_head(REPO)

    # preupload goes through the client's backoff, so a 503 there is retried (after about 1 s);
    # commits are not retried: a 429 surfaces at once and the next upload goes through.
    preuploads = hub.calls("preupload")
    hub.fail_next(r"/preupload/", 503, times=1, retry_after=0)
    hub.fail_next(r"/commit/", 429, times=1, retry_after=1)
    out = run_client(FAULTY_UPLOAD, tmp_path, hub.url)
    assert out["first"] == 429
    assert [r.status for r in hub.requests if r.kind == "preupload"][preuploads:preuploads + 3] == [503, 200, 200]
    assert [r.status for r in hub.requests if r.kind == "commit"] == [200, 412, 429, 200, 200]
    assert hub.calls("commit", "POST") == 5
    assert out["second_oid"] == hub.branch_head(REPO) != head
    assert "dev.txt" in out["dev_files"] and "dev.txt" not in out["main_files"]
    assert "notes.txt" in out["dev_files"]  # the branch started from main's head

    # Every write carried the token; none of the requests went out unauthenticated except the LFS PUT,
    # which like a presigned URL takes none.
    for kind in ("create_repo", "preupload", "lfs_batch", "commit", "resolve", "tree"):
        auths = hub.authorizations(kind)
        assert auths and all(a == f"Bearer {TOKEN}" for a in auths), kind

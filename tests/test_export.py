"""``otfgen export``: a run's stream regenerated into webdataset or npz shards, equal to replay's bytes."""

import hashlib
import io
import json
import shutil
import subprocess
import tarfile

import numpy as np
import pytest
from PIL import Image

from conftest import otfgen_cmd
from otfgen.controller import replay
from otfgen.trainer.stream import Stream


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A real run (controller, a worker) consumed by a trainer loop here: stream.jsonl holds the
    digests of the bytes the stream received, written as the trainer writes them (``on_request``),
    so export and replay are checked against what was trained on, not against their own path.
    Thickness narrowed to [3.5, 5.5]; 868 samples in requests of 256: the last one short."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    overrides = [f"run_dir={run_dir}", "budget.samples=868", "controller.request_size=256", "trainer.batch_size=256",
                 "launcher.workers=1", "scene.params.thickness.low=3.5", "scene.params.thickness.default=4"]
    consumed = []
    with Stream.local(overrides, on_request=lambda rid, n, digest, worker: consumed.append(
            {"id": rid, "n": n, "digest": digest, "worker": worker})) as stream:
        assert sum(len(y) for _, y in stream) == 868
    assert [r["n"] for r in consumed] == [256, 256, 256, 100]
    return run_dir, consumed


@pytest.fixture
def run(trained_run, tmp_path):
    # consumed out of id order (as from several workers): shards of 300 cut across requests
    src, consumed = trained_run
    run_dir = tmp_path / "run"
    shutil.copytree(src, run_dir)
    by_id = {r["id"]: r for r in consumed}
    (run_dir / "stream.jsonl").write_text("".join(json.dumps(by_id[i]) + "\n" for i in (2, 0, 3, 1)))
    return run_dir


def replayed(run_dir):
    batches = list(replay.regenerate(run_dir))
    return (np.concatenate([b[1] for b in batches]), np.concatenate([b[2] for b in batches]),
            np.concatenate([np.full(len(b[2]), b[0]) for b in batches]))


def test_webdataset_shards_hold_the_replayed_bytes(run, tmp_path, env):
    out = tmp_path / "wds"
    p = subprocess.run(otfgen_cmd("export", str(run), "--out", str(out), "--format", "webdataset",
                                  "--shard-size", "300"), env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["samples"] == 868 and report["matched"] == 4 and report["mismatched"] == 0
    index = json.loads((out / "index.json").read_text())
    assert [s["samples"] for s in index["shards"]] == [300, 300, 268]
    images, labels, requests = replayed(run)
    got_img, got_cls, got_req = [], [], []
    for shard in index["shards"]:
        with tarfile.open(out / shard["name"]) as tar:
            names = tar.getnames()
            keys = sorted({n.split(".")[0] for n in names})
            assert len(names) == 3 * len(keys) == 3 * shard["samples"]
            for k in keys:
                got_img.append(np.asarray(Image.open(io.BytesIO(tar.extractfile(f"{k}.png").read()))))
                got_cls.append(int(tar.extractfile(f"{k}.cls").read()))
                meta = json.loads(tar.extractfile(f"{k}.json").read())
                got_req.append(meta["request"])
    assert np.array_equal(np.stack(got_img), images)  # PNG is lossless: the very bytes replay renders
    assert np.array_equal(got_cls, labels) and np.array_equal(got_req, requests)
    assert list(dict.fromkeys(got_req)) == [2, 0, 3, 1]  # in the order the trainer consumed them
    assert 1.5 <= meta["params"]["thickness"] <= 5.5 and meta["params"]["invert"] == "plain"


def test_npz_shards_hold_the_replayed_bytes_and_params(run, tmp_path, env):
    out = tmp_path / "npz"
    p = subprocess.run(otfgen_cmd("export", str(run), "--out", str(out), "--format", "npz", "--shard-size", "500"),
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["matched"] == 4
    shards = [np.load(out / s["name"]) for s in json.loads((out / "index.json").read_text())["shards"]]
    assert [len(z["labels"]) for z in shards] == [500, 368]
    # the bytes on disk are the bytes the trainer received: its digests, request by request
    on_disk = {k: np.concatenate([z[k] for z in shards]) for k in ("images", "labels", "request")}
    for rec in map(json.loads, (run / "stream.jsonl").read_text().splitlines()):
        mine = on_disk["request"] == rec["id"]
        h = hashlib.blake2b(np.ascontiguousarray(on_disk["images"][mine]).data, digest_size=16)
        h.update(np.ascontiguousarray(on_disk["labels"][mine].astype(np.int64)).data)
        assert h.hexdigest() == rec["digest"], rec["id"]
    images, labels, requests = replayed(run)
    assert np.array_equal(np.concatenate([z["images"] for z in shards]), images)
    assert np.array_equal(np.concatenate([z["labels"] for z in shards]), labels)
    assert np.array_equal(np.concatenate([z["request"] for z in shards]), requests)
    thick = np.concatenate([z["param_thickness"] for z in shards])
    assert thick.min() >= 3.5  # the run's narrowed range: the parameters replay renders are the run's


def test_export_refuses_bad_arguments_and_a_tampered_log_fails(run, tmp_path, env):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    for args, needle in (([str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "params.jsonl"),
                         ([str(run), "--out", str(tmp_path / "full")], "not an empty directory"),
                         ([str(run), "--out", str(tmp_path / "o"), "--format", "zip"], "invalid choice")):
        p = subprocess.run(otfgen_cmd("export", *args), env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and needle in p.stderr, p.stderr
    text = (run / "stream.jsonl").read_text().splitlines()
    first = json.loads(text[0])
    text[0] = json.dumps({**first, "digest": "0" * 32})
    (run / "stream.jsonl").write_text("\n".join(text) + "\n")
    p = subprocess.run(otfgen_cmd("export", str(run), "--out", str(tmp_path / "t")), env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and json.loads(p.stdout)["mismatched"] == 1


def test_replay_out_points_to_export(run, tmp_path, env):
    p = subprocess.run(otfgen_cmd("replay", str(run), "--out", str(tmp_path / "r.npz")), env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "otfgen export" in p.stderr
    p = subprocess.run(otfgen_cmd("replay", str(run)), env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout)["matched"] == 4


def test_replay_of_a_run_without_digests_says_it_checked_nothing(trained_run, env):
    # a Stream.local run: the user's loop wrote no stream.jsonl, so replay has nothing to compare
    src, _ = trained_run
    assert not (src / "stream.jsonl").exists()
    p = subprocess.run(otfgen_cmd("replay", str(src)), env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and json.loads(p.stdout)["digests_recorded"] == 0
    assert "nothing was checked" in p.stderr


def test_export_index_names_the_family_classes(tmp_path):
    from otfgen.blender_gen.families import fashion2d
    from otfgen.controller import export

    run = tmp_path / "run"
    run.mkdir()
    header = {"kind": "header", "family": "fashion2d", "space": fashion2d.SPACE}
    request = {"kind": "request", "id": 0, "family": "fashion2d", "n": 4, "seed": 0, "action": {}, "worker": "w0",
               "step": 0}
    (run / "params.jsonl").write_text(json.dumps(header) + "\n" + json.dumps(request) + "\n")
    export.export(run, tmp_path / "out", "npz", 10)
    classes = json.loads((tmp_path / "out" / "index.json").read_text())["classes"]
    assert classes[0] == "T-shirt/top" and classes[9] == "ankle boot" and len(classes) == 10

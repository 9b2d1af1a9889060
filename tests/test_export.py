"""``otfgen export``: a run's stream regenerated into webdataset or npz shards, equal to replay's bytes."""

import hashlib
import io
import json
import subprocess
import tarfile

import numpy as np
import pytest
from PIL import Image

from otfgen.blender_gen import families
from otfgen.blender_gen.rng import request_seed
from conftest import otfgen_cmd
from otfgen.controller import paramlog, replay


def make_run(run_dir, sizes, family="mnist2d", order=None, action=None):
    """A run directory as the controller and trainer leave it: params.jsonl (header + one line per
    request, written by ParamLog) and stream.jsonl (consumption order and digests)."""
    run_dir.mkdir(parents=True)
    space = families.default_space(family)
    log = paramlog.ParamLog(run_dir / "params.jsonl", {
        "family": family, "space": space.to_mapping(), "run_seed": 3, "request_size": max(sizes),
        "policy": "uniform", "render": {}, "code": families.code_digest()})
    fam = families.load(family)
    with open(run_dir / "stream.jsonl", "w") as stream:
        for rid in order or range(len(sizes)):
            log.append({"id": rid, "family": family, "n": sizes[rid], "seed": request_seed(3, rid),
                        "action": action or {}, "worker": "w0", "step": rid})
        for rid in order or range(len(sizes)):
            params, seeds = space.sample(action or {}, request_seed(3, rid), sizes[rid])
            images, labels = fam.render(params, seeds)
            h = hashlib.blake2b(np.ascontiguousarray(images).data, digest_size=16)
            h.update(np.ascontiguousarray(labels.astype(np.int64)).data)
            stream.write(json.dumps({"id": rid, "digest": h.hexdigest()}) + "\n")
    log.close()
    return run_dir


def replayed(run_dir):
    batches = list(replay.regenerate(run_dir))
    return (np.concatenate([b[1] for b in batches]), np.concatenate([b[2] for b in batches]),
            np.concatenate([np.full(len(b[2]), b[0]) for b in batches]))


@pytest.fixture
def run(tmp_path):
    # consumed out of id order, the last request short: shards of 300 cut across requests
    return make_run(tmp_path / "run", [256, 256, 256, 100], order=[2, 0, 3, 1],
                    action={"thickness": [0, 0, 1, 1]})


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
    shards = [np.load(out / s["name"]) for s in json.loads((out / "index.json").read_text())["shards"]]
    assert [len(z["labels"]) for z in shards] == [500, 368]
    images, labels, requests = replayed(run)
    assert np.array_equal(np.concatenate([z["images"] for z in shards]), images)
    assert np.array_equal(np.concatenate([z["labels"] for z in shards]), labels)
    assert np.array_equal(np.concatenate([z["request"] for z in shards]), requests)
    thick = np.concatenate([z["param_thickness"] for z in shards])
    assert thick.min() >= 3.5  # the action's upper two of four bins of [1.5, 5.5]


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

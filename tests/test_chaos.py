"""Chaos: workers SIGKILLed at random moments; every request delivered exactly once, replay exact."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from chaos import run_chaos  # noqa: E402

pytestmark = pytest.mark.slow


def test_random_kills_lose_and_duplicate_nothing(tmp_path, env):
    r = run_chaos(kills=4, workers=2, samples=30720, seed=1, run_dir=tmp_path / "run",
                  overrides=["trainer.threads=1", "controller.request_size=256"], env=env, timeout=600)
    assert r["returncode"] == 0, r["log_tail"]
    assert r["kills"] == 4 and r["restarts"] >= 4
    assert r["requests_issued"] == r["requests_delivered"] == 30720 // 256
    assert r["duplicated"] == 0 and r["lost"] == 0
    assert r["replay_ok"]
    assert len(r["detect_s"]) == 4  # each kill noticed (silence or rejoin) and its requests re-issued

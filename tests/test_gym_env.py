"""The decision process as a gymnasium.Env: a random agent steps through a tiny episode."""

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from otfgen.controller.study.gym_env import GenerationEnv  # noqa: E402


def test_random_agent_runs_an_episode():
    env = GenerationEnv(budget=1024, request_size=256, window=2, width=8, reward_size=100)
    from gymnasium.utils.env_checker import check_env

    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    first_loss, rewards, done, steps = info["reward_loss"], [], False, 0
    while not done:
        obs, reward, done, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.isfinite(reward) and not truncated
        rewards.append(reward)
        steps += 1
    assert steps == 2 and info["samples"] == 1024
    # the rewards telescope: their sum is how much the real reward-split loss fell
    assert sum(rewards) == pytest.approx(first_loss - info["reward_loss"], abs=1e-9)
    assert any(r != 0 for r in rewards)  # training moved the real loss


def test_action_keeps_the_floor_on_every_bin():
    env = GenerationEnv(budget=256, width=8, reward_size=50)
    act = env.action_dict(np.zeros(env.action_space.shape))
    assert set(act) == {p.name for p in env.space}
    assert all(min(w) >= env.floor / len(w) - 1e-12 for w in act.values())

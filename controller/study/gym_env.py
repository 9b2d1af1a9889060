"""The decision "what to generate next" as a ``gymnasium.Env`` (optional extra ``gym``).

One process, no sockets: each step renders a window of requests from the action, trains the
model on them with the trainer's own step, and rewards the change of the loss on a small real
reward split over the window (Learning to Simulate, Ruiz et al. 2019, online inside one run).

- **action**: per parameter of the scene, non-negative weights over its bins (the same binning
  the policies use, ``controller.policies.n_bins``), flattened into one Box vector; the
  policies' exploration floor is applied, so no action can starve a bin.
- **observation**: per-class accuracy on the reward split, then training progress in [0, 1].
- **reward**: reward-split loss before the window minus after it.
- episode ends when ``budget`` generated samples are consumed.

    env = GenerationEnv(scene="mnist2d", budget=40_000)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

import math

import numpy as np

try:
    import gymnasium as gym
    from gymnasium import spaces
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError("controller.study.gym_env needs gymnasium: pip install 'otfgen[gym]'") from e

import torch

from otfgen.blender_gen import families
from otfgen.blender_gen.rng import request_seed
from otfgen.controller.policies import n_bins, with_floor
from otfgen.trainer.data import BUILTIN, load_dataset
from otfgen.trainer.evaluate import evaluate
from otfgen.trainer.models import build, to_input
from otfgen.trainer.step import TrainStep


class GenerationEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, scene: str = "mnist2d", bins: int = 8, window: int = 4, request_size: int = 256,
                 batch_size: int = 128, budget: int = 40_000, reward_data: str = BUILTIN, reward_size: int = 500,
                 floor: float = 0.2, width: int = 32, device: str = "cpu"):
        super().__init__()
        self.family = families.load(scene)
        self.space = families.default_space(scene)
        self.bins = {p.name: n_bins(p, bins) for p in self.space}
        self.window, self.request_size, self.batch_size, self.budget = window, request_size, batch_size, budget
        self.floor, self.width, self.device = floor, width, torch.device(device)
        x, y = load_dataset(reward_data)
        order = np.random.default_rng(0).permutation(len(y))[:reward_size]  # one fixed split, as the trainer's
        self.reward_x, self.reward_y = x[order], y[order].astype(np.int64)
        self.num_classes = self.family.NUM_CLASSES
        self.action_space = spaces.Box(0.0, 1.0, shape=(sum(self.bins.values()),), dtype=np.float32)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(self.num_classes + 1,), dtype=np.float32)

    def action_dict(self, action: np.ndarray) -> dict[str, list[float]]:
        """The flat Box action as the controller's action (per parameter bin weights, with the floor)."""
        a = np.clip(np.asarray(action, np.float64), 0.0, None) + 1e-6
        out, i = {}, 0
        for name, k in self.bins.items():
            out[name] = with_floor(a[i:i + k], self.floor).tolist()
            i += k
        return out

    def _score(self) -> tuple[np.ndarray, float]:
        r = evaluate(self.net, self.reward_x, self.reward_y, self.device, self.num_classes)
        acc = np.array([0.0 if a is None else a for a in r["acc_class"]], np.float32)
        return np.append(acc, min(1.0, self.consumed / self.budget)).astype(np.float32), r["loss"]

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self.run_seed = 0 if seed is None else int(seed)
        torch.manual_seed(self.run_seed)
        shape = self.family.IMAGE_SHAPE
        self.net = build("cnn", in_channels=shape[2] if len(shape) == 3 else 1, num_classes=self.num_classes,
                         width=self.width).to(self.device)
        self.step_fn = TrainStep(self.net, math.ceil(self.budget / self.batch_size) + 8)
        self.consumed, self.next_id = 0, 0
        obs, self.loss = self._score()
        return obs, {"reward_loss": self.loss}

    def step(self, action):
        act = self.action_dict(action)
        for _ in range(self.window):
            n = min(self.request_size, self.budget - self.consumed)
            if n <= 0:
                break
            params, seeds = self.space.sample(act, request_seed(self.run_seed, self.next_id), n)
            self.next_id += 1
            images, labels = self.family.render(params, seeds)
            for i in range(0, n, self.batch_size):
                x = to_input(torch.from_numpy(images[i:i + self.batch_size]).to(self.device))
                self.step_fn(x, torch.from_numpy(labels[i:i + self.batch_size]).to(self.device))
            self.consumed += n
        obs, loss = self._score()
        reward, self.loss = self.loss - loss, loss
        return obs, float(reward), self.consumed >= self.budget, False, {"reward_loss": loss,
                                                                         "samples": self.consumed}

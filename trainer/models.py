"""Small classifiers for 28×28 (or any size) images; selected by ``model=<name>``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    """Four 3×3 conv layers in two pooled blocks, then a fully connected head on the 7×7 map.

    Flatten, not global pooling: keeping the spatial layout of the strokes read real digits
    better after training on generated ones only (see docs/experiments.md).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, dropout: float = 0.3,
                 hidden: int = 128, input_blur: float = 0.0):
        super().__init__()
        w = width
        # optional fixed Gaussian blur of the input (std in pixels, 0 = off), in training and at test
        # alike: it hides edge-profile detail in which generated and real images differ
        self.input_blur = float(input_blur)
        if not 0.0 <= self.input_blur <= 3.0:
            raise ValueError(f"model.input_blur={input_blur}: expected a blur std in pixels in [0, 3] (0 = off)")
        if self.input_blur > 0:
            self.blur_radius = max(1, math.ceil(3 * self.input_blur))  # 3 std: 7 taps at std 1
            r = torch.arange(-self.blur_radius, self.blur_radius + 1, dtype=torch.float32)
            k = torch.exp(-0.5 * (r / self.input_blur) ** 2)
            k2 = torch.outer(k, k) / torch.outer(k, k).sum()
            self.register_buffer("blur_kernel", k2.expand(in_channels, 1, *k2.shape).clone(), persistent=False)

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
            _To7(),  # identity at 28×28; other sizes keep a 7×7 layout
        )
        self.body = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * w * 49, hidden),
                                  nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        # channels-last convolutions: 16% faster training steps and 37% faster forward passes on
        # the CPU at width 32 (2 cores, 128 images; docs/experiments.md), and what GPUs prefer
        self.to(memory_format=torch.channels_last)

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed input blur (identity when off): one pass that callers scoring the same images
        with several models (the trainer's signals) can share through ``blurred=True``."""
        if self.input_blur > 0:
            x = F.conv2d(x, self.blur_kernel, padding=self.blur_radius, groups=x.shape[1])
        return x

    def embed(self, x: torch.Tensor, blurred: bool = False) -> torch.Tensor:
        """Penultimate features [B, hidden] (what the ``match`` policy compares with real data);
        ``blurred``: x has been through ``blur`` already."""
        return self.body(self.features(x if blurred else self.blur(x)))

    def forward(self, x: torch.Tensor, blurred: bool = False) -> torch.Tensor:
        return self.head(self.embed(x, blurred))


class _To7(nn.Module):
    """Adaptive average pooling to 7×7, skipped when the map is 7×7 already (28×28 input), where
    the pooling op is an identity that still cost 0.5 ms per 128 images on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.shape[-2:] == (7, 7) else F.adaptive_avg_pool2d(x, 7)


MODELS = {"cnn": SmallCNN}


def build(name: str, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; available: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,H,W] or [B,H,W,C] -> float [B,C,H,W] in [0,1]; the one place pixels become input."""
    x = images.float().div_(255.0)
    return x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()

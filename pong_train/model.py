"""The policy networks for uint8 frames: RLlib's default IMPALA/PPO and APPO modules, scaling frames as
RLlib's Atari wrapper does (x / 128 - 1) inside the network instead of in every env step, and computing
RLlib's CNN with the same layers and parameters in fewer, faster operations."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from ray.rllib.algorithms.appo.torch.default_appo_torch_rl_module import DefaultAPPOTorchRLModule
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.torch.primitives import TorchCNN
from torch import nn


def _scaled(batch: dict[str, Any]) -> dict[str, Any]:
    obs = batch[Columns.OBS]
    if obs.dtype != torch.uint8:
        return batch
    return {**batch, Columns.OBS: obs.float().mul_(1 / 128.0).sub_(1.0)}


class FastTorchCNN(TorchCNN):
    """RLlib's TorchCNN, its layers and parameters unchanged (so are checkpoints), computed in about half the
    CPU time: frames stay channels-last, symmetric zero padding is the convolution's own, and a convolution
    that covers its whole input (the classic network's last layer) is the one matrix product it amounts to."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.permute(0, 3, 1, 2)  # NCHW view of channels-last memory, which torch's kernels favour
        padding: tuple[int, ...] | None = None
        for layer in self.cnn:
            if isinstance(layer, nn.ZeroPad2d):
                padding = layer.padding
            elif isinstance(layer, nn.Conv2d):
                x, padding = convolve(layer, x, padding), None
            else:
                x = layer(x)
        return x.permute(0, 2, 3, 1)


def convolve(layer: nn.Conv2d, x: torch.Tensor, padding: tuple[int, ...] | None) -> torch.Tensor:
    """`layer` applied to `x` zero-padded by `padding` (left, right, top, bottom), as ZeroPad2d then Conv2d."""
    symmetric: tuple[int, int] = (0, 0)
    if padding is not None:
        left, right, top, bottom = padding
        if left == right and top == bottom:
            symmetric = (top, left)
        else:
            x = F.pad(x, padding)
    if symmetric == (0, 0) and x.shape[-2:] == layer.weight.shape[-2:] and layer.stride == (1, 1):
        weight = layer.weight.permute(0, 2, 3, 1).reshape(layer.out_channels, -1)
        return F.linear(x.permute(0, 2, 3, 1).reshape(len(x), -1), weight, layer.bias)[:, :, None, None]
    return F.conv2d(x, layer.weight, layer.bias, layer.stride, symmetric)


class Uint8FramesModule(DefaultPPOTorchRLModule):
    """IMPALA's module (RLlib's default PPO module) on uint8 frames, its CNN a FastTorchCNN."""

    def setup(self) -> None:
        super().setup()
        for part in self.modules():
            if type(part) is TorchCNN:
                part.__class__ = FastTorchCNN

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return super()._forward(_scaled(batch), **kwargs)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return super()._forward_train(_scaled(batch), **kwargs)

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Any:
        return super().compute_values(_scaled(batch), embeddings)


class Uint8FramesAPPOModule(Uint8FramesModule, DefaultAPPOTorchRLModule):
    """APPO's module (the same network plus its target policy) on uint8 frames."""

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        return super().forward_target(_scaled(batch))

"""The policy network for uint8 frames: RLlib's default IMPALA/PPO module, scaling frames as RLlib's
Atari wrapper does (x / 128 - 1) inside the network instead of in every env step."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns


def _scaled(batch: dict[str, Any]) -> dict[str, Any]:
    obs = batch[Columns.OBS]
    if obs.dtype != torch.uint8:
        return batch
    return {**batch, Columns.OBS: obs.float().mul_(1 / 128.0).sub_(1.0)}


class Uint8FramesModule(DefaultPPOTorchRLModule):
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return super()._forward(_scaled(batch), **kwargs)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return super()._forward_train(_scaled(batch), **kwargs)

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Any:
        return super().compute_values(_scaled(batch), embeddings)

"""IMPALA's learner with V-trace bootstrapping at fragment ends restored.

RLlib 2.60 appends one artificial timestep to every episode chunk (value of the chunk's last
observation, `loss_mask` False) and gates the discount to 0 there. V-trace then sees that step as a
terminal state with reward 0: its delta is `-V`, which the recursion adds back into the chunk and
cancels the bootstrap exactly. Every value target stops at the fragment's end, as if each
`rollout_fragment_length` steps ended the game, so Pong's points, scored 50-150 steps after the
return that wins them, never reach the value function or the policy gradient.

Here the artificial step's reward is its own value (detached), so its delta is 0 and the last real
step bootstraps from it as V-trace intends; everything else is RLlib's loss unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.impala.torch.impala_torch_learner import IMPALATorchLearner
from ray.rllib.algorithms.impala.torch.vtrace_torch_v2 import make_time_major, vtrace_torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY


def vtrace_targets(
    *,
    target_logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminateds: torch.Tensor,
    loss_mask: torch.Tensor,
    gamma: float,
    clip_rho_threshold: float,
    clip_pg_rho_threshold: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V-trace value targets and policy-gradient advantages for time-major [T, B] tensors.

    `loss_mask` is False on the artificial bootstrap step appended to each chunk (and on padding):
    there the discount is 0 and the reward is the step's own value, so the step adds nothing to the
    trace and the real step before it bootstraps from its value.
    """
    discounts = (1.0 - terminateds.float()) * gamma * loss_mask
    bootstrap_rewards = rewards + (1.0 - loss_mask) * values.detach()
    # Row b's successor is the first step of row b + 1; the last row has none, and the caller masks
    # the batch's last step, so its discount is 0 and any value will do.
    bootstrap_values = torch.cat([values[0][1:], values[0][0:1]], dim=0)
    return vtrace_torch(
        target_action_log_probs=target_logp,
        behaviour_action_log_probs=behaviour_logp,
        discounts=discounts,
        rewards=bootstrap_rewards,
        values=values,
        bootstrap_values=bootstrap_values,
        clip_rho_threshold=clip_rho_threshold,
        clip_pg_rho_threshold=clip_pg_rho_threshold,
    )


class BootstrappingIMPALALearner(IMPALATorchLearner):
    """RLlib's IMPALA torch learner, its loss computed with `vtrace_targets`."""

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        seq_len = config.get_rollout_fragment_length()

        def time_major(tensor: torch.Tensor) -> torch.Tensor:
            return make_time_major(tensor, trajectory_len=seq_len)

        loss_mask = batch[Columns.LOSS_MASK].float()
        target_dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        target_logp = time_major(target_dist.logp(batch[Columns.ACTIONS]))
        values = time_major(module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS)))
        mask = time_major(loss_mask).clone()
        # The batch's very last step has no successor in the batch (minibatches cut chunks anywhere):
        # it serves as the bootstrap step of the steps before it instead of being trained on.
        mask[-1, -1] = 0.0
        vs, pg_advantages = vtrace_targets(
            target_logp=target_logp,
            behaviour_logp=time_major(batch[Columns.ACTION_LOGP]),
            rewards=time_major(batch[Columns.REWARDS]),
            values=values,
            terminateds=time_major(batch[Columns.TERMINATEDS]),
            loss_mask=mask,
            gamma=config.gamma,
            clip_rho_threshold=config.vtrace_clip_rho_threshold,
            clip_pg_rho_threshold=config.vtrace_clip_pg_rho_threshold,
        )
        if config.learner_config_dict.get("normalize_advantages"):
            real = mask.bool()
            pg_advantages = (pg_advantages - pg_advantages[real].mean()) / (pg_advantages[real].std() + 1e-8)
        size = torch.sum(loss_mask)
        pi_loss = -torch.sum(target_logp * pg_advantages * mask)
        vf_loss = 0.5 * torch.sum(torch.pow(values - vs, 2.0) * mask)
        entropy_loss = -torch.sum(target_dist.entropy() * loss_mask)
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        total_loss = pi_loss / size + vf_loss / size * config.vf_loss_coeff + entropy_loss / size * entropy_coeff
        self.metrics.log_dict(
            {
                "pi_loss": pi_loss,
                "mean_pi_loss": pi_loss / size,
                "vf_loss": vf_loss,
                "mean_vf_loss": vf_loss / size,
                ENTROPY_KEY: -entropy_loss / size,
            },
            key=module_id,
            window=1,
        )
        return total_loss

"""IMPALA's and APPO's learners with V-trace bootstrapping at fragment ends restored (and torch's fused Adam).

RLlib 2.60 appends one artificial timestep to every episode chunk (value of the chunk's last
observation, `loss_mask` False) and gates the discount to 0 there. V-trace then sees that step as a
terminal state with reward 0: its delta is `-V`, which the recursion adds back into the chunk and
cancels the bootstrap exactly. Every value target stops at the fragment's end, as if each
`rollout_fragment_length` steps ended the game, so Pong's points, scored 50-150 steps after the
return that wins them, never reach the value function or the policy gradient.

RLlib 2.60's APPO learner builds its V-trace the same way and has the same fault.

Here the artificial step's reward is its own value (detached), so its delta is 0 and the last real
step bootstraps from it as V-trace intends; everything else is RLlib's loss unchanged. V-trace itself is
RLlib's recursion with the IMPALA paper's lambda added (`vtrace`).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.appo.appo import (
    LEARNER_RESULTS_CURR_KL_COEFF_KEY,
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_MEAN_IS_KEY,
)
from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.algorithms.impala.torch.impala_torch_learner import IMPALATorchLearner
from ray.rllib.algorithms.impala.torch.vtrace_torch_v2 import make_time_major
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.core.rl_module.apis import TARGET_NETWORK_ACTION_DIST_INPUTS


def vtrace(
    *,
    target_logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_values: torch.Tensor,
    clip_rho_threshold: float,
    clip_pg_rho_threshold: float,
    lambda_: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V-trace value targets and policy-gradient advantages for time-major [T, B] tensors, as RLlib's
    `vtrace_torch` computes them, with each trace coefficient `c` also multiplied by `lambda_` (the IMPALA
    paper's section 4.1): at 1 it is RLlib's V-trace, below 1 an off-policy TD(lambda)."""
    rhos = torch.exp(target_logp - behaviour_logp)
    clipped_rhos = torch.clamp(rhos, max=clip_rho_threshold)
    cs = lambda_ * torch.clamp(rhos, max=1.0)
    values_t_plus_1 = torch.cat([values[1:], bootstrap_values[None]], dim=0)
    deltas = clipped_rhos * (rewards + discounts * values_t_plus_1 - values)
    vs_minus_v = [torch.zeros_like(bootstrap_values)]
    for t in reversed(range(len(discounts))):
        vs_minus_v.append(deltas[t] + discounts[t] * cs[t] * vs_minus_v[-1])
    vs = torch.stack(vs_minus_v[1:][::-1]) + values
    vs_t_plus_1 = torch.cat([vs[1:], bootstrap_values[None]], dim=0)
    clipped_pg_rhos = torch.clamp(rhos, max=clip_pg_rho_threshold)
    advantages = clipped_pg_rhos * (rewards + discounts * vs_t_plus_1 - values)
    return vs.detach(), advantages.detach()


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
    lambda_: float = 1.0,
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
    return vtrace(
        target_logp=target_logp,
        behaviour_logp=behaviour_logp,
        discounts=discounts,
        rewards=bootstrap_rewards,
        values=values,
        bootstrap_values=bootstrap_values,
        clip_rho_threshold=clip_rho_threshold,
        clip_pg_rho_threshold=clip_pg_rho_threshold,
        lambda_=lambda_,
    )


class Chunks:
    """One batch's time-major [T, B] views, the trained policy's distribution and the loss mask, where the
    batch's very last step (no successor in the batch, since minibatches cut chunks anywhere) serves as
    the bootstrap step of the steps before it instead of being trained on."""

    def __init__(self, module: Any, config: Any, batch: dict, fwd_out: dict) -> None:
        seq_len = config.get_rollout_fragment_length()
        self.time_major = lambda tensor: make_time_major(tensor, trajectory_len=seq_len)
        self.batch, self.config = batch, config
        self.loss_mask = batch[Columns.LOSS_MASK].float()
        self.dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        self.logp = self.time_major(self.dist.logp(batch[Columns.ACTIONS]))
        self.behaviour_logp = self.time_major(batch[Columns.ACTION_LOGP])
        self.values = self.time_major(module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS)))
        self.mask = self.time_major(self.loss_mask).clone()
        self.mask[-1, -1] = 0.0
        self.size = torch.sum(self.loss_mask)

    def vtrace(self, target_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Value targets and advantages of the policy whose log-probabilities are `target_logp`."""
        return vtrace_targets(
            target_logp=target_logp,
            behaviour_logp=self.behaviour_logp,
            rewards=self.time_major(self.batch[Columns.REWARDS]),
            values=self.values,
            terminateds=self.time_major(self.batch[Columns.TERMINATEDS]),
            loss_mask=self.mask,
            gamma=self.config.gamma,
            clip_rho_threshold=self.config.vtrace_clip_rho_threshold,
            clip_pg_rho_threshold=self.config.vtrace_clip_pg_rho_threshold,
            lambda_=self.config.learner_config_dict.get("vtrace_lambda", 1.0),
        )

    def value_loss(self, value_targets: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.sum(torch.pow(self.values - value_targets, 2.0) * self.mask)

    def entropy(self) -> torch.Tensor:
        return torch.sum(self.dist.entropy() * self.loss_mask) / self.size

    def normalized(self, advantages: torch.Tensor) -> torch.Tensor:
        """Advantages scaled to mean 0 and standard deviation 1 over the trained steps (PPO's normalization)."""
        real = self.mask.bool()
        return (advantages - advantages[real].mean()) / (advantages[real].std() + 1e-8)


class FusedAdam:
    """RLlib's optimizer (Adam at the config's lr or lr schedule) as torch's fused kernel: the same update rule; the
    optimizer phase about a third cheaper than the per-tensor loop RLlib gets on a CPU (`pong-train bench --learner`)."""

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        params = self.get_parameters(self.module[module_id])  # type: ignore[attr-defined]
        self.register_optimizer(  # type: ignore[attr-defined]
            module_id=module_id, optimizer=torch.optim.Adam(params, fused=True), params=params,
            lr_or_lr_schedule=config.lr)


class BootstrappingIMPALALearner(FusedAdam, IMPALATorchLearner):
    """RLlib's IMPALA torch learner, its loss computed with `vtrace_targets`."""

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        chunks = Chunks(self.module[module_id].unwrapped(), config, batch, fwd_out)
        vs, pg_advantages = chunks.vtrace(chunks.logp)
        if config.learner_config_dict.get("normalize_advantages"):
            pg_advantages = chunks.normalized(pg_advantages)
        size = chunks.size
        pi_loss = -torch.sum(chunks.logp * pg_advantages * chunks.mask)
        vf_loss = chunks.value_loss(vs)
        entropy = chunks.entropy()
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        total_loss = pi_loss / size + vf_loss / size * config.vf_loss_coeff - entropy * entropy_coeff
        self.metrics.log_dict(
            {
                "pi_loss": pi_loss,
                "mean_pi_loss": pi_loss / size,
                "vf_loss": vf_loss,
                "mean_vf_loss": vf_loss / size,
                ENTROPY_KEY: entropy,
            },
            key=module_id,
            window=1,
        )
        return total_loss


class BootstrappingAPPOLearner(FusedAdam, APPOTorchLearner):
    """RLlib's APPO torch learner, its V-trace computed with `vtrace_targets`.

    As RLlib's: V-trace and the clipped objective are taken against the target network's policy, the
    behaviour policy's share of the ratio clipped at `target_worker_clipping`.
    """

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        chunks = Chunks(module, config, batch, fwd_out)
        old_dist = module.get_train_action_dist_cls().from_logits(
            module.forward_target(batch)[TARGET_NETWORK_ACTION_DIST_INPUTS])
        old_logp = chunks.time_major(old_dist.logp(batch[Columns.ACTIONS]))
        vs, pg_advantages = chunks.vtrace(old_logp)
        if config.learner_config_dict.get("normalize_advantages"):
            pg_advantages = chunks.normalized(pg_advantages)
        pg_advantages = pg_advantages * chunks.mask
        is_ratio = torch.clip(torch.exp(chunks.behaviour_logp - old_logp), 0.0, config.target_worker_clipping)
        ratio = is_ratio * torch.exp(chunks.logp - chunks.behaviour_logp)
        surrogate = torch.minimum(pg_advantages * ratio,
                                  pg_advantages * torch.clip(ratio, 1 - config.clip_param, 1 + config.clip_param))
        mean_pi_loss = -torch.sum(surrogate) / chunks.size
        mean_vf_loss = chunks.value_loss(vs) / chunks.size
        entropy = chunks.entropy()
        kl_coeff = self.curr_kl_coeffs_per_module[module_id]
        mean_kl = (torch.sum(old_dist.kl(chunks.dist) * chunks.loss_mask) / chunks.size
                   if config.use_kl_loss else torch.zeros(()))
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        total_loss = mean_pi_loss + mean_vf_loss * config.vf_loss_coeff - entropy * entropy_coeff + mean_kl * kl_coeff
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: mean_pi_loss,
                VF_LOSS_KEY: mean_vf_loss,
                "mean_pi_loss": mean_pi_loss,
                "mean_vf_loss": mean_vf_loss,
                ENTROPY_KEY: entropy,
                LEARNER_RESULTS_KL_KEY: mean_kl,
                LEARNER_RESULTS_CURR_KL_COEFF_KEY: kl_coeff,
                LEARNER_RESULTS_MEAN_IS_KEY: torch.sum(is_ratio * chunks.mask) / chunks.size,
            },
            key=module_id,
            window=1,
        )
        return total_loss

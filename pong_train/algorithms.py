"""RLlib's IMPALA and APPO, each keeping the article's window of finished episodes in its checkpoints."""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.appo import APPO
from ray.rllib.algorithms.impala import IMPALA

from pong_train.metrics import EpisodeWindow

WINDOW_STATE = "pong_train_episode_window"
"""The key of the window's episodes in the algorithm's state (its checkpoint's state.pkl)."""


class KeepsEpisodeWindow:
    """Adds the article's episode window (pong_train.callbacks fills it) to the algorithm's checkpointed state."""

    episode_window: EpisodeWindow

    def setup(self, config: Any) -> None:
        self.episode_window = EpisodeWindow()
        super().setup(config)  # type: ignore[misc]

    def get_state(self, components: Any = None, *, not_components: Any = None, **kwargs: Any) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)  # type: ignore[misc]
        if self._check_component(WINDOW_STATE, components, not_components):  # type: ignore[attr-defined]
            state[WINDOW_STATE] = list(self.episode_window.episodes)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)  # type: ignore[misc]
        if WINDOW_STATE in state:
            self.episode_window = EpisodeWindow(state[WINDOW_STATE])


class WindowedIMPALA(KeepsEpisodeWindow, IMPALA):
    """IMPALA whose checkpoints keep the article's episode window."""


class WindowedAPPO(KeepsEpisodeWindow, APPO):
    """APPO whose checkpoints keep the article's episode window."""

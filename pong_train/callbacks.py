"""The callbacks RLlib runs: in the algorithm's process, the article's metric names and each process's memory and
CPU share added to every result, and where the env runners live; in each env runner, memory kept flat."""

from __future__ import annotations

import os
import time
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

from pong_train.metrics import FINISHED_EPISODES, add_article_names


def rss_mb() -> float:
    """Resident memory of the calling process, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def cpu_seconds() -> float:
    """CPU time the calling process has used so far (all its threads, user and system), in seconds."""
    import psutil

    used = psutil.Process().cpu_times()
    return used.user + used.system


def process_use(_runner: Any = None) -> tuple[float, float]:
    """(resident MiB, CPU seconds so far) of the calling process."""
    return rss_mb(), cpu_seconds()


class CpuShare:
    """Each process's CPU time per wall second between successive results: 1.0 is one core kept busy.

    Shows which side waits: on 2 cores, a learner near 1 with env runners well under 1 is learner-bound."""

    def __init__(self) -> None:
        self._last: tuple[float, dict[str, float]] | None = None

    def shares(self, cpu_s: dict[str, float]) -> dict[str, float]:
        now = time.monotonic()
        last, self._last = self._last, (now, cpu_s)
        if last is None or now <= last[0]:
            return {}
        # A replaced env runner is a new process whose clock restarted: no share for it this time.
        return {name: (used - last[1][name]) / (now - last[0])
                for name, used in cpu_s.items() if name in last[1] and used >= last[1][name]}


class ChunkTotals:
    """What an env runner's episode metrics read of an unfinished episode's chunks already returned (length, return,
    duration), without the chunks: RLlib 2.60's SingleAgentEnvRunner keeps every returned chunk, frames included,
    until its episode ends, so its memory grew with the episodes' length (about 7.5 KB per step and emulator)."""

    __slots__ = ("length", "total_return", "duration_s")

    def __init__(self, chunks: list[Any]) -> None:
        self.length = sum(len(chunk) for chunk in chunks)
        self.total_return = sum(chunk.get_return() for chunk in chunks)
        self.duration_s = sum(chunk.get_duration_s() for chunk in chunks)

    def __len__(self) -> int:
        return self.length

    def get_return(self) -> float:
        return self.total_return

    def get_duration_s(self) -> float:
        return self.duration_s


# The private attribute that holds them (pong_train/private_apis.py lists it; its test finds it in RLlib's source).
RETURNED_CHUNKS = "_ongoing_episodes_for_metrics"


class RunCallbacks(RLlibCallback):
    """One per algorithm (RLlib makes it with the algorithm): the state its results need between iterations."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu_share = CpuShare()
        self.placement: dict[str, Any] = {}

    def on_algorithm_init(self, *, algorithm: Any, **_: Any) -> None:
        """Note which Ray node each env runner lives on."""
        import ray
        import torch

        # The local learner trains here; a second torch thread only contends with the env runners.
        torch.set_num_threads(1)

        def where(_runner: Any) -> dict[str, Any]:
            return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
                    "pid": os.getpid()}

        group = algorithm.env_runner_group
        runners = group.foreach_env_runner(where, local_env_runner=False) if group.num_remote_env_runners() else []
        self.placement = {"learner_node_id": ray.get_runtime_context().get_node_id(), "learner_pid": os.getpid(),
                          "env_runners": runners}

    def on_sample_end(self, *, env_runner: Any = None, **_: Any) -> None:
        """In each env runner: fold the chunks of every unfinished episode it has returned into their totals."""
        for chunks in getattr(env_runner, RETURNED_CHUNKS, {}).values():
            if len(chunks) > 1 or (chunks and not isinstance(chunks[0], ChunkTotals)):
                chunks[:] = [ChunkTotals(chunks)]

    def on_episode_end(self, *, episode: Any, prev_episode_chunks: Any = (), metrics_logger: Any = None,
                       **_: Any) -> None:
        """In each env runner: report the finished episode's whole return and length (its chunks already returned
        included) to the algorithm, for the article's window."""
        chunks = [*(prev_episode_chunks or []), episode]
        finished = {"return": float(sum(chunk.get_return() for chunk in chunks)),
                    "length": sum(len(chunk) for chunk in chunks)}
        metrics_logger.log_value(FINISHED_EPISODES, finished, reduce="item_series")

    def on_train_result(self, *, algorithm: Any, result: dict, **_: Any) -> None:
        """The article's metric names join RLlib's in every result, so Tune's files and TensorBoard carry both; so
        do the memory and CPU share of the learner's and each env runner's process."""
        add_article_names(result, algorithm.episode_window)  # pong_train.algorithms owns it
        result["placement"] = self.placement
        group = algorithm.env_runner_group
        runners = group.foreach_env_runner(process_use, local_env_runner=False,
                                           timeout_seconds=10) if group.num_remote_env_runners() else []
        used = {"learner": process_use(), **{f"env_runner_{i}": use for i, use in enumerate(runners, 1)}}
        result["rss_mb"] = {name: mb for name, (mb, _) in used.items()}
        result["cpu_share"] = self.cpu_share.shares({name: cpu for name, (_, cpu) in used.items()})

"""Every private name of another library (Ray, RLlib) that the core uses, and why no public one serves; each
package keeps such a list (the azureml backend's is its own `private_apis.py`).

A minor release may move any of them: tests/test_private_apis.py finds each one by name (`PrivateUse.locate`), so
a move fails there, loudly, and checks with `foreign_private_names` that the core uses no private name its list
leaves out.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class PrivateUse:
    module: str
    """The module that holds it."""
    name: str
    """Its dotted path in `module` (`Class.attribute`); the last part may also be a parameter of the owner, an
    attribute the owner sets on its instances, or a keyword argument the owner reads from **kwargs."""
    used_in: str
    why: str

    def locate(self) -> None:
        """Raise AssertionError naming the use if this release no longer has it where the list says."""
        owner = importlib.import_module(self.module)
        *path, last = self.name.split(".")
        for part in path:
            assert hasattr(owner, part), f"{self.module}.{self.name} moved ({part} is gone); used in {self.used_in}"
            owner = getattr(owner, part)
        if hasattr(owner, last) or callable(owner) and last in inspect.signature(owner).parameters:
            return
        # Set on instances (self._x = ...) or read from **kwargs ("_x"): it shows in the owner's own source.
        source = inspect.getsource(owner) if inspect.isclass(owner) or inspect.isroutine(owner) else ""
        assert f".{last}" in source or f'"{last}"' in source, \
            f"{self.module}.{self.name} moved; used in {self.used_in}"


def foreign_private_names(folder: Path) -> dict[str, list[str]]:
    """The private names (`_x`, not `__x__`) the Python files under `folder` use but do not define themselves,
    and the private modules they import from, each with where: what another library keeps private. Test folders
    are left out: tests may reach into anything."""
    used: dict[str, list[str]] = {}
    defined: set[str] = set()
    for path in sorted(folder.rglob("*.py")):
        if "tests" in path.relative_to(folder).parts:
            continue
        tree = ast.parse(path.read_text())
        in_fstrings = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
        for node in ast.walk(tree):
            where = f"{path.relative_to(folder)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, (ast.Attribute, ast.Name)) and isinstance(node.ctx, ast.Store):
                defined.add(node.attr if isinstance(node, ast.Attribute) else node.id)
            elif isinstance(node, ast.alias):
                defined.add(node.asname or node.name.split(".")[0])
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
            if isinstance(node, ast.Attribute) and is_private(node.attr):
                used.setdefault(node.attr, []).append(where)
            elif isinstance(node, ast.Constant) and id(node) not in in_fstrings and isinstance(node.value, str) \
                    and node.value.isidentifier() and is_private(node.value):
                used.setdefault(node.value, []).append(where)
            elif isinstance(node, ast.keyword) and node.arg and is_private(node.arg):
                used.setdefault(node.arg, []).append(where)
            elif isinstance(node, ast.ImportFrom) and node.module and any(map(is_private, node.module.split("."))):
                used.setdefault(node.module, []).append(where)
    return {name: places for name, places in used.items() if name not in defined}


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name[1:2].isalpha()


def unlisted(folder: Path, uses: tuple[PrivateUse, ...]) -> dict[str, list[str]]:
    """The foreign private names the files under `folder` use that `uses` leaves out, with where."""
    listed = {use.module for use in uses} | {part for use in uses for part in use.name.split(".")}
    return {name: places for name, places in foreign_private_names(folder).items() if name not in listed}


PRIVATE_APIS = (
    PrivateUse("ray.rllib.env.single_agent_env_runner", "SingleAgentEnvRunner._ongoing_episodes_for_metrics",
               "callbacks.py",
               "the episodes an env runner returned unfinished in earlier samples; an episode's whole return (the "
               "article's figure) adds them up, and RLlib hands on_episode_end only the last chunk"),
    PrivateUse("ray.rllib.utils.checkpoints", "Checkpointable._check_component", "algorithms.py",
               "whether a get_state call asked for a component, here the episode window; every RLlib algorithm "
               "answers its own components with it, and Checkpointable has no public form of it"),
    PrivateUse("ray.tune", "Tuner.restore._resume_config", "training.py",
               "--resume continues every trial, finished ones included (a run that met its stop and is given more); "
               "restore's public resume_* flags cannot resume a finished trial"),
    PrivateUse("ray.rllib.core.learner.learner_group", "LearnerGroup._learner", "benchmarks/learner_cost.py",
               "the algorithm's local learner (num_learners 0), whose update the learner bench times phase by phase; "
               "LearnerGroup hands it out by no public name"),
    PrivateUse("ray.rllib.core.learner.learner", "Learner._learner_connector", "benchmarks/learner_cost.py",
               "the learner's connector pipeline (episodes to a train batch), timed as one phase of the update; "
               "Learner calls it under this name only"),
    PrivateUse("torch.jit", "save._extra_files", "export.py",
               "the TorchScript file's own place for metadata (the policy card), named with an underscore by torch"),
)

"""Meta-World ML1 (one manipulation skill, 50 goal variations) and ML10 (10 training skills, 5
held-out test skills, 50 goal variations each) behind the task protocol.

Needs the optional extra: ``pip install -e ".[metaworld]"`` (metaworld 3.1.1, which needs
mujoco 3.3.0).
"""
from __future__ import annotations

import base64
import ctypes
import functools
import json
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from distmeta_envs.base import TaskKey, TaskSettableEnv
from distmeta_envs.cache import read_cached, write_cached

# metaworld builds this many goal variations per skill and split (its private _N_GOALS).
_N_TASKS = 50
_SPLITS = ("train", "test")
# ML10's skills per split (metaworld.ML10's train_classes / test_classes).
_ML10_SKILLS = {"train": 10, "test": 5}


def _malloc_trim():
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


# glibc's malloc_trim (None off glibc). A closed skill env's MuJoCo buffers go back to the C
# heap, which keeps them: 20 envs taken through the 5 test skills twice grew from 0.6 to
# 1.6 GB, and stayed at 0.6 GB with the heap trimmed after each close
# (benchmarks/ml10_memory.py; BENCHMARKS.md, "Meta-World ML10").
_MALLOC_TRIM = _malloc_trim()


def _release_freed_memory() -> None:
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _import_metaworld(family: str):
    try:
        import metaworld
    except ImportError:
        raise ImportError(f"{family} needs the optional dependency metaworld; "
                          "install it with: pip install -e '.[metaworld]'") from None
    return metaworld


@functools.lru_cache(maxsize=4)
def _seeded_ml10(seed: int):
    """metaworld.ML10(seed): its skills' classes and task lists. Building it (resetting each of
    its 15 skills 50 times to draw goals) takes over ten seconds in every process that needs
    it (the learner, each Ray worker, each replacement); its task lists never change for a
    metaworld release and seed, so the first process keeps them in distmeta's cache folder
    (`distmeta_envs.cache`) and later ones read them there."""
    import metaworld

    cached = _cached_ml10(seed)
    if cached is not None:
        return cached
    benchmark = metaworld.ML10(seed=seed)
    lists = {split: [[t.env_name, base64.b64encode(t.data).decode()] for t in getattr(benchmark, f"{split}_tasks")]
             for split in _SPLITS}
    write_cached(_ml10_cache_name(seed), json.dumps(lists).encode())
    return benchmark


def _ml10_cache_name(seed: int) -> str:
    import importlib.metadata

    return f"metaworld-{importlib.metadata.version('metaworld')}-ml10-seed{seed}.json"


def _cached_ml10(seed: int):
    """ML10(seed) from the cache, or None (not cached, or damaged: built again)."""
    from metaworld import _env_dict
    from metaworld.types import Task

    cached = read_cached(_ml10_cache_name(seed))
    if cached is None:
        return None
    try:
        lists = json.loads(cached)
        tasks = [[Task(env_name=str(n), data=base64.b64decode(d, validate=True)) for n, d in lists[split]]
                 for split in _SPLITS]
    except (ValueError, KeyError, TypeError):
        return None
    return _ML10(_env_dict.ML10_V3["train"], _env_dict.ML10_V3["test"], *tasks)


class _ML10(NamedTuple):
    """What MetaWorldML10 reads of a metaworld.ML10 benchmark."""

    train_classes: dict
    test_classes: dict
    train_tasks: list
    test_tasks: list


def _check_split(family: str, split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"{family}: split got {split!r}; expected one of {', '.join(_SPLITS)}")


class MetaWorldML1(TaskSettableEnv, gym.Env):
    """One Meta-World ML1 skill; a task is an index into the benchmark's fixed task set.

    ``env_name`` is a Meta-World v3 name (``"reach-v3"``, ``"push-v3"``, ...; see
    ``metaworld.ML1.ENV_NAMES``). ``benchmark_seed`` fixes ML1's 50 goal variations (None draws a
    new set per instance, so different processes would not agree on what index i means);
    ``split`` picks ML1's train or test variations. Task: ``{"task_index": i}``, i an int in
    [0, 49], sampled uniformly. The goal is hidden from the observation (ML1's setting), so only
    the reward tells tasks apart. Observation, action, reward and info are Meta-World's;
    ``distmeta/MetaWorldML1-v0`` truncates at Meta-World's horizon, 500 steps.

    Meta-World's own envs refuse to reset before ``set_task``; this one sets task 0 at
    construction (or the ``task`` argument), like every env in this package.
    """

    task_keys = (TaskKey("task_index", low=0, high=_N_TASKS - 1, integer=True),)

    def __init__(self, env_name: str = "reach-v3", benchmark_seed: int | None = 0, split: str = "train",
                 task: dict | None = None, render_mode: str | None = None):
        metaworld = _import_metaworld("MetaWorldML1")
        if env_name not in metaworld.ML1.ENV_NAMES:
            raise ValueError(f"MetaWorldML1: env_name got {env_name!r}; expected a Meta-World v3 name "
                             f"such as 'reach-v3' (all: metaworld.ML1.ENV_NAMES)")
        _check_split("MetaWorldML1", split)
        benchmark = metaworld.ML1(env_name, seed=benchmark_seed)
        self._tasks = benchmark.train_tasks if split == "train" else benchmark.test_tasks
        if len(self._tasks) != _N_TASKS:
            # Guards the task_index range above against a metaworld release with another count.
            raise RuntimeError(f"MetaWorldML1: metaworld built {len(self._tasks)} {split} tasks for "
                               f"{env_name}; expected {_N_TASKS} (the version pinned is 3.1.1)")
        self.env_name, self.split = env_name, split
        self._env = benchmark.train_classes[env_name](render_mode=render_mode)
        self.render_mode = render_mode
        self.metadata = self._env.metadata
        self.observation_space = self._env.observation_space
        self.action_space = self._env.action_space
        self.set_task(task if task is not None else self.default_task())

    def _apply_task(self, task: dict) -> None:
        # Takes effect at the next reset, as in Meta-World.
        self._env.set_task(self._tasks[task["task_index"]])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # Meta-World's reset ignores its seed argument; its own seed() is the way in.
            self._env.seed(seed)
        return self._env.reset()

    def step(self, action):
        return self._env.step(action)

    def render(self):
        return self._env.render()

    def close(self):
        self._env.close()


class MetaWorldML10(TaskSettableEnv, gym.Env):
    """Meta-World ML10: one env over 10 manipulation skills (or the 5 held-out test skills).

    A task is an index into the benchmark's fixed task list for ``split``: ``{"task_index": i}``,
    i in [0, 499] for ``"train"`` (10 skills x 50 goal variations) or [0, 249] for ``"test"``
    (5 skills x 50). Indices come in blocks of 50 per skill, in the order of ``skill_names``
    (train: reach, push, pick-place, door-open, drawer-close, button-press-topdown,
    peg-insert-side, window-open, sweep, basketball; test: drawer-open, door-close, shelf-place,
    sweep-into, lever-pull), so sampling uniformly over indices is uniform over skills too.
    ``benchmark_seed`` fixes the goal variations (None draws new ones per instance). Building
    the benchmark takes over ten seconds; with a seed it is built once per machine (its task
    lists are kept in distmeta's cache folder) and shared within a process.

    As in ML10 the skill and goal are hidden from the observation. Observation (39 numbers, with
    the skills' bounds, which are equal in metaworld 3.1.1), action (Box(-1, 1, (4,)))
    and reward are Meta-World's; info is Meta-World's plus ``info["skill"]``, the episode's skill
    name (e.g. ``"push-v3"``), in reset and step. ``distmeta/MetaWorldML10-v0`` truncates at
    Meta-World's horizon, 500 steps.

    One Meta-World env per skill, built when a task of its skill is set (about 0.3 s each;
    an instance that never meets a skill never builds it); ``set_task`` sets the task on its
    skill's env, which becomes the active one at the next ``reset`` (a task takes effect at
    reset, as in Meta-World and :class:`MetaWorldML1`). After a reset an instance keeps at
    most ``max_skill_envs`` skills' envs built (default 1, the episode's), closing the least
    recently used (between a ``set_task`` and the reset it also holds the next episode's):
    each takes about 25 MB, and an evaluation worker's 260 envs each holding all 5 test
    skills took 13 GB. A rebuilt env gets the latest seeded reset's seed, so an episode from
    a seeded reset is the same whenever its env was built.
    """

    # For the train split; an instance narrows task_keys to its split's range.
    task_keys = (TaskKey("task_index", low=0, high=_ML10_SKILLS["train"] * _N_TASKS - 1, integer=True),)

    def __init__(self, benchmark_seed: int | None = 0, split: str = "train", task: dict | None = None,
                 render_mode: str | None = None, max_skill_envs: int = 1):
        metaworld = _import_metaworld("MetaWorldML10")
        _check_split("MetaWorldML10", split)
        if isinstance(max_skill_envs, bool) or not isinstance(max_skill_envs, int) or max_skill_envs < 1:
            raise ValueError(f"MetaWorldML10: max_skill_envs got {max_skill_envs!r}; expected an integer >= 1")
        self.max_skill_envs = max_skill_envs
        benchmark = metaworld.ML10(seed=None) if benchmark_seed is None else _seeded_ml10(benchmark_seed)
        classes = benchmark.train_classes if split == "train" else benchmark.test_classes
        self._tasks = benchmark.train_tasks if split == "train" else benchmark.test_tasks
        self.skill_names: tuple[str, ...] = tuple(classes)
        # Guards the index range and the 50-per-skill block layout documented above against a
        # metaworld release that builds the lists differently.
        layout = [name for name in self.skill_names for _ in range(_N_TASKS)]
        if len(self.skill_names) != _ML10_SKILLS[split] or [t.env_name for t in self._tasks] != layout:
            raise RuntimeError(f"MetaWorldML10: metaworld built {len(self._tasks)} {split} tasks over "
                               f"{len(self.skill_names)} skills; expected {_N_TASKS} per skill, in blocks, "
                               f"over {_ML10_SKILLS[split]} skills (the version pinned is 3.1.1)")
        self.task_keys = (TaskKey("task_index", low=0, high=len(self._tasks) - 1, integer=True),)
        self.split = split
        self.render_mode = render_mode
        # A skill's env is built when a task first needs it (about 0.2 s each); the seed of
        # the latest seeded reset goes to a late-built env too, so it starts where an env
        # built up front would.
        self._classes = classes
        self._seed: int | None = None
        self._envs: dict[str, Any] = {}  # least recently used first
        self._skill = self._next_skill = self.skill_names[0]
        first = self._skill_env(self.skill_names[0])
        self.metadata = first.metadata
        self.action_space = first.action_space
        self.observation_space = gym.spaces.Box(first.observation_space.low, first.observation_space.high,
                                                dtype=np.float64)
        self._env = self._next_env = first  # the episode's env, and the one the next reset starts
        self.set_task(task if task is not None else self.default_task())

    def _skill_env(self, name: str):
        env = self._envs.pop(name, None)
        if env is None:
            env = self._classes[name](render_mode=self.render_mode)
            # Guards the spaces documented above against a metaworld release whose skills differ.
            space = env.observation_space
            reference = self.__dict__.get("observation_space", space)  # unset while the first is built
            if (env.action_space != self.__dict__.get("action_space", env.action_space) or space.shape != (39,)
                    or not (np.array_equal(space.low, reference.low) and np.array_equal(space.high, reference.high))):
                raise RuntimeError(f"MetaWorldML10: skill {name} has action space {env.action_space} and "
                                   f"observation space {space}; expected those of {self.skill_names[0]}, "
                                   f"39 numbers (the version pinned is 3.1.1)")
            if self._seed is not None:
                env.seed(self._seed)
        self._envs[name] = env
        self._close_unused(keep=(name, self._skill))
        return env

    def _close_unused(self, keep: tuple[str, ...]) -> None:
        """Close the least recently used skills' envs past `max_skill_envs`, never those of
        the skills in `keep`."""
        surplus = max(0, len(self._envs) - self.max_skill_envs)
        closing = [n for n in self._envs if n not in keep][:surplus]
        for old in closing:
            self._envs.pop(old).close()
        if closing:
            _release_freed_memory()

    def set_task(self, task: dict) -> None:
        super().set_task(self._validate_for_split(task))

    def skill_of(self, task: dict) -> str:
        """The skill name of a task of this env's split, e.g. ``"push-v3"``."""
        return self._tasks[self._validate_for_split(task)["task_index"]].env_name

    def _validate_for_split(self, task: Any) -> dict:
        # validate_task (a classmethod) checks the class's task_keys, the train split's range;
        # check the index against this instance's split first, so a test-split error names [0, 249].
        if isinstance(task, dict) and "task_index" in task:
            self.task_keys[0].validate(self.family_name(), task["task_index"])
        return self.validate_task(task)

    def _apply_task(self, task: dict) -> None:
        mw_task = self._tasks[task["task_index"]]
        self._next_skill = mw_task.env_name
        self._next_env = self._skill_env(mw_task.env_name)
        self._next_env.set_task(mw_task)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # Meta-World's reset ignores its seed argument; its own seed() is the way in. Every
            # skill's env (those built later too), so later episodes on other skills are
            # reproducible too.
            self._seed = seed
            for env in self._envs.values():
                env.seed(seed)
        self._env, self._skill = self._next_env, self._next_skill
        self._close_unused(keep=(self._skill,))
        obs, info = self._env.reset()
        return obs, {**info, "skill": self._skill}

    def step(self, action):
        obs, reward, terminated, truncated, info = self._env.step(action)
        return obs, reward, terminated, truncated, {**info, "skill": self._skill}

    def render(self):
        return self._env.render()

    def close(self):
        for env in self._envs.values():
            env.close()

"""Each family's dynamics and reward follow its task as specified; gymnasium's checker passes."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.utils.env_checker import check_env

import distmeta_envs

MAX_STEPS = {
    "distmeta/Nav2D-v0": 100,
    "distmeta/HalfCheetahVel-v0": 200,
    "distmeta/HalfCheetahDir-v0": 200,
    "distmeta/AntDir-v0": 200,
    "distmeta/PendulumParams-v0": 200,
    "distmeta/CartPoleParams-v0": 200,
}
# The checker's advice about space bounds, which these envs inherit by design (Nav2D's
# unbounded position, gymnasium's own MuJoCo and Pendulum spaces). Anything else fails.
KNOWN_WARNINGS = (
    "A Box observation space minimum value is -infinity",
    "A Box observation space maximum value is infinity",
    "For Box action spaces, we recommend using a symmetric and normalized space",
)


@pytest.mark.parametrize("env_id", list(MAX_STEPS))
def test_make_and_gymnasium_env_checker(env_id):
    assert env_id in distmeta_envs.ENV_IDS
    env = gym.make(env_id)
    assert env.spec.max_episode_steps == MAX_STEPS[env_id]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    unexpected = [str(w.message) for w in caught if not any(k in str(w.message) for k in KNOWN_WARNINGS)]
    assert unexpected == []
    env.close()


def rollout_rewards(env_id: str, task: dict, actions: np.ndarray, seed: int = 0):
    """Observations, rewards and infos of one seeded rollout under ``task``."""
    env = gym.make(env_id, task=task)
    obs, _ = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], []
    for action in actions:
        obs, reward, terminated, _, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        assert not terminated
    env.close()
    return np.array(observations), np.array(rewards), infos


# -- Nav2D ------------------------------------------------------------------------------------

def test_nav2d_reward_is_minus_distance_to_the_goal_exactly():
    env = gym.make("distmeta/Nav2D-v0")
    env.unwrapped.set_task({"goal": [0.3, -0.2]})
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (2,) and np.all(obs == 0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-0.1, 0.1, 2).astype(np.float32))
        ex, ey = float(obs[0]) - 0.3, float(obs[1]) + 0.2
        assert reward == -math.sqrt(ex * ex + ey * ey)
        assert reward == pytest.approx(-math.hypot(ex, ey), rel=1e-15, abs=0)
        assert info["distance"] == -reward
        assert obs.dtype == np.float32 and not terminated and not truncated
    env.close()


def test_nav2d_vector_is_separate_nav2ds_bit_for_bit():
    """`make_vec`'s native Nav2D against one Nav2D per episode in a SyncVectorEnv: actions
    beyond the bounds, a truncation at 100 steps and the next step's restart included."""
    n, rng = 5, np.random.default_rng(0)
    tasks = [{"goal": rng.uniform(-0.5, 0.5, 2).tolist()} for _ in range(n)]
    native = gym.make_vec("distmeta/Nav2D-v0", num_envs=n, vectorization_mode="vector_entry_point")
    assert type(native).__name__ == "Nav2DVector"
    native.set_tasks(tasks)
    separate = gym.make_vec("distmeta/Nav2D-v0", num_envs=n, vectorization_mode="sync")
    for env, task in zip(separate.envs, tasks):
        env.unwrapped.set_task(task)
    for got, want in zip(native.reset(seed=list(range(n)))[:1], separate.reset(seed=list(range(n)))[:1]):
        assert np.array_equal(got, want)
    for t in range(230):
        actions = rng.uniform(-0.3, 0.3, (n, 2)).astype(np.float32)
        for got, want in zip(native.step(actions)[:4], separate.step(actions)[:4]):
            assert got.dtype == want.dtype and np.array_equal(got, want), t
    with pytest.raises(ValueError, match=r"^task: key 'goal' for Nav2D: got \[2\.0, 0\.0\]"):
        native.set_tasks([{"goal": [2.0, 0.0]}] * n)
    with pytest.raises(ValueError, match=r"Nav2DVector.set_tasks: got 1 tasks; expected 5"):
        native.set_tasks(tasks[:1])


@pytest.mark.parametrize("env_id", ["distmeta/HalfCheetahVel-v0", "distmeta/HalfCheetahDir-v0"])
def test_cheetah_vectors_are_separate_cheetahs_bit_for_bit(env_id):
    """The native vector cheetahs against one env per episode in a SyncVectorEnv: seeded
    resets, two truncations at 30 steps and the next steps' restarts included."""
    n, rng = 3, np.random.default_rng(0)
    native = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", max_episode_steps=30)
    separate = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", max_episode_steps=30)
    tasks = native.envs[0].sample_tasks(n, seed=1)
    native.set_tasks(tasks)
    for env, task in zip(separate.envs, tasks):
        env.unwrapped.set_task(task)
    assert np.array_equal(native.reset(seed=[5, 6, 7])[0], separate.reset(seed=[5, 6, 7])[0])
    for t in range(65):
        actions = np.clip(rng.uniform(-1.5, 1.5, (n, 6)), -1, 1).astype(np.float32)
        got, want = native.step(actions), separate.step(actions)
        for a, b in zip(got[:4], want[:4]):
            assert a.dtype == b.dtype and np.array_equal(a, b), t
    with pytest.raises(ValueError, match=r"set_tasks: got 1 tasks; expected 3"):
        native.set_tasks(tasks[:1])
    native.close()
    separate.close()


def test_nav2d_clips_actions_and_moves_from_the_origin():
    env = gym.make("distmeta/Nav2D-v0", task={"goal": [0.5, 0.5]})
    env.reset(seed=0)
    obs, *_ = env.step(np.array([3.0, -0.05], dtype=np.float32))
    np.testing.assert_array_equal(obs, np.array([0.1, -0.05], dtype=np.float32))
    obs, *_ = env.step([-1.0, -1.0])  # plain lists are fine too
    np.testing.assert_allclose(obs, [0.0, -0.15], atol=1e-7)
    assert env.reset()[0].tolist() == [0.0, 0.0]
    env.close()


def test_nav2d_goal_changes_the_reward_not_the_motion():
    actions = np.full((10, 2), 0.1, dtype=np.float32)
    obs_a, rew_a, _ = rollout_rewards("distmeta/Nav2D-v0", {"goal": [0.5, 0.5]}, actions)
    obs_b, rew_b, _ = rollout_rewards("distmeta/Nav2D-v0", {"goal": [-0.5, -0.5]}, actions)
    np.testing.assert_array_equal(obs_a, obs_b)
    # Walking towards (0.5, 0.5) reaches it at step 5; walking away from (-0.5, -0.5) loses reward.
    assert rew_a[4] == pytest.approx(0.0, abs=1e-6) and np.all(np.diff(rew_b) < 0)


def test_nav2d_truncates_at_100_steps_and_never_terminates():
    env = gym.make("distmeta/Nav2D-v0")
    env.reset(seed=0)
    flags = [env.step([0.1, 0.0])[2:4] for _ in range(100)]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])
    env.close()


def test_nav2d_rejects_a_malformed_action():
    env = gym.make("distmeta/Nav2D-v0", disable_env_checker=True)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"Nav2D.step: action got \[0.1\]; expected 2 numbers"):
        env.step([0.1])
    with pytest.raises(ValueError, match="expected 2 numbers"):
        env.step(np.zeros(3, dtype=np.float32))


# -- MuJoCo locomotion ------------------------------------------------------------------------

CHEETAH_ACTIONS = np.random.default_rng(1).uniform(-1, 1, (15, 6)).astype(np.float32)


def test_half_cheetah_vel_reward_formula_and_info():
    for velocity in (0.0, 1.3):
        _, rewards, infos = rollout_rewards("distmeta/HalfCheetahVel-v0", {"velocity": velocity},
                                            CHEETAH_ACTIONS)
        for action, reward, info in zip(CHEETAH_ACTIONS, rewards, infos):
            ctrl = 0.05 * float(np.sum(np.square(action)))
            assert reward == pytest.approx(-abs(info["x_velocity"] - velocity) - ctrl, abs=1e-12)
            assert info["task_velocity"] == velocity and "x_position" in info
            assert info["reward_forward"] + info["reward_ctrl"] == pytest.approx(reward, abs=1e-12)


def test_half_cheetah_velocity_changes_reward_only():
    obs_a, rew_a, _ = rollout_rewards("distmeta/HalfCheetahVel-v0", {"velocity": 0.2}, CHEETAH_ACTIONS)
    obs_b, rew_b, _ = rollout_rewards("distmeta/HalfCheetahVel-v0", {"velocity": 1.9}, CHEETAH_ACTIONS)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert not np.allclose(rew_a, rew_b)


def test_half_cheetah_direction_flips_the_velocity_term():
    obs_f, rew_f, infos = rollout_rewards("distmeta/HalfCheetahDir-v0", {"direction": 1}, CHEETAH_ACTIONS)
    obs_b, rew_b, _ = rollout_rewards("distmeta/HalfCheetahDir-v0", {"direction": -1}, CHEETAH_ACTIONS)
    np.testing.assert_array_equal(obs_f, obs_b)
    for action, forward, backward, info in zip(CHEETAH_ACTIONS, rew_f, rew_b, infos):
        ctrl = 0.05 * float(np.sum(np.square(action)))
        assert forward == pytest.approx(info["x_velocity"] - ctrl, abs=1e-12)
        assert backward == pytest.approx(-info["x_velocity"] - ctrl, abs=1e-12)
        assert info["task_direction"] == 1


def test_ant_direction_reward_formula():
    actions = np.random.default_rng(2).uniform(-1, 1, (10, 8)).astype(np.float32)
    obs_f, rew_f, infos_f = rollout_rewards("distmeta/AntDir-v0", {"direction": 1}, actions)
    obs_b, rew_b, infos_b = rollout_rewards("distmeta/AntDir-v0", {"direction": -1}, actions)
    np.testing.assert_array_equal(obs_f, obs_b)
    for direction, rewards, infos in ((1, rew_f, infos_f), (-1, rew_b, infos_b)):
        for reward, info in zip(rewards, infos):
            rest = info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
            assert reward == pytest.approx(direction * info["x_velocity"] + rest, abs=1e-12)
            assert info["reward_forward"] == pytest.approx(direction * info["x_velocity"], abs=1e-12)
            assert info["reward_survive"] == 1.0 and info["task_direction"] == direction


def test_ant_keeps_its_unhealthy_termination():
    env = gym.make("distmeta/AntDir-v0", task={"direction": -1})
    env.reset(seed=0)
    ant = env.unwrapped
    qpos = ant.init_qpos.copy()
    qpos[2] = 1.5  # torso above the healthy z range (0.2, 1.0); one step of fall cannot fix that
    ant.set_state(qpos, np.zeros(ant.model.nv))
    *_, terminated, _, info = env.step(np.zeros(8, dtype=np.float32))
    assert terminated and info["reward_survive"] == 0.0
    env.close()


# -- classic control --------------------------------------------------------------------------

def pendulum_next(task: dict, state, torque: float):
    env = gym.make("distmeta/PendulumParams-v0", task=task)
    env.reset(seed=0)
    env.unwrapped.state = np.array(state, dtype=np.float64)
    env.step(np.array([torque], dtype=np.float32))
    next_state = env.unwrapped.state.copy()
    env.close()
    return next_state


@pytest.mark.parametrize("task", [{"mass": 1.0, "length": 1.0}, {"mass": 0.5, "length": 1.5},
                                  {"mass": 1.5, "length": 0.6}])
def test_pendulum_dynamics_use_the_task_mass_and_length(task):
    th, thdot, u, g, dt = 0.7, -0.3, 1.2, 10.0, 0.05
    m, length = task["mass"], task["length"]
    # Pendulum's update rule (gymnasium's PendulumEnv.step) with the task's m and l.
    expected_thdot = thdot + (3 * g / (2 * length) * np.sin(th) + 3.0 / (m * length**2) * u) * dt
    next_th, next_thdot = pendulum_next(task, [th, thdot], u)
    assert next_thdot == pytest.approx(expected_thdot, rel=1e-6)
    assert next_th == pytest.approx(th + expected_thdot * dt, rel=1e-6)


def test_pendulum_parameters_change_the_next_state():
    a = pendulum_next({"mass": 0.5, "length": 0.5}, [0.7, -0.3], 1.2)
    b = pendulum_next({"mass": 1.5, "length": 1.5}, [0.7, -0.3], 1.2)
    assert np.all(np.abs(a - b) > 1e-3)


def cartpole_next(env, state, action: int):
    env.reset(seed=0)
    env.unwrapped.state = np.array(state, dtype=np.float64)
    obs, *_ = env.step(action)
    return obs


STATE = [0.1, -0.2, 0.05, 0.3]


def test_cartpole_default_task_is_gymnasiums_cartpole():
    ours = gym.make("distmeta/CartPoleParams-v0")
    theirs = gym.make("CartPole-v1")
    assert isinstance(ours.action_space, gym.spaces.Discrete) and ours.action_space.n == 2
    for action in (0, 1):
        np.testing.assert_array_equal(cartpole_next(ours, STATE, action), cartpole_next(theirs, STATE, action))


def test_cartpole_task_sets_all_derived_quantities():
    task = {"pole_length": 0.9, "pole_mass": 0.3}
    ours = gym.make("distmeta/CartPoleParams-v0")
    ours.unwrapped.set_task(task)
    # Reference: gymnasium's CartPole with every parameter set by hand.
    reference = CartPoleEnv()
    reference.length, reference.masspole = 0.9, 0.3
    reference.total_mass = reference.masscart + 0.3
    reference.polemass_length = 0.3 * 0.9
    for action in (0, 1):
        reference.state = np.array(STATE)
        expected, *_ = reference.step(action)
        np.testing.assert_array_equal(cartpole_next(ours, STATE, action), expected)
    default = cartpole_next(gym.make("distmeta/CartPoleParams-v0"), STATE, 1)
    assert np.abs(default - cartpole_next(ours, STATE, 1))[[1, 3]].min() > 1e-4

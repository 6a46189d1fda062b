"""Tests for dreamer.envs: names, pixels, time limits, seeding, rendering and VectorEnv."""

from __future__ import annotations

import functools
import multiprocessing
import os

import numpy as np
import pytest

from dreamer.envs import VectorEnv, env_names, make_env, parse_dmc_name
from dreamer.envs import dmc
from dreamer.envs.image import resize
from dreamer.errors import EnvError

try:  # tests/ is on sys.path under pytest's default (prepend) import mode
    import fake_envs
except ImportError:  # tests/ is a package
    from tests import fake_envs


def fake(env_id: str) -> str:
    """Our name for a fake env; the module part lets worker processes register it."""
    return f'gym:{fake_envs.__name__}:{env_id}'


def onehot(index: int, size: int = 3) -> np.ndarray:
    return np.eye(size, dtype=np.float32)[index]


def check_obs(obs: dict, size: int = 64) -> None:
    assert set(obs) == {'image', 'reward', 'is_first', 'is_last', 'is_terminal'}
    assert obs['image'].shape == (size, size, 3) and obs['image'].dtype == np.uint8
    assert isinstance(obs['reward'], np.float32)
    for key in ('is_first', 'is_last', 'is_terminal'):
        assert isinstance(obs[key], bool)


# --- names -------------------------------------------------------------------------------------

def test_mujoco_gl_is_set_before_dm_control():
    assert os.environ.get('MUJOCO_GL')


def test_every_dm_control_task_name_round_trips():
    from dm_control import suite
    names = env_names()
    assert len(names) == len(set(names)) == len(suite.ALL_TASKS)
    for domain, task in suite.ALL_TASKS:
        assert parse_dmc_name(f'dmc_{domain}_{task}') == (domain, task)
    assert parse_dmc_name('dmc_ball_in_cup_catch') == ('ball_in_cup', 'catch')
    assert parse_dmc_name('dmc_point_mass_easy') == ('point_mass', 'easy')


def test_parse_with_explicit_task_list():
    tasks = [('point_mass', 'easy'), ('walker', 'walk')]
    assert parse_dmc_name('dmc_point_mass_easy', tasks) == ('point_mass', 'easy')
    with pytest.raises(EnvError, match='dmc_walker_walk'):
        parse_dmc_name('dmc_walker_wlak', tasks)


def test_default_cameras():
    assert dmc.default_camera('quadruped') == 2
    assert dmc.default_camera('walker') == 0


@pytest.mark.parametrize('name, expected', [
    ('dmc_walker_wlak', 'dmc_walker_walk'),
    ('dmc_pointmass_easy', 'dmc_point_mass_easy'),
    ('walker_walk', 'dmc_walker_walk'),
])
def test_typo_suggests_closest_task(name, expected):
    with pytest.raises(EnvError, match=r"dmc_<domain>_<task>.*gym:<id>") as info:
        make_env(name, seed=0)
    assert expected in str(info.value) and '\n' not in str(info.value)


def test_bad_prefix_explains_format():
    with pytest.raises(EnvError, match=r"'dmc_<domain>_<task>'.*'gym:<id>'"):
        make_env('atari_pong', seed=0)


@pytest.mark.parametrize('name', ['gym:NoSuchEnv-v0', 'gym:no_such_module:Env-v0'])
def test_unknown_gym_id(name):
    with pytest.raises(EnvError, match=name.removeprefix('gym:')):
        make_env(name, seed=0)


def test_bad_settings():
    with pytest.raises(EnvError, match='action_repeat'):
        make_env(fake('FakeEndless-v0'), seed=0, action_repeat=0)


# --- DMC ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['dmc_ball_in_cup_catch', 'dmc_point_mass_easy'])
def test_dmc_observations(name):
    with make_env(name, seed=0, fast_render=True) as env:
        assert env.obs_space == {'image': ((64, 64, 3), np.dtype(np.uint8))} and env.action_size == 2 and not env.discrete
        obs = env.reset()
        check_obs(obs)
        assert obs['is_first'] and not obs['is_last'] and obs['reward'] == 0
        obs = env.step(np.zeros(env.action_size, np.float32))
        check_obs(obs)
        assert not obs['is_first'] and not obs['is_last']
        data = env.physics.data
        assert env.physics_state().shape == (len(data.qpos) + len(data.qvel),)


def test_dmc_time_limit_counts_env_steps():
    with make_env('dmc_walker_walk', seed=0, action_repeat=2, time_limit=20,
                  fast_render=True) as env:
        env.reset()
        lasts = [env.step(np.zeros(6, np.float32))]
        one_step = env.physics.time()  # one agent step: 2 environment steps
        lasts += [env.step(np.zeros(6, np.float32)) for _ in range(9)]
        assert [o['is_last'] for o in lasts] == [False] * 9 + [True]
        assert not any(o['is_terminal'] for o in lasts)
        assert env.physics.time() == pytest.approx(10 * one_step)
        with pytest.raises(RuntimeError, match='reset'):
            env.step(np.zeros(6, np.float32))
        assert env.reset()['is_first']


def test_dmc_termination_is_terminal(monkeypatch):
    from dm_control.suite import walker
    calls = []

    def terminating(task, physics):  # dm_control's Task API: a discount of 0 ends the episode
        calls.append(physics.time())
        return 0.0

    with make_env('dmc_walker_walk', seed=0, action_repeat=3, fast_render=True) as env:
        env.reset()
        monkeypatch.setattr(walker.PlanarWalker, 'get_termination', terminating)
        obs = env.step(np.zeros(6, np.float32))
        assert obs['is_last'] and obs['is_terminal']
        assert len(calls) == 1  # the repeat stops at the end of the episode


def test_dmc_seeding():
    envs = [make_env('dmc_walker_walk', seed=s, fast_render=True) for s in (0, 0, 1)]
    try:
        first = [env.reset() for env in envs]
        states = [env.physics_state() for env in envs]
        np.testing.assert_array_equal(first[0]['image'], first[1]['image'])
        np.testing.assert_array_equal(states[0], states[1])
        assert not np.array_equal(states[0], states[2])
        action = np.random.default_rng(0).uniform(-1, 1, 6).astype(np.float32)
        a, b = envs[0].step(action), envs[1].step(action)
        np.testing.assert_array_equal(a['image'], b['image'])
        assert a['reward'] == b['reward']
    finally:
        for env in envs:
            env.close()


def test_cached_camera_matches_physics_render():
    with make_env('dmc_walker_walk', seed=0) as env, \
            make_env('dmc_walker_walk', seed=0, fast_render=True) as fast_env:
        env.reset()
        fast_obs = fast_env.reset()
        for _ in range(3):
            obs = env.step(np.full(6, 0.5, np.float32))
            fast_obs = fast_env.step(np.full(6, 0.5, np.float32))
        np.testing.assert_array_equal(obs['image'], env.physics.render(64, 64, camera_id=0))
        assert fast_obs['image'].shape == obs['image'].shape
        assert not np.array_equal(fast_obs['image'], obs['image'])  # no shadows / skybox


def test_render_failure_is_env_error(monkeypatch):
    from dm_control.mujoco import engine

    def broken_camera(*args, **kwargs):
        raise RuntimeError('Cannot initialize a EGL device display')

    monkeypatch.setattr(engine, 'Camera', broken_camera)
    with make_env('dmc_point_mass_easy', seed=0) as env:
        with pytest.raises(EnvError, match=r'apt-get install libegl1 libgl1.*MUJOCO_GL'):
            env.reset()


# --- gymnasium ---------------------------------------------------------------------------------

def test_gym_termination():
    with make_env(fake('FakeTerminate-v0'), seed=0, action_repeat=2) as env:  # ends at t=5
        assert env.discrete and env.action_size == 3
        check_obs(env.reset())
        steps = [env.step(onehot(1)) for _ in range(3)]
        ends = [(o['is_last'], o['is_terminal']) for o in steps]
        assert ends == [(False, False), (False, False), (True, True)]
        assert [float(o['reward']) for o in steps] == [4.0, 4.0, 2.0]  # 2 per env step
        assert env.gym_env.unwrapped.t == 5  # the last repeat stopped early
        assert env.gym_env.unwrapped.actions == [1] * 5  # one-hot -> argmax


def test_gym_truncation_is_not_terminal():
    with make_env(fake('FakeTruncate-v0'), seed=0, action_repeat=2) as env:  # TimeLimit 4
        env.reset()
        steps = [env.step(onehot(0)) for _ in range(2)]
        assert [(o['is_last'], o['is_terminal']) for o in steps] == [(False, False), (True, False)]


def test_gym_own_time_limit_counts_env_steps():
    with make_env(fake('FakeEndless-v0'), seed=0, action_repeat=2, time_limit=5) as env:
        env.reset()
        steps = [env.step(onehot(2)) for _ in range(3)]
        assert [o['is_last'] for o in steps] == [False, False, True]
        assert not steps[-1]['is_terminal']
        assert env.gym_env.unwrapped.t == 5


def test_gym_image_observation_is_resized():
    with make_env(fake('FakeEndless-v0'), seed=0, action_repeat=2, size=32) as env:
        assert env.obs_space['image'][0] == (32, 32, 3)
        check_obs(env.reset(), size=32)
        assert (env.step(onehot(0))['image'] == 2).all()  # image encodes t


def test_gym_rendered_pixels_and_box_rescale():
    with make_env(fake('FakeRender-v0'), seed=0, action_repeat=1) as env:
        assert not env.discrete and env.action_size == 2
        check_obs(env.reset())
        last_action = lambda: env.gym_env.unwrapped.last_action  # noqa: E731
        env.step(np.array([-1, 1], np.float32))
        np.testing.assert_allclose(last_action(), [-2, 10])
        env.step(np.array([0, 0], np.float32))
        np.testing.assert_allclose(last_action(), [0, 5])
        obs = env.step(np.array([3, -3], np.float32))  # clipped to [-1, 1]
        np.testing.assert_allclose(last_action(), [2, 0])
        check_obs(obs)
        assert (obs['image'][:, :32, 2] == 255).all() and (obs['image'][:, 32:, 2] == 0).all()


def test_gym_seeding():
    def first_image(seed: int) -> np.ndarray:
        with make_env(fake('FakeRender-v0'), seed=seed) as env:
            env.reset()
            return env.step(np.array([0.3, -0.2], np.float32))['image']

    np.testing.assert_array_equal(first_image(0), first_image(0))
    assert not np.array_equal(first_image(0), first_image(1))


@pytest.mark.filterwarnings('ignore:.*render_mode:UserWarning')
def test_gym_without_pixels():
    with pytest.raises(EnvError, match='cannot give pixels'):
        make_env(fake('FakeNoPixels-v0'), seed=0)


def test_classic_control_pixels():
    pytest.importorskip('pygame')
    with make_env('gym:CartPole-v1', seed=0) as env:
        assert env.discrete and env.action_size == 2
        check_obs(env.reset())
        check_obs(env.step(onehot(1, 2)))
    with make_env('gym:Pendulum-v1', seed=0) as env:
        assert not env.discrete and env.action_size == 1
        check_obs(env.reset())
        env.step(np.array([1.0], np.float32))
        assert env.gym_env.unwrapped.last_u == pytest.approx(2.0)  # high = 2


def test_classic_control_without_pygame_is_env_error():
    try:
        import pygame  # noqa: F401
        pytest.skip('pygame is installed')
    except ImportError:
        pass
    with make_env('gym:CartPole-v1', seed=0) as env:
        with pytest.raises(EnvError, match='pygame'):
            env.reset()


# --- images ------------------------------------------------------------------------------------

def test_resize_area_and_nearest():
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    small = resize(image, 2)
    assert small.shape == (2, 2, 3) and small.dtype == np.uint8
    np.testing.assert_array_equal(small[0, 0], image[:2, :2].reshape(-1, 3).mean(0).round())
    big = resize(image, 8)
    np.testing.assert_array_equal(big[::2, ::2], image)
    assert resize(np.zeros((48, 30, 3), np.uint8), 64).shape == (64, 64, 3)


# --- VectorEnv ---------------------------------------------------------------------------------

def vector_fns() -> list:
    return [functools.partial(make_env, fake('FakeTerminate-v0'), seed=0, action_repeat=1),
            functools.partial(make_env, fake('FakeEndless-v0'), seed=1, action_repeat=1)]


def run_vector(vec: VectorEnv, steps: int) -> list[dict[str, np.ndarray]]:
    actions = np.tile(onehot(1), (vec.num_envs, 1))
    return [vec.step(actions) for _ in range(steps)]


def test_vector_env_auto_reset():
    with VectorEnv(vector_fns()) as vec:
        assert (vec.num_envs, vec.action_size, vec.discrete) == (2, 3, True)
        assert vec.obs_space['image'][0] == (64, 64, 3)
        out = run_vector(vec, 8)
    assert out[0]['image'].shape == (2, 64, 64, 3) and out[0]['reward'].dtype == np.float32
    first = np.array([o['is_first'] for o in out])  # [T, N]
    last = np.array([o['is_last'] for o in out])
    t = np.array([o['image'][:, 0, 0, 0] for o in out])  # the image encodes the env's step count
    np.testing.assert_array_equal(first[:, 0], [1, 0, 0, 0, 0, 0, 1, 0])  # env 0 ends at t=5
    np.testing.assert_array_equal(last[:, 0], [0, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(t[:, 0], [0, 1, 2, 3, 4, 5, 0, 1])
    np.testing.assert_array_equal(first[:, 1], [1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(t[:, 1], np.arange(8))
    assert out[5]['is_terminal'][0] and out[6]['reward'][0] == 0


def test_vector_env_parallel_matches_serial():
    with VectorEnv(vector_fns()) as vec:
        serial = run_vector(vec, 8)
    with VectorEnv(vector_fns(), parallel=True) as vec:
        parallel = run_vector(vec, 8)
        processes = multiprocessing.active_children()  # the workers
    assert len(processes) >= len(vector_fns())
    for a, b in zip(serial, parallel):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert not any(p.is_alive() for p in processes)  # close() stopped the workers


def test_vector_env_worker_errors_reach_parent():
    fns = [functools.partial(make_env, fake('FakeCrash-v0'), seed=0),
           functools.partial(make_env, fake('FakeEndless-v0'), seed=0)]
    with VectorEnv(fns, parallel=True) as vec:
        vec.step(np.zeros((2, 3), np.float32))  # reset
        with pytest.raises(RuntimeError, match='boom at step'):
            vec.step(np.zeros((2, 3), np.float32))
    with pytest.raises(EnvError, match='NoSuchEnv'):
        VectorEnv([functools.partial(make_env, 'gym:NoSuchEnv-v0', seed=0)], parallel=True)


def test_vector_env_needs_picklable_fns_when_parallel():
    with pytest.raises(TypeError, match='picklable'):
        VectorEnv([lambda: make_env(fake('FakeEndless-v0'), seed=0)], parallel=True)


def test_vector_env_physics_state():
    fns = [functools.partial(make_env, 'dmc_point_mass_easy', seed=seed, fast_render=True)
           for seed in (0, 1)]
    with VectorEnv(fns) as vec:
        vec.step(np.zeros((2, 2), np.float32))
        assert vec.physics_state().shape == (2, 4)  # point_mass: qpos 2 + qvel 2


@pytest.mark.parametrize('parallel', [False, True])
def test_vector_env_restarts_a_crashed_env_and_drops_its_episode(tmp_path, monkeypatch, capsys, parallel):
    from dreamer.collect import Collector

    monkeypatch.setenv('FAKE_CRASH_MARKER', str(tmp_path / 'crashed'))
    fns = [functools.partial(make_env, fake('FakeCrashOnce-v0'), seed=0, action_repeat=1),
           functools.partial(make_env, fake('FakeEndless-v0'), seed=0, action_repeat=1)]
    with VectorEnv(fns, parallel=parallel, max_restarts=2) as vec:
        collector = Collector(vec, action_repeat=1)
        episodes, firsts = [], []
        for _ in range(12):
            done, _ = collector.step(lambda obs: np.eye(3, dtype=np.float32)[[0, 0]])
            episodes += done
            firsts.append(bool(collector.obs['is_first'][0]))
        assert vec.restarts == 1
    # The crash (third step of the first episode) brings the env back with a fresh episode.
    assert True in firsts[:4]
    assert 'environment 0 raised RuntimeError: crashed once' in capsys.readouterr().err
    # Only complete 5-step episodes reach the replay; the crashed one is gone.
    assert episodes and all(len(ep['reward']) == 6 for ep in episodes)
    assert all(ep['is_first'][0] and ep['is_last'][-1] for ep in episodes)


def test_vector_env_gives_up_after_max_restarts():
    fns = [functools.partial(make_env, fake('FakeCrash-v0'), seed=0)]
    with VectorEnv(fns, max_restarts=2) as vec:
        vec.step(np.zeros((1, 3), np.float32))  # reset
        vec.step(np.zeros((1, 3), np.float32))  # step 1
        with pytest.raises(EnvError, match=r'environment 0 failed 3 times in a row .*boom at step 2.*env.max_restarts'):
            for _ in range(10):
                vec.step(np.zeros((1, 3), np.float32))

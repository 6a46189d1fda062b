"""Observations as named inputs: images, vectors or both, from the environments through the
world model to training, resuming and evaluating (`env.obs`)."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dreamer
from dreamer import evaluate, train
from dreamer.core.world_model import WorldModel
from dreamer.envs import make_env
from dreamer.errors import EnvError
from dreamer.logger import read_metrics

from tests.support import tiny_config

try:  # tests/ is on sys.path under pytest's default (prepend) import mode
    import fake_envs
except ImportError:  # tests/ is a package
    from tests import fake_envs

F32 = np.dtype(np.float32)


def fake(env_id: str) -> str:
    return f'gym:{fake_envs.__name__}:{env_id}'


# ----------------------------------------------------------------------------- environments

def test_dmc_vectors_are_the_suites_entries_flattened():
    with make_env('dmc_reacher_easy', seed=0, obs='vector') as env:
        assert env.obs_space == {'position': ((2,), F32), 'to_target': ((2,), F32), 'velocity': ((2,), F32)}
        obs = env.reset()
        assert 'image' not in obs and obs['is_first']
        obs = env.step(np.array([0.5, -0.5], np.float32))
        np.testing.assert_allclose(obs['position'], env.physics.data.qpos, rtol=1e-6)
        np.testing.assert_allclose(obs['velocity'], env.physics.data.qvel, rtol=1e-6)
        assert all(obs[key].dtype == F32 for key in env.obs_space)
    with make_env('dmc_walker_walk', seed=0, obs='vector') as env:  # a scalar entry becomes [1]
        assert env.obs_space['height'] == ((1,), F32) and env.obs_space['orientations'] == ((14,), F32)


def test_dmc_both_gives_the_image_and_the_vectors():
    with make_env('dmc_cartpole_swingup', seed=0, obs='both', fast_render=True) as env:
        assert set(env.obs_space) == {'image', 'position', 'velocity'}
        env.reset()
        obs = env.step(np.zeros(1, np.float32))
        assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
        assert obs['position'].shape == (3,) and obs['velocity'].shape == (2,)


def test_gym_box_is_one_vector():
    with make_env(fake('FakeRender-v0'), seed=0, obs='vector') as env:
        assert env.obs_space == {'vector': ((2,), F32)}
        obs = env.reset()
        np.testing.assert_array_equal(obs['vector'], env.gym_env.unwrapped.state)


def test_gym_dict_by_key_with_one_hot_discrete_and_the_image_entry():
    with make_env(fake('FakeDict-v0'), seed=0, action_repeat=1, obs='vector') as env:
        assert env.obs_space == {'pos': ((3,), F32), 'mode': ((3,), F32)}
        env.reset()
        obs = env.step(np.zeros(2, np.float32))
        np.testing.assert_array_equal(obs['pos'], [1, 1, -2])
        np.testing.assert_array_equal(obs['mode'], [0, 1, 0])  # step 1 of Discrete(3), one-hot
    with make_env(fake('FakeDict-v0'), seed=0, action_repeat=1, obs='both') as env:
        assert set(env.obs_space) == {'image', 'pos', 'mode'}
        env.reset()
        obs = env.step(np.zeros(2, np.float32))
        assert obs['image'].shape == (64, 64, 3) and (obs['image'] == 1).all()  # the 'camera' entry


@pytest.mark.filterwarnings('ignore:.*render_mode:UserWarning')
@pytest.mark.parametrize('env_id, obs, words', [
    ('FakeText-v0', 'vector', ['observation', 'Text', 'no encoder']),
    ('FakeNoPixels-v0', 'both', ['cannot give pixels']),
    ('FakeTerminate-v0', 'vector', ['no vector observations', '--env.obs image']),
])
def test_observations_no_encoder_can_read_are_refused(env_id, obs, words):
    with pytest.raises(EnvError) as error:
        make_env(fake(env_id), seed=0, obs=obs)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_gymnasium_mujoco_tasks_from_vectors_and_pixels():
    pytest.importorskip('imageio')  # gymnasium's MuJoCo envs need it (the gym-mujoco and test extras)
    with make_env('gym:Hopper-v5', seed=0, obs='both') as env:
        assert env.obs_space['vector'] == ((11,), F32) and env.action_size == 3
        env.reset()
        obs = env.step(np.zeros(3, np.float32))
        assert obs['image'].shape == (64, 64, 3) and np.isfinite(obs['vector']).all()


def test_a_missing_dependency_is_named_not_called_an_unknown_environment(monkeypatch):
    import gymnasium

    def make(env_id, **kwargs):
        raise ModuleNotFoundError("No module named 'imageio'", name='imageio')

    monkeypatch.setattr(gymnasium, 'make', make)
    with pytest.raises(EnvError, match="needs the missing module 'imageio'.*gym-mujoco"):
        make_env('gym:Hopper-v5', seed=0, obs='vector')
    with pytest.raises(EnvError, match="Unknown gymnasium environment 'nomodule:Foo-v0'"):
        def make_missing(env_id, **kwargs):
            raise ModuleNotFoundError("No module named 'nomodule'", name='nomodule')
        monkeypatch.setattr(gymnasium, 'make', make_missing)
        make_env('gym:nomodule:Foo-v0', seed=0)


def test_a_nan_in_a_vector_names_its_key():
    with make_env(fake('FakeNaNObs-v0'), seed=0, action_repeat=1, obs='vector') as env:
        env.reset()
        env.step(np.zeros(2, np.float32))
        env.step(np.zeros(2, np.float32))
        with pytest.raises(EnvError, match="observation 'pos' holds a NaN"):
            env.step(np.zeros(2, np.float32))


# ----------------------------------------------------------------------------- world model

VECTORS = {'a': ((2,), F32), 'b': ((1,), F32)}


def test_vector_reconstruction_losses_by_hand():
    """DreamerV3's squared error against symlog targets, and the unit Gaussian's 0.5 x squared
    error, each summed over the vector and averaged over [B, T]."""
    preds = {'a': jnp.array([[0.5, 0.0], [1.0, 1.0]]), 'b': jnp.array([[2.0], [0.0]])}
    obs = {'a': jnp.array([[math.e - 1, -3.0], [0.0, 0.0]]), 'b': jnp.array([[2.0], [0.0]])}
    symlog_a = ((0.5 - 1.0) ** 2 + (0.0 + math.log(4.0)) ** 2 + 1.0 + 1.0) / 2
    symlog_b = (2.0 - math.log(3.0)) ** 2 / 2
    gauss_a = 0.5 * ((0.5 - (math.e - 1)) ** 2 + 9.0 + 1.0 + 1.0) / 2
    for loss, expected in (('symlog_mse', {'a': symlog_a, 'b': symlog_b}), ('gaussian', {'a': gauss_a, 'b': 0.0})):
        wm = WorldModel(tiny_config(**{'model.vector_loss': loss}).model, 3, VECTORS)
        got = wm.reconstruction_losses(preds, obs, None)
        assert set(got) == {'a', 'b'}
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-6)


def test_vector_inputs_in_key_order_and_symlog_squashed():
    obs = {'b': jnp.array([[-3.0]]), 'a': jnp.array([[0.0, math.e - 1]])}
    plain = WorldModel(tiny_config().model, 3, VECTORS).vector_input(obs)
    np.testing.assert_allclose(plain, [[0.0, math.e - 1, -3.0]], rtol=1e-6)
    squashed = WorldModel(tiny_config(**{'model.symlog_inputs': True}).model, 3, VECTORS).vector_input(obs)
    np.testing.assert_allclose(squashed, [[0.0, 1.0, -math.log(4.0)]], rtol=1e-6)


def test_mixed_embedding_is_the_vector_part_then_the_image_part():
    space = {**VECTORS, 'image': ((64, 64, 3), np.dtype(np.uint8))}
    cfg = tiny_config(**{'model.mlp_units': 5}).model
    wm = WorldModel(cfg, 3, space)
    params = wm.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    obs = {'a': rng.normal(size=(2, 2)).astype(np.float32), 'b': rng.normal(size=(2, 1)).astype(np.float32),
           'image': rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)}
    embed = wm.embed(params, obs)
    vector_only = WorldModel(cfg, 3, VECTORS)
    np.testing.assert_allclose(embed[:, :5], vector_only.embed(params, obs), rtol=1e-6)
    assert embed.shape == (2, 5 + WorldModel(cfg, 3).embed_size()) == (2, wm.embed_size())


def test_the_update_trains_the_vector_encoder_and_decoder():
    wm = WorldModel(tiny_config(**{'model.mlp_units': 6}).model, 3, VECTORS)
    params = wm.init(jax.random.PRNGKey(0))
    assert 'encoder' not in params and 'decoder' not in params
    rng = np.random.default_rng(1)
    b, t = 2, 5
    batch = {'a': rng.normal(size=(b, t, 2)).astype(np.float32), 'b': rng.normal(size=(b, t, 1)).astype(np.float32),
             'action': rng.uniform(-1, 1, (b, t, 3)).astype(np.float32), 'reward': np.zeros((b, t), np.float32),
             'is_first': np.eye(1, t, dtype=bool).repeat(b, 0), 'is_terminal': np.zeros((b, t), bool)}
    grads, (_, metrics) = jax.grad(wm.loss, has_aux=True)(params, batch, jax.random.PRNGKey(2))
    assert {'a_loss', 'b_loss'} <= set(metrics) and 'image_loss' not in metrics
    for part in ('vector_encoder', 'vector_decoder'):
        assert any(np.abs(leaf).sum() > 0 for leaf in jax.tree.leaves(grads[part])), part


# ----------------------------------------------------------------------------- runs

RUN = ['--configs', 'debug', '--env.time_limit', '100', '--run.video_every', '500']


def train_run(logdir: Path, *args: str) -> int:
    return train.main([*RUN, *args, '--logdir', str(logdir)])


@pytest.mark.parametrize('agent', ['dreamer', 'planet', 'plan2explore'])
def test_every_agent_trains_resumes_and_evaluates_from_vectors(tmp_path, agent, capsys):
    logdir, env = tmp_path / 'run', ['--env', fake('FakeDict-v0'), '--env.obs', 'vector', '--agent', agent]
    assert train_run(logdir, *env, '--steps', '1500') == 0
    assert train_run(logdir, *env, '--steps', '2000') == 0
    assert 'resuming from' in capsys.readouterr().err
    metrics = read_metrics(logdir / 'metrics.jsonl')
    names = set().union(*metrics)
    assert {'model/pos_loss', 'model/mode_loss', 'eval/return'} <= names and 'model/image_loss' not in names
    assert max(m['step'] for m in metrics) == 2000
    assert all(math.isfinite(v) for m in metrics for v in m.values())
    assert not list(logdir.glob('videos/*.gif'))  # no image, no video, no error
    policy = dreamer.load(logdir)
    total, _, frames, _ = evaluate.run_episode(policy, policy.make_env(seed=3), record=True)
    assert math.isfinite(total) and frames == []
    assert evaluate.main(['--logdir', str(logdir), '--episodes', '1', '--video']) == 2
    assert 'no image: run without --video' in capsys.readouterr().err


def test_both_trains_on_images_and_vectors_and_refuses_a_resume_with_other_observations(tmp_path, capsys):
    logdir, env = tmp_path / 'run', ['--env', fake('FakeDict-v0'), '--env.obs', 'both']
    assert train_run(logdir, *env, '--steps', '1500') == 0
    names = set().union(*read_metrics(logdir / 'metrics.jsonl'))
    assert {'model/pos_loss', 'model/image_loss'} <= names
    assert {p.name.rsplit('_', 1)[0] for p in logdir.glob('videos/*.gif')} >= {'eval_policy', 'train_openloop'}
    before = sorted((p.name, p.stat().st_size) for p in logdir.rglob('*'))
    capsys.readouterr()
    assert train_run(logdir, '--env', fake('FakeDict-v0'), '--env.obs', 'vector', '--steps', '2000') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error:') and "env.obs (saved 'both', now 'vector')" in err[0]
    assert sorted((p.name, p.stat().st_size) for p in logdir.rglob('*')) == before


def test_a_nan_observation_ends_the_run_with_one_line_naming_the_key(tmp_path, capsys):
    code = train_run(tmp_path / 'run', '--env', fake('FakeNaNObs-v0'), '--env.obs', 'vector', '--steps', '1500')
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith('error:') and "observation 'pos' holds a NaN" in err[-1]

"""Plan2Explore: the stacked ensemble, its disagreement, the intrinsic reward's independence
from environment rewards, the few-shot switch, and the command-line smoke run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from explore.agent import Plan2Explore
from tests.support import A, placed, random_batch, run_train, tiny_config
from tests.tracing import count_traces
from explore.ensemble import Ensemble, disagreement

def tiny_agent(**extra) -> Plan2Explore:
    return Plan2Explore(tiny_config("plan2explore", **extra), A, False)


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def imagined_sequence(agent: Plan2Explore, seed: int, batch: int, horizon: int) -> dict:
    """A random imagined sequence: feat [batch, horizon + 1, F], action [batch, horizon, A]."""
    rng = np.random.default_rng(seed)
    return {"feat": jnp.asarray(rng.normal(size=(batch, horizon + 1, agent.wm.feat_size)), jnp.float32),
            "action": jnp.asarray(rng.uniform(-1, 1, (batch, horizon, A)), jnp.float32)}


# ----------------------------------------------------------------------------- the ensemble

def test_disagreement_hand_computed():
    # Two members, two target dims: variances ((1-2)^2 + (3-2)^2)/2 = 1 and ((2-4)^2 + (6-4)^2)/2 = 4.
    preds = jnp.array([[[1.0, 2.0]], [[3.0, 6.0]]])  # [K=2, N=1, D=2]
    np.testing.assert_allclose(disagreement(preds), [2.5])
    # Three members on one dim: values 0, 1, 5 have mean 2 and variance (4 + 1 + 9) / 3.
    np.testing.assert_allclose(disagreement(jnp.array([[[0.0]], [[1.0]], [[5.0]]])), [14 / 3], rtol=1e-6)


def test_disagreement_zero_when_members_agree():
    same = jnp.broadcast_to(jnp.array([[0.3, -1.2, 4.0]]), (5, 1, 3))
    np.testing.assert_array_equal(disagreement(same), [0.0])
    # Through the network too: five copies of one member disagree nowhere.
    ens = Ensemble(5, 2, 16, 3)
    params = ens.init(jax.random.PRNGKey(0), 4, 2).params
    copies = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), params)
    inputs = jax.random.normal(jax.random.PRNGKey(1), (7, 4))
    actions = jax.random.normal(jax.random.PRNGKey(2), (7, 2))
    np.testing.assert_allclose(disagreement(ens.predict(copies, inputs, actions)), 0.0, atol=1e-12)
    assert float(disagreement(ens.predict(params, inputs, actions)).min()) > 0  # distinct members do


def test_ensemble_is_one_stacked_pytree():
    ens = Ensemble(5, 2, 16, 3)
    state = ens.init(jax.random.PRNGKey(0), 4, None)
    leaves = jax.tree.leaves(state.params)
    assert isinstance(state.params, dict) and all(leaf.shape[0] == 5 for leaf in leaves)
    assert all(leaf.shape[0] == 5 for leaf in jax.tree.leaves(state.opt) if leaf.ndim > 0)
    kernels = state.params["params"]["linear0"]["kernel"]  # [K, I, U]
    assert not np.allclose(kernels[0], kernels[1])  # independent initialisations
    # The vmapped prediction is each member applied on its own.
    inputs = jax.random.normal(jax.random.PRNGKey(1), (6, 4))
    preds = ens.predict(state.params, inputs, None)  # [K, N, D]
    assert preds.shape == (5, 6, 3)
    for k in range(5):
        member = jax.tree.map(lambda x: x[k], state.params)
        np.testing.assert_allclose(preds[k], ens.net.apply(member, inputs, None), rtol=1e-5, atol=1e-6)


def test_predictor_sees_the_action_in_every_layer():
    """As Plan2Explore's code: hidden layers and the output layer read [x, action]."""
    from explore.ensemble import Predictor
    net = Predictor(layers=2, units=8, out=3)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 5)), jnp.zeros((1, 2)))["params"]
    shapes = [params[name]["kernel"].shape for name in ("linear0", "linear1", "out")]
    assert shapes == [(7, 8), (10, 8), (10, 3)]


def test_bootstrap_members_see_their_own_resample():
    """Each member trains on B sequences drawn with replacement from the batch: members see
    different data, and every sequence is drawn once per member in expectation."""
    from explore.ensemble import bootstrap_indices
    ens = Ensemble(3, 1, 8, 2)
    data = {"state": jnp.arange(4.0)[:, None, None] * jnp.ones((4, 2, 1)), "action": None,
            "target": jnp.zeros((4, 2, 2)), "mask": jnp.ones((4, 2))}
    key = jax.random.PRNGKey(0)
    member_data = ens.member_data(data, key)
    index = bootstrap_indices(key, 3, 4)  # [K, B]
    assert member_data["state"].shape == (3, 4, 2, 1) and member_data["action"] is None
    np.testing.assert_array_equal(member_data["state"][:, :, 0, 0], index)  # member k, row b: data[index[k, b]]
    assert len({tuple(row) for row in np.asarray(index)}) == 3  # the members' resamples differ
    counts = jnp.stack([jnp.bincount(bootstrap_indices(k, 3, 4).ravel(), length=4)
                        for k in jax.random.split(key, 2000)])  # [draws, B]
    np.testing.assert_allclose(counts.mean(0) / 3, 1.0, atol=0.05)  # the same batch in expectation
    shared = Ensemble(3, 1, 8, 2, bootstrap=False).member_data(data, key)
    assert all(np.array_equal(shared["state"][k], data["state"]) for k in range(3))


def test_ensemble_loss_is_the_per_dimension_mean_squared_error():
    ens = Ensemble(2, 1, 4, 2, bootstrap=False)
    params = ens.init(jax.random.PRNGKey(0), 3, None).params
    params = jax.tree.map(jnp.zeros_like, params)  # every member predicts 0
    data = {"state": jnp.ones((2, 1, 1, 3)), "action": None, "target": jnp.array([1.0, 3.0]) * jnp.ones((2, 1, 1, 2)),
            "mask": jnp.ones((2, 1, 1))}
    total, per_member = ens.loss(params, data)
    np.testing.assert_allclose(per_member, [5.0, 5.0])  # (1^2 + 3^2) / 2 dims
    assert float(total) == pytest.approx(10.0)


def test_ensemble_update_fits_and_ignores_masked_steps():
    ens = Ensemble(3, 1, 32, 2, lr=1e-2)
    state = ens.init(jax.random.PRNGKey(0), 4, None)
    inputs = jax.random.normal(jax.random.PRNGKey(1), (16, 1, 4))  # [B, T, S]
    targets = jnp.concatenate([inputs[..., :1] - inputs[..., 1:2], 2 * inputs[..., 2:3]], -1)
    mask = jnp.ones((16, 1)).at[-4:].set(0.0)
    data = {"state": inputs, "action": None, "target": targets, "mask": mask}
    # A masked step's target does not change the update.
    key = jax.random.PRNGKey(2)
    s1, _ = ens.update(state, data, key)
    s2, _ = ens.update(state, {**data, "target": targets.at[-4:].set(100.0)}, key)
    assert leaves_equal(s1.params, s2.params)
    update = jax.jit(ens.update)
    losses = []
    for k in jax.random.split(key, 150):
        state, metrics = update(state, data, k)
        losses.append(float(metrics["ensemble_loss"]))
    assert losses[-1] < 0.2 * losses[0]


# ----------------------------------------------------------------------------- the agent

@pytest.fixture(scope="module")
def traced_agent():
    with count_traces(Plan2Explore, "update", "act") as traces:
        agent = tiny_agent()
        placed(agent)  # its jits wrap the counting methods
    return agent, traces


@pytest.fixture(scope="module")
def agent_and_state(traced_agent):
    agent, _ = traced_agent
    return agent, placed(agent).init(jax.random.PRNGKey(0))


def test_train_step_metrics_and_single_trace(agent_and_state, traced_agent):
    agent, state = agent_and_state
    state = jax.tree.map(jnp.copy, state)  # `update` donates its input
    for seed in range(2):
        state, metrics, _ = placed(agent).update(state, random_batch(seed))
    assert traced_agent[1]["update"] == 1
    for key in ("explore/intrinsic_reward", "explore/ensemble_loss", "explore/disagreement",
                "explore/actor_loss", "explore/critic_loss", "behavior/actor_loss", "behavior/critic_loss",
                "model/loss"):
        assert key in metrics and np.isfinite(float(metrics[key])), key
    # The exploration actor optimises 10,000 x the imagined disagreement.
    np.testing.assert_allclose(metrics["explore/intrinsic_reward"],
                               1e4 * metrics["explore/imagined_disagreement"], rtol=1e-4)


@pytest.mark.parametrize("reward_grad", [False, True])
def test_exploration_update_ignores_environment_rewards(reward_grad, agent_and_state):
    """Two train steps on two batches that differ only in their rewards (random vs constant):
    the second step's actor-critics imagine with the world model the first step trained."""
    agent, state = agent_and_state  # the plan2explore preset: model.reward_grad false
    assert not agent.config.model.reward_grad
    if reward_grad:
        agent = tiny_agent(**{"model.reward_grad": True})
        state = placed(agent).init(jax.random.PRNGKey(0))
    def two_steps(batch):
        once, _, _ = placed(agent).update(jax.tree.map(jnp.copy, state), batch)
        return placed(agent).update(once, batch)[0]

    new = [two_steps(random_batch(reward=r)) for r in (None, 1.0)]
    a, b = (s.agent for s in new)
    assert not leaves_equal(a.task.actor, b.task.actor)  # the rewards did matter somewhere
    assert not leaves_equal(new[0].wm["reward"], new[1].wm["reward"])
    unchanged = (a.explore, a.ensemble, a.norm_ema), (b.explore, b.ensemble, b.norm_ema)
    if reward_grad:  # Dreamer's default: the reward loss shapes the latent space, so it leaks
        assert not leaves_equal(*unchanged)
    else:  # the plan2explore preset: rewards train the reward head only
        assert leaves_equal(*unchanged)
        rest = [{k: v for k, v in s.wm.items() if k != "reward"} for s in new]
        assert leaves_equal(*rest)


def test_intrinsic_reward_ignores_rewards_and_grows_with_disagreement(agent_and_state):
    agent, state = agent_and_state
    seq = imagined_sequence(agent, seed=0, batch=3, horizon=4)
    params = state.agent.ensemble.params
    reward = agent.intrinsic_reward(params, jnp.float32(1e-4), seq)  # [N, H]
    assert reward.shape == (3, 4)
    deter = seq["feat"][:, 1:, :agent.wm.cfg.deter]  # the arrival state's GRU part, with the action taken
    np.testing.assert_allclose(reward, 1e4 * disagreement(agent.ensemble.predict(params, deter, seq["action"])),
                               rtol=1e-5)
    agree = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), params)
    np.testing.assert_allclose(agent.intrinsic_reward(agree, jnp.float32(1e-4), seq), 0.0, atol=1e-9)


def test_intrinsic_reward_passes_no_gradient_to_the_imagined_sequence(agent_and_state):
    """As the reference's one-step models (stop-gradient on state and action): the actor
    learns the disagreement only through the exploration critic."""
    agent, state = agent_and_state
    seq = imagined_sequence(agent, seed=1, batch=2, horizon=3)
    total = lambda s: jnp.sum(agent.intrinsic_reward(state.agent.ensemble.params, jnp.float32(1e-4), s))  # noqa: E731
    assert float(total(seq)) > 0
    grads = jax.grad(total)(seq)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads))


def test_exploration_reward_comes_from_the_ensemble_before_its_step():
    """The step's exploration reward does not depend on how far the ensemble's own optimiser
    moves it in that step, while the stepped ensembles do disagree differently."""
    runs = {}
    for lr in (1e-9, 1e-2):
        agent = tiny_agent(**{"explore.lr": lr})
        state, metrics, _ = placed(agent).update(placed(agent).init(jax.random.PRNGKey(0)), random_batch(seed=3))
        runs[lr] = agent, state, metrics
    (agent, slow, m_slow), (_, fast, m_fast) = runs.values()
    seq = imagined_sequence(agent, seed=2, batch=2, horizon=3)
    stepped = [agent.intrinsic_reward(s.agent.ensemble.params, jnp.float32(1e-4), seq) for s in (slow, fast)]
    assert float(jnp.max(jnp.abs(stepped[0] - stepped[1]))) > 1e-3 * float(jnp.max(stepped[0]))  # the test can tell
    assert float(m_fast["explore/intrinsic_reward"]) == pytest.approx(float(m_slow["explore/intrinsic_reward"]), rel=1e-6)


def test_running_normaliser_is_debiased_mean():
    agent = tiny_agent(**{"explore.normalise": "running", "explore.momentum": 0.9})
    state = placed(agent).init(jax.random.PRNGKey(0))
    behavior = state.agent
    assert float(agent.normaliser(behavior)) == pytest.approx(1.0)  # before any update
    # Two updates with raw means 2 and 4: EMA 0.1 * 2 = 0.2, then 0.9 * 0.2 + 0.1 * 4 = 0.58;
    # debiased by 1 - 0.9^2 = 0.19: 0.58 / 0.19.
    behavior = behavior._replace(norm_ema=jnp.float32(0.58), norm_count=jnp.float32(2))
    assert float(agent.normaliser(behavior)) == pytest.approx(0.58 / 0.19, rel=1e-5)
    state, metrics, _ = placed(agent).update(state, random_batch())
    raw = float(metrics["explore/imagined_disagreement"])
    assert float(state.agent.norm_count) == 1
    assert float(agent.normaliser(state.agent)) == pytest.approx(raw, rel=1e-4)


def test_few_shot_switch_and_policy_modes():
    # Near-deterministic actors (tiny std, no noise) so that actions show which actor acted.
    with count_traces(Plan2Explore, "act") as traces:
        agent = tiny_agent(**{"explore.mode": "few_shot", "explore.steps": 1000, "behavior.init_std": 1e-6,
                              "behavior.min_std": 1e-6, "behavior.expl_noise": 0.0})
        placed(agent)  # its jits wrap the counting methods
    state = placed(agent).init(jax.random.PRNGKey(0))
    pstate = agent.initial_policy_state(2)
    obs = {"image": jnp.zeros((2, 64, 64, 3), jnp.uint8), "is_first": jnp.ones(2, bool)}
    key = jax.random.PRNGKey(3)

    _, k_act = jax.random.split(key)  # act's split: filter, then action

    def act(state, mode):
        action, new = placed(agent).policy(state, obs, pstate, key, mode)
        feat = agent.wm.rssm.get_feat(new["latent"])
        return action, feat

    assert int(agent.on_env_steps(state, 999).agent.phase) == 0
    for steps, actor in ((999, "explore"), (1000, "task"), (5000, "task")):
        state = agent.on_env_steps(state, steps)
        action, feat = act(state, "train")
        behavior = state.agent
        expected = (agent.task_ac if actor == "task" else agent.explore_ac).mode(getattr(behavior, actor).actor, feat,
                                                                                 k_act)
        np.testing.assert_allclose(action, expected, atol=1e-3)
        other = (agent.explore_ac if actor == "task" else agent.task_ac).mode(
            (behavior.explore if actor == "task" else behavior.task).actor, feat, k_act)
        assert not np.allclose(action, other, atol=1e-3)
    action, feat = act(state, "eval")  # evaluation: always the task actor's mode
    np.testing.assert_allclose(action, agent.task_ac.mode(state.agent.task.actor, feat, k_act), rtol=1e-5, atol=1e-6)
    assert traces["act"] == 2  # one trace per mode: the phase is data, not a retrace


def test_zero_shot_never_switches(agent_and_state):
    agent, state = agent_and_state
    assert int(agent.on_env_steps(state, 10**9).agent.phase) == 0


# ----------------------------------------------------------------------------- the command line

@pytest.mark.e2e
def test_plan2explore_debug_run(tmp_path):
    """The command on MuJoCo, end to end (about two minutes on 2 cores)."""
    from tests.test_train_smoke import check_logdir
    logdir = tmp_path / "run"
    result = run_train("--env", "dmc_walker_walk", "--agent", "plan2explore", "--configs", "debug",
                       "--steps", "3000", "--logdir", str(logdir))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = check_logdir(logdir, 3000, 1000)
    names = set().union(*metrics)
    for name in ("explore/intrinsic_reward", "explore/ensemble_loss", "explore/disagreement",
                 "explore/actor_loss", "behavior/actor_loss", "eval/return"):
        assert name in names, f"{name} missing from metrics.jsonl"


# ----------------------------------------------------------------------------- the coverage benchmark

def test_coverage_cells_hand_computed():
    from benchmarks.exploration import coverage, occupied_cells, wrap
    np.testing.assert_allclose(wrap(np.array([np.pi + 0.1, -np.pi - 0.1, 0.5])), [-np.pi + 0.1, np.pi - 0.1, 0.5])
    values = np.array([[0.0, 0.0], [0.1, 0.1], [0.9, 0.0], [1.0, 1.0]])
    # 2x2 grid over [0, 1]^2: cells (0,0), (0,0), (1,0), (1,1) (the top edge falls in the last cell).
    assert occupied_cells(values, np.zeros(2), np.ones(2), 2) == 3
    # Cartpole-like layout: a slide (linear) and an unlimited hinge (wrapped angle).
    narrow = np.array([[0.0, np.pi - 0.01, 0.0, 0.0], [0.1, -np.pi + 0.01, 0.0, 0.0]])  # both hang down
    wide = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, np.pi / 2, 0.0, 0.0], [0.5, 3 * np.pi, 0.0, 0.0]])
    out = coverage({"narrow": narrow, "wide": wide}, nq=2, angles=[False, True], bins=4, full_bins=2)
    assert out["narrow"]["position_cells"] == 2  # x cells 0, 0; angle cells 3 and 0
    assert out["wide"]["position_cells"] == 3
    assert out["narrow"]["circular_variance_angles"][0] == pytest.approx(0.0, abs=1e-4)


def test_state_recorder_hides_rewards():
    from benchmarks.exploration import StateRecorder

    class FakeEnvs:
        def physics_state(self):
            return np.ones((1, 4))

    recorder = StateRecorder(hide_reward=True)
    episodes = [{"reward": np.array([0.0, 2.0, 3.0])}]
    recorder(FakeEnvs(), episodes)  # as the trainer calls it after a collection step
    assert recorder.returns == [5.0]
    np.testing.assert_array_equal(episodes[0]["reward"], 0.0)  # what the replay receives
    assert np.concatenate(recorder.states).shape == (1, 4)

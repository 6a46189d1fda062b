"""Golden data from the official Plan2Explore code's disagreement reward, for
tests/test_parity_plan2explore.py.

    python tests/parity/generate_plan2explore.py --official PATH [--out tests/data/parity/plan2explore_disagreement.npz]

PATH is a git checkout of ramanans1/plan2explore at the pinned commit (`OFFICIAL_COMMIT`); this
script runs where TensorFlow 2.2 runs (the Dreamer V1 generator's environment: Python 3.8,
tensorflow-cpu 2.2.3, tensorflow-probability 0.10.1, numpy 1.18.5, ruamel.yaml) and runs the official
TensorFlow 1 graph code through `tensorflow.compat.v1`. It loads two files of it, the one-step
model (`plan2explore/networks/one_step_model.py`) and the training utilities
(`plan2explore/training/utility.py`), whose package imports (control, the trainer) are stubbed:
the package's `__init__` imports the whole training stack.

It builds the official ensemble as its `define_model` does (`tf.make_template` of
`one_step_model` per member, `ensemble_model_type` 1: the members read the recurrent state;
`model_width_factor` 1: as many units as targets), gives every weight a random value, and runs
the official `compute_intrinsic_reward` (the disagreement objective, no reward normalisation,
`intrinsic_reward_scale` 10,000) on random imagined states and actions. Written: every member's
weights (`param_<member>/<layer>/<kernel|bias>`), the states (`state`, [N, H, S]), the actions
(`action`, [N, H, A]), each member's prediction (`prediction`, [K, N, H, D]) and the reward
(`reward`, [N, H]).

Nothing is written unless every part ran: a missing checkout, another commit or a missing
dependency is one `error:` line and exit status 2.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

try:
    from tests.parity.common import GeneratorError, load_module, pinned_commit, run
except ImportError:  # run as a script: its folder is on the path
    from common import GeneratorError, load_module, pinned_commit, run

OFFICIAL_COMMIT = "f8ba930bf7d1c6b2a6aa7685d26e5f8335c129da"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "parity" / "plan2explore_disagreement.npz"
SEED = 0
MEMBERS, STATE, ACTIONS, TARGETS, BATCH, HORIZON = 5, 6, 2, 4, 3, 4
CONFIG = dict(curious_run=True, vanilla_curious_run=False, combination_run=False, use_max_objective=False,
              ensemble_model_type=1, num_models=MEMBERS, normalize_reward=False, intrinsic_reward_scale=10000)


def check_checkout(path: Path) -> str:
    for name in ("networks/one_step_model.py", "training/utility.py"):
        if not (path / "plan2explore" / name).is_file():
            raise GeneratorError(f"'{path}' is not a checkout of ramanans1/plan2explore (no plan2explore/{name})")
    return pinned_commit(path, "ramanans1/plan2explore", OFFICIAL_COMMIT)


def import_official(path: Path) -> dict:
    try:
        import ruamel.yaml  # noqa: F401  (utility.py imports it)
        import tensorflow as tf
        import tensorflow_probability  # noqa: F401
    except ImportError as err:
        raise GeneratorError(f"a dependency of the official code is missing ({err}): run this with Python 3.8, "
                             "tensorflow-cpu 2.2.3, tensorflow-probability 0.10.1, numpy 1.18.5, "
                             "ruamel.yaml") from None
    tf.compat.v1.disable_eager_execution()
    root = path / "plan2explore"
    stubs = {name: types.ModuleType(name) for name in (
        "plan2explore", "plan2explore.tools", "plan2explore.control", "plan2explore.training",
        "plan2explore.training.trainer")}
    sys.modules.update(stubs)
    stubs["plan2explore"].tools, stubs["plan2explore"].control = stubs["plan2explore.tools"], stubs["plan2explore.control"]
    stubs["plan2explore"].training = stubs["plan2explore.training"]
    stubs["plan2explore.training"].trainer = stubs["plan2explore.training.trainer"]
    stubs["plan2explore.tools"].shape = load_module("plan2explore.tools.shape", root / "tools" / "shape.py").shape
    one_step = load_module("plan2explore.networks.one_step_model", root / "networks" / "one_step_model.py")
    utility = load_module("plan2explore.training.utility", root / "training" / "utility.py")
    for module in (one_step, utility):
        module.tf = tf.compat.v1  # TensorFlow 1 names (tf.layers.dense, tf.nn.moments)
    return dict(tf=tf.compat.v1, one_step_model=one_step.one_step_model, utility=utility)


def generate(o: dict) -> dict:
    tf, utility = o["tf"], o["utility"]
    rng = np.random.default_rng(SEED)
    states = rng.normal(size=(BATCH, HORIZON, STATE)).astype(np.float32)
    actions = rng.uniform(-1, 1, (BATCH, HORIZON, ACTIONS)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        members = []
        for member in range(MEMBERS):  # as define_model builds them
            with tf.variable_scope(f"one_step_model_{member}"):
                members.append(tf.make_template(f"one_step_model_{member}", o["one_step_model"],
                                                create_scope_now_=True, max_objective=False,
                                                data_shape=[TARGETS], model_width_factor=1))
        model = types.SimpleNamespace(one_step_models=members,
                                      cell=types.SimpleNamespace(features_from_state=lambda s: s["rnn_state"]))
        state, action = tf.constant(states), tf.constant(actions)
        reward = utility.compute_intrinsic_reward(types.SimpleNamespace(**CONFIG), model, {"rnn_state": state},
                                                  action, features=None)
        predictions = tf.stack([member(state, action).mean() for member in members])
        variables = tf.trainable_variables()
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            for variable in variables:  # biases too: the initialiser leaves them at zero
                variable.load(rng.normal(size=variable.shape.as_list()).astype(np.float32) * 0.5, session)
            values = session.run(variables)
            prediction, reward = session.run([predictions, reward])
    data = {f"param_{name_of(v)}": value for v, value in zip(variables, values)}
    data.update(state=states, action=actions, prediction=prediction, reward=reward)
    return data


def name_of(variable) -> str:
    """'one_step_model_3/one_step_model_3/dense_1/kernel:0' -> '3/dense_1/kernel'."""
    scope, *_, layer, weight = variable.name.split(":")[0].split("/")
    return f"{scope.rsplit('_', 1)[1]}/{layer}/{weight}"


def main(argv: list[str] | None = None) -> int:
    return run(argv, "generate_plan2explore.py", "ramanans1/plan2explore", DEFAULT_OUT, check_checkout,
               import_official, generate)


if __name__ == "__main__":
    sys.exit(main())

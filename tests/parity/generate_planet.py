"""Golden data from the official PlaNet code's planner, for tests/test_parity_planet.py.

    python tests/parity/generate_planet.py --official PATH [--out tests/data/parity/planet_cem.npz]

PATH is a git checkout of google-research/planet at the pinned commit (`OFFICIAL_COMMIT`); this
script runs where TensorFlow 2.2 runs (the Dreamer V1 generator's environment: Python 3.8,
tensorflow-cpu 2.2.3, numpy 1.18.5) and runs the official `cross_entropy_method`
(`planet/control/planning.py`, a TensorFlow 1 graph) through `tensorflow.compat.v1`. Only that
file and the two helpers it uses (`planet/tools/shape.py`, `nested.py`) are loaded: the package's
`__init__` imports the whole training stack.

The planner is given a small known model instead of a learned one: a recurrent cell
s' = tanh(s W + a U + b) (4 state units, 2-d actions) and the objective sum_t s_t . w, the shape
of PlaNet's (the sum of the predicted rewards along each candidate's rollout). Its proposals come
from a fixed standard-normal array (`noise`, [candidates, horizon, actions]) that replaces
`tf.random_normal`, the same at every iteration (the planner's loop is traced once). Written:
the cell and objective (`cell_*`), the noise, and the mean the planner returns after 1 and
after 3 iterations (`mean_1`, `mean_3`) of 64 candidates, the 8 best refitted, horizon 5.

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

OFFICIAL_COMMIT = "c04226b6db136f5269625378cd6a0aa875a92842"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "parity" / "planet_cem.npz"
SEED = 0
STATE, ACTIONS, HORIZON, CANDIDATES, TOP_K = 4, 2, 5, 64, 8
ITERATIONS = (1, 3)


def check_checkout(path: Path) -> str:
    if not (path / "planet" / "control" / "planning.py").is_file():
        raise GeneratorError(f"'{path}' is not a checkout of google-research/planet (no planet/control/planning.py)")
    return pinned_commit(path, "google-research/planet", OFFICIAL_COMMIT)


def import_official(path: Path) -> dict:
    try:
        import tensorflow as tf
    except ImportError as err:
        raise GeneratorError(f"TensorFlow is missing ({err}): run this with Python 3.8 and "
                             "tensorflow-cpu 2.2.3, numpy 1.18.5") from None
    tf.compat.v1.disable_eager_execution()
    package = types.ModuleType("planet")  # only what planning.py imports of it
    package.tools = types.ModuleType("planet.tools")
    package.tools.shape = load_module("planet.tools.shape", path / "planet" / "tools" / "shape.py").shape
    package.tools.nested = load_module("planet.tools.nested", path / "planet" / "tools" / "nested.py")
    sys.modules["planet"], sys.modules["planet.tools"] = package, package.tools
    planning = load_module("planet.control.planning", path / "planet" / "control" / "planning.py")
    planning.tf = tf.compat.v1  # TensorFlow 1 names (tf.random_normal, tf.nn.dynamic_rnn)
    return dict(tf=tf.compat.v1, planning=planning)


def known_cell(tf, weights: dict):
    """The planner's model: s' = tanh(s W + a U + b), emitting (s', s') so that the planner's
    `(_, state), _ = dynamic_rnn(...)` sees the state sequence."""

    class Cell(tf.nn.rnn_cell.RNNCell):
        state_size = STATE
        output_size = (STATE, STATE)

        def call(self, inputs, state):
            _, action, _ = inputs  # (observation, action, use_obs), as PlaNet's cell gets them
            new = tf.tanh(tf.matmul(state, weights["W"]) + tf.matmul(action, weights["U"]) + weights["b"])
            return (new, new), new

    return Cell()


def generate(o: dict) -> dict:
    tf, planning = o["tf"], o["planning"]
    rng = np.random.default_rng(SEED)
    weights = {"W": rng.normal(size=(STATE, STATE)) * 0.8, "U": rng.normal(size=(ACTIONS, STATE)),
               "b": rng.normal(size=STATE) * 0.3, "w": rng.normal(size=STATE), "s0": rng.normal(size=(1, STATE))}
    weights = {k: v.astype(np.float32) for k, v in weights.items()}
    noise = rng.normal(size=(CANDIDATES, HORIZON, ACTIONS)).astype(np.float32)
    data = {f"cell_{k}": v for k, v in weights.items()}
    data["noise"] = noise
    for iterations in ITERATIONS:
        graph = tf.Graph()
        with graph.as_default():
            constants = {k: tf.constant(v) for k, v in weights.items()}

            def fixed_normal(shape, *args, **kwargs):
                assert tuple(shape) == (1, *noise.shape), shape
                return tf.constant(noise[None])

            planning.tf.random_normal = fixed_normal
            objective = lambda states: tf.reduce_sum(tf.tensordot(states, constants["w"], 1), 1)  # noqa: E731
            mean = planning.cross_entropy_method(
                known_cell(tf, constants), objective, constants["s0"], obs_shape=(1,), action_shape=(ACTIONS,),
                horizon=HORIZON, graph=None, amount=CANDIDATES, topk=TOP_K, iterations=iterations)
            with tf.Session(graph=graph) as session:
                data[f"mean_{iterations}"] = session.run(mean)[0]  # [horizon, actions]
    return data


def main(argv: list[str] | None = None) -> int:
    return run(argv, "generate_planet.py", "google-research/planet", DEFAULT_OUT, check_checkout,
               import_official, generate)


if __name__ == "__main__":
    sys.exit(main())

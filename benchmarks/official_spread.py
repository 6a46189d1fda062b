"""How much the official DreamerV3 policy depends on the state: the spread of its central action
over the states of its own replay, the quantity this library logs as `behavior/action_spread`.

    python -m benchmarks.official_spread --official PATH --logdir LOGDIR

PATH is a checkout of danijar/dreamerv3 and LOGDIR a run the official code wrote (its
`config.yaml`, `ckpt/` and `replay/`); the script runs in the official code's own environment
and imports nothing of this library. It loads the latest checkpoint, filters every replayed
episode chunk in order through the official policy (the recurrent state carried from step to
step, the replayed action fed back as the previous action) and takes the policy's central action
(`pred()` of its distribution, the mean of the bounded normal) at each state. It prints one JSON
line: the number of states, the standard deviation over them of the central action (mean over
action dimensions; 0 means the same action everywhere), per dimension, and the mean absolute
central action. This library's metric takes the same standard deviation over the start states of
one training batch (16 x 64 replayed states) instead of the whole replay.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def load_agent(official: Path, logdir: Path):
    """The official agent of the run in `logdir`, its checkpoint loaded, acting with its central
    action instead of a sample."""
    sys.path.insert(0, str(official))
    import elements
    import jax

    import dreamerv3.agent
    from dreamerv3 import main

    dreamerv3.agent.sample = lambda dists: jax.tree.map(lambda dist: dist.pred(), dists)
    config = elements.Config.load(logdir / "config.yaml")
    config = config.update(logdir=str(logdir), jax={**config.jax, "platform": "cpu"})
    agent = main.make_agent(config)
    checkpoint = elements.Checkpoint(elements.Path(logdir) / "ckpt")
    checkpoint.agent = agent
    checkpoint.load(keys=["agent"])
    return agent, jax


def central_actions(agent, jax, chunks: list[Path]) -> np.ndarray:
    """(states, action_dim): the policy's central action at every replayed state, in order."""
    carry, actions = agent.init_policy(1), []
    for path in chunks:
        with np.load(path, allow_pickle=False) as chunk:
            data = {key: chunk[key] for key in chunk.files}
        for t in range(len(data["action"])):
            obs = {key: data[key][t:t + 1] for key in agent.obs_space}
            carry, act, _ = agent.policy(carry, obs, mode="eval")
            actions.append(np.asarray(act["action"][0]))
            taken = jax.device_put(data["action"][t], carry[3]["action"][0].sharding)
            carry = (*carry[:3], {"action": [taken]})
    return np.stack(actions)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one `error:` line and status 2 (this library's `dreamer.cli` is not imported:
    the script runs in the official code's environment)."""

    def error(self, message: str):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.official_spread", description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout of danijar/dreamerv3")
    parser.add_argument("--logdir", type=Path, required=True, help="a run of the official code")
    args = parser.parse_args(argv)
    chunks = sorted((args.logdir / "replay").glob("*.npz"))  # named by creation time
    if not (args.official / "dreamerv3" / "agent.py").is_file():
        print(f"error: '{args.official}' is not a checkout of danijar/dreamerv3", file=sys.stderr)
        return 2
    if not chunks or not (args.logdir / "ckpt" / "latest").is_file():
        print(f"error: '{args.logdir}' holds no official run (replay/*.npz and ckpt/latest)", file=sys.stderr)
        return 2
    agent, jax = load_agent(args.official.resolve(), args.logdir.resolve())
    actions = central_actions(agent, jax, chunks)
    spread = actions.std(0)
    print(json.dumps({"states": len(actions), "action_spread": float(spread.mean()),
                      "per_dimension": spread.round(5).tolist(),
                      "mean_abs_action": float(np.abs(actions).mean())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

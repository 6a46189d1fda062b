"""Evaluate a trained agent from its logdir, on the command line or from Python.

    python -m dreamer.evaluate --logdir DIR [--episodes N] [--video] [--seed N]

loads the newest checkpoint, runs N episodes with the evaluation (mode) policy and prints
each episode's return, then, as the last line, `return MEAN ± STD over N episodes`.
`--video` writes one GIF per episode into DIR/eval_videos/. Nothing else in DIR changes.

The same in a plain loop (`dreamer.load` is this module's `load`):

    policy = dreamer.load("logdir/dmc_walker_walk/dreamer/0")
    env = policy.make_env(seed=123)          # or any env with the run's observations
    obs, state = env.reset(), None
    while not obs["is_last"]:
        action, state = policy(obs, state)   # state None: a new episode
        obs = env.step(action)
"""

from __future__ import annotations

if __name__ == "__main__":  # before JAX starts: glibc reads allocator tunables at exec
    from dreamer.runtime import reexec_with_huge_pages

    reexec_with_huge_pages()

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dreamer import checkpoint
from dreamer.collect import env_factory
from dreamer.device import DeviceAgent
from dreamer.config import MAX_SEED, Config
from dreamer.envs import Env
from dreamer.envs.base import IMAGE_KEY, space_from_key
from dreamer.cli import ArgumentParser, run_command
from dreamer.errors import CheckpointError, UserError
from dreamer.logger import encode_gif, to_uint8_frames
from dreamer.registry import agent_class
from dreamer.runlock import live_holder

VIDEO_DIR = "eval_videos"


class Policy:
    """A trained agent's evaluation policy for one environment, one observation at a time.

    `policy(observation, state) -> (action, state)`: `observation` is an environment's
    observation dict (its inputs, e.g. image uint8 [H, W, 3], and is_first), or just the
    image where the image is the only input; `state` is what the
    previous call returned, or None at the start of an episode. The action is float32 [A] in
    [-1, 1] (one-hot for discrete actions). One call of the agent's jitted policy per step.
    """

    def __init__(self, device: DeviceAgent, train_state: Any, config: Config, step: int, seed: int = 0):
        self.device, self.agent, self.config, self.step = device, device.agent, config, step
        self.train_state = train_state
        self._key = jax.random.PRNGKey(seed)
        self._starts = 0

    def initial_state(self) -> dict:
        """A fresh state: the first is seeded with `seed` (so one episode reproduces the
        training loop's evaluation, see `load`); later ones get their own keys. Passing the
        last state of an episode into the next one (its is_first resets the latent) continues
        the key sequence, as the training loop does."""
        key = self._key if self._starts == 0 else jax.random.fold_in(self._key, self._starts)
        self._starts += 1
        return {"agent": self.agent.initial_policy_state(1), "key": key}

    def __call__(self, observation: dict | np.ndarray, state: dict | None = None) -> tuple[np.ndarray, dict]:
        inputs = self._inputs(observation, state is None)
        if state is None:
            state = self.initial_state()
        # The same calls as the training loop's evaluation (`AgentActor`): the agent's jitted
        # policy on a batch of one, a key split per step.
        key, sub = jax.random.split(state["key"])
        obs = {name: value[None] for name, value in inputs.items()}
        action, agent_state = self.device.policy(self.train_state, obs, state["agent"], sub, "eval")
        return np.asarray(action)[0], {"agent": agent_state, "key": key}

    def _inputs(self, observation: dict | np.ndarray, new_episode: bool) -> dict[str, np.ndarray]:
        """The policy's inputs of one observation, checked against the run's observations."""
        space = self.agent.obs_space
        if not isinstance(observation, dict):
            if list(space) != [IMAGE_KEY]:
                raise ValueError(f"this agent reads the observations {sorted(space)}: pass the "
                                 "observation dict")
            observation = {IMAGE_KEY: observation}
        inputs = {}
        for key, (shape, dtype) in space.items():
            if key not in observation:
                raise ValueError(f"the observation lacks {key!r}: this agent reads {sorted(space)}")
            value = np.asarray(observation[key])
            if value.shape != tuple(shape) or (value.dtype != dtype and dtype == np.uint8):
                raise ValueError(f"expected one observation {key} {np.dtype(dtype)} {list(shape)}, "
                                 f"got {value.dtype} {list(value.shape)}")
            inputs[key] = value.astype(dtype)
        inputs["is_first"] = np.asarray(new_episode or bool(observation.get("is_first", False)))
        return inputs

    def make_env(self, seed: int | None = None) -> Env:
        """A new environment with the run's settings (name, action repeat, size, ...)."""
        return env_factory(self.config, self.config.seed + 10_000 if seed is None else seed)()


def load(logdir: str | Path, *, seed: int | None = None) -> Policy:
    """The evaluation policy of the newest valid checkpoint in `logdir` (raises UserError
    subclasses with a one-line message if there is none). The policy's sampling (the latent
    filter) is seeded with `seed`, by default the run's seed plus the checkpoint's step, as
    the training loop seeds its evaluation at that step."""
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise CheckpointError(f"'{logdir}' is not the logdir of a training run: no such directory")
    resume = checkpoint.find_latest(logdir / checkpoint.CHECKPOINT_DIR, checkpoint.RUN_SCHEMA)
    ckpt = resume.checkpoint
    if ckpt is None:
        raise CheckpointError(f"no checkpoint in '{logdir / checkpoint.CHECKPOINT_DIR}': not the logdir of "
                              "a training run, or one that has not saved yet (runs save every "
                              "run.checkpoint_minutes and when they end)")
    for path, reason in resume.skipped:
        print(f"warning: skipping corrupted checkpoint '{path}' ({reason})", file=sys.stderr)
    holder = live_holder(logdir)
    if holder is not None:
        print(f"the run in '{logdir}' is live ({holder} is training it): loading its newest checkpoint, "
              f"at env step {ckpt.step}", file=sys.stderr)
    # The checkpoint's own config: what its parameters were trained with, config.yaml or not.
    config = dataclasses.replace(checkpoint.checkpoint_config(ckpt), devices=1)
    spec = ckpt.host["agent_spec"]
    space = space_from_key(spec["obs_space"]) if "obs_space" in spec else None  # None: an older run's image
    agent = agent_class(config.agent)(config, int(spec["action_size"]), bool(spec["discrete"]), space)
    state = checkpoint.restore_state(agent.state_template(), ckpt)
    seed = config.seed + ckpt.step if seed is None else seed
    device = DeviceAgent(agent)
    return Policy(device, device.restore(state), config, ckpt.step, seed)


def run_episode(policy: Policy, env: Env, state: dict | None = None,
                record: bool = False) -> tuple[float, int, list[np.ndarray], dict]:
    """One episode: (return, environment steps, frames if `record`, the policy state)."""
    obs, total, steps = env.reset(), 0.0, 0
    record = record and IMAGE_KEY in obs
    frames = [obs[IMAGE_KEY]] if record else []
    while not obs["is_last"]:
        action, state = policy(obs, state)
        obs = env.step(action)
        total += float(obs["reward"])
        steps += policy.config.env.action_repeat
        if record:
            frames.append(obs[IMAGE_KEY])
    return total, steps, frames, state


# ----------------------------------------------------------------------------- command line

def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, {MAX_SEED}], got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m dreamer.evaluate",
        description="Evaluate the newest checkpoint of a training run with the agent's evaluation "
                    "(mode) policy.\nPrints each episode's return and, last, 'return MEAN ± STD over "
                    "N episodes'. Nothing in the logdir changes\nexcept the GIFs that --video writes, so "
                    "it can run next to the training run.",
        epilog="Bad input prints one line 'error: ...' and exits with status 2.\n"
               "In Python: policy = dreamer.load(LOGDIR); action, state = policy(obs, state).")
    parser.add_argument("--logdir", required=True, help="the training run's logdir")
    parser.add_argument("--episodes", type=_positive, default=10, help="episodes to run (default: 10)")
    parser.add_argument("--video", action="store_true",
                        help=f"write each episode as LOGDIR/{VIDEO_DIR}/step<step>_episode<i>.gif")
    parser.add_argument("--seed", type=_seed, help="environment seed (default: the run's seed + 10000, "
                                                 "whose first episode repeats the training loop's "
                                                 "evaluation at the checkpoint's step)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def video_directory(logdir: Path) -> Path:
    """Where --video writes, made and checked writable before any episode runs."""
    directory = logdir / VIDEO_DIR
    try:
        directory.mkdir(exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write videos into '{directory}': {err.strerror or err}; "
                        "run without --video or make the logdir writable") from None
    if not os.access(directory, os.W_OK):
        raise UserError(f"cannot write videos into '{directory}': permission denied; "
                        "run without --video or make the logdir writable")
    return directory


def evaluate(logdir: Path, episodes: int, video: bool, seed: int | None) -> list[float]:
    policy = load(logdir)
    if video and IMAGE_KEY not in policy.agent.obs_space:
        raise UserError(f"the run in '{logdir}' observes {', '.join(sorted(policy.agent.obs_space))}, "
                        "no image: run without --video")
    directory = video_directory(logdir) if video else None
    print(f"checkpoint at env step {policy.step}", file=sys.stderr)
    env = policy.make_env(seed)
    returns, state = [], None
    try:
        for index in range(episodes):  # one state throughout, as the training loop's evaluation
            total, steps, frames, state = run_episode(policy, env, state, record=video)
            returns.append(total)
            print(f"episode {index + 1}/{episodes}: return {total:.1f}, {steps} env steps", flush=True)
            if directory is not None:
                gif = encode_gif(to_uint8_frames(np.stack(frames)), fps=20)
                path = directory / f"step{policy.step:09d}_episode{index + 1:03d}.gif"
                try:
                    path.write_bytes(gif)
                except OSError as err:
                    raise UserError(f"cannot write video '{path}': {err.strerror or err}") from None
    finally:
        env.close()
    return returns


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    def body() -> int:
        args = parse_args(argv)
        returns = evaluate(Path(args.logdir), args.episodes, args.video, args.seed)
        print(f"return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} episodes")
        return 0

    return run_command(body, argv)


if __name__ == "__main__":
    sys.exit(main())

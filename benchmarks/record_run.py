"""Run a training command, time it, and record its evaluation curve in benchmarks/results/.

    python -m benchmarks.record_run --name NAME [--random-episodes N] -- python -m dreamer.train ...

Writes `benchmarks/results/NAME.json` and `NAME.md`: the exact command, git commit, machine,
wall time, the evaluation returns per step, the best evaluation return, and the return of
the uniform random policy on the same environment settings (measured here, not quoted).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import provenance, write_record
from dreamer.cli import ArgumentParser, run_command
from dreamer.config import config_from_dict
from dreamer.logger import read_metrics

RESULTS = Path(__file__).resolve().parent / "results"


def random_policy_returns(config, episodes: int) -> list[float]:
    """Uniform random actions on the run's own environment settings."""
    from dreamer.collect import make_vector_env, run_episodes
    from dreamer.collect import random_actions

    envs = make_vector_env(config, seed=config.seed + 20_000, num_envs=1, parallel=False)
    rng = np.random.default_rng(config.seed)
    act = lambda obs: random_actions(rng, 1, envs.action_size, envs.discrete)  # noqa: E731
    try:
        done = run_episodes(envs, act, config.env.action_repeat, episodes)
    finally:
        envs.close()
    return [float(ep["reward"].sum()) for ep in done]


def find_logdir(command: list[str]) -> Path:
    return Path(command[command.index("--logdir") + 1])


def main() -> None:
    parser = ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--random-episodes", type=int, default=10)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if "--logdir" not in command:
        sys.exit("the command needs an explicit --logdir")
    start = time.time()
    code = subprocess.call(command)
    logdir = find_logdir(command)
    import yaml

    config = config_from_dict(yaml.safe_load((logdir / "config.yaml").read_text()))
    evals = [(m["step"], m["eval/return"]) for m in read_metrics(logdir / "metrics.jsonl") if "eval/return" in m]
    random_returns = random_policy_returns(config, args.random_episodes) if args.random_episodes else []
    record = {
        **provenance(shlex.join(command), start), "name": args.name, "exit_code": code,
        "env": config.env.name, "agent": config.agent, "steps": config.steps,
        "eval": [{"step": s, "return": r} for s, r in evals],
        "best_eval_return": max((r for _, r in evals), default=None),
        "random_policy_return_mean": float(np.mean(random_returns)) if random_returns else None,
        "random_policy_episodes": len(random_returns),
    }
    write_record(RESULTS, args.name, args.name, record, to_markdown(record), folders={logdir: "LOGDIR"})
    print(to_markdown(record))


def to_markdown(r: dict) -> str:
    """The record's body under `write_record`'s header."""
    lines = [f"- exit code: {r['exit_code']}", f"- best evaluation return: {r['best_eval_return']}",
             f"- uniform random policy, same env settings: {r['random_policy_return_mean']} "
             f"(mean of {r['random_policy_episodes']} episodes)", "", "| env step | eval return |", "| --- | --- |"]
    lines += [f"| {e['step']} | {e['return']:.1f} |" for e in r["eval"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run_command(lambda: main() or 0, sys.argv[1:]))

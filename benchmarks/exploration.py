"""Exploration coverage: how much of the true physical state space each agent visits.

    python -m benchmarks.exploration [--env dmc_cartpole_swingup] [--configs cpu] [--steps 30000]
                                     [--methods random dreamer_no_reward plan2explore] [--seeds 0]

For the same environment-step budget, the real training loop (`dreamer.trainer.Trainer`) runs
  random              uniform random actions throughout (the prefill never ends, no updates);
  dreamer_no_reward   Dreamer whose stored episodes have all rewards set to zero;
  plan2explore        Plan2Explore, zero-shot (collection driven by the intrinsic reward only).
After every collection step the simulator's low-dimensional state (qpos, qvel, read from
MuJoCo, not from pixels) is recorded. Coverage is the number of occupied cells of a grid over
the joint positions (unlimited hinges wrapped to [-pi, pi); other joints over the range all
methods visited, pooled, so every method is measured on the same grid), and of a coarser
grid over positions and velocities. For cartpole the position grid is (cart position, pole
angle). Results go to benchmarks/results/exploration_<env>_<configs>.{json,md}.
"""

from __future__ import annotations

if __name__ == "__main__":  # before JAX starts: glibc reads allocator tunables at exec
    from dreamer.runtime import reexec_with_huge_pages

    reexec_with_huge_pages()

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dreamer.cli import ArgumentParser, run_command

METHODS = ("random", "dreamer_no_reward", "plan2explore")


class StateRecorder:
    """The trainer's collection hook: records the physics state of every env after each step
    and, if asked, hides the rewards (zeros) in the episodes handed to the replay."""

    def __init__(self, hide_reward: bool):
        self.hide_reward = hide_reward
        self.states: list[np.ndarray] = []  # [N, nq + nv] after each step, the first reset first
        self.returns: list[float] = []  # true returns of the finished episodes

    def __call__(self, envs, episodes: list[dict]) -> None:
        self.states.append(envs.physics_state())
        for episode in episodes:
            self.returns.append(float(episode["reward"].sum()))
            if self.hide_reward:
                episode["reward"] = np.zeros_like(episode["reward"])


def run_method(method: str, env: str, presets: list[str], steps: int, seed: int,
               overrides: dict[str, str]) -> dict:
    """One run of the training loop; returns the visited physics states [n, nq + nv]."""
    from dreamer.config import build_config
    from dreamer.overlapped import make_trainer

    agent = "plan2explore" if method == "plan2explore" else "dreamer"
    with tempfile.TemporaryDirectory(prefix=f"explore-{method}-") as logdir:
        flat = {"env.name": env, "steps": steps, "seed": seed, "logdir": logdir,
                "run.eval_episodes": 0, "run.video_every": 0, **overrides}
        if method == "random":
            flat["run.prefill"] = 2 * steps  # random actions throughout, never an update
        config = build_config(presets, flat, agent=agent)
        start = time.time()
        recorder = StateRecorder(hide_reward=method == "dreamer_no_reward")
        trainer = make_trainer(config, Path(logdir), on_collect=recorder)
        recorder.states.append(trainer.envs.physics_state())  # after the first reset
        trainer.run()
        states = np.concatenate(recorder.states)  # [steps / action repeat * N, nq + nv]
        return {"states": states, "wall_seconds": time.time() - start,
                "updates": trainer.schedule.scheduled_updates, "episode_returns": recorder.returns}


def joint_layout(env: str) -> tuple[int, list[bool]]:
    """(nq, per position dim: is it an unlimited hinge, i.e. an angle to wrap) for DMC tasks
    whose joints are all hinges or slides; otherwise every dim is treated as linear."""
    from dreamer.envs.dmc import parse_dmc_name
    from dm_control import suite

    domain, task = parse_dmc_name(env)
    model = suite.load(domain, task).physics.model
    hinge, slide = 3, 2  # mjtJoint
    if model.nq != model.nv or not set(model.jnt_type.tolist()) <= {hinge, slide}:
        return model.nq, [False] * model.nq
    return model.nq, [bool(t == hinge and not lim) for t, lim in zip(model.jnt_type, model.jnt_limited)]


def wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def occupied_cells(values: np.ndarray, low: np.ndarray, high: np.ndarray, bins: int) -> int:
    """Distinct cells of a `bins`^D grid over [low, high] that values [n, D] fall in."""
    cells = np.floor((values - low) / np.maximum(high - low, 1e-9) * bins)
    cells = np.clip(cells, 0, bins - 1).astype(np.int64)
    return len(np.unique(cells, axis=0))


def coverage(runs: dict[str, np.ndarray], nq: int, angles: list[bool], bins: int, full_bins: int) -> dict:
    """Coverage measures per method, on grids shared by all methods."""
    pos = {m: s[:, :nq].copy() for m, s in runs.items()}
    for m in pos:
        pos[m][:, angles] = wrap(pos[m][:, angles])
    full = {m: np.concatenate([pos[m], s[:, nq:]], 1) for m, s in runs.items()}
    pooled = np.concatenate(list(full.values()))
    low, high = pooled.min(0), pooled.max(0)
    is_angle = np.array(angles + [False] * (pooled.shape[1] - nq))
    low[is_angle], high[is_angle] = -np.pi, np.pi
    out = {}
    for m, values in full.items():
        linear = ~is_angle
        resultant = np.abs(np.exp(1j * values[:, is_angle]).mean(0))  # circular concentration
        out[m] = {
            "samples": len(values),
            "position_cells": occupied_cells(values[:, :nq], low[:nq], high[:nq], bins),
            "position_grid": f"{bins}^{nq}",
            "state_cells": occupied_cells(values, low, high, full_bins),
            "state_grid": f"{full_bins}^{values.shape[1]}",
            "std_linear": values[:, linear].std(0).round(4).tolist(),
            "circular_variance_angles": (1 - resultant).round(4).tolist(),
        }
    return out


def markdown(record: dict) -> str:
    """The record's body under `write_record`'s header."""
    lines = [f"Presets: {record['configs']}; {record['steps']} environment steps per run; seeds "
             f"{record['seeds']}.", "",
             "Cells occupied by the visited physics states (simulator qpos/qvel, not pixels); "
             "position grid over " + record["position_dims"] + ". Mean over seeds.", "",
             "| method | position cells | state cells (pos+vel) | mean true episode return | updates | wall time |",
             "| --- | --- | --- | --- | --- | --- |"]
    for m, r in record["summary"].items():
        lines.append(f"| {m} | {r['position_cells']:.1f} / {r['position_grid']} | {r['state_cells']:.1f} / "
                     f"{r['state_grid']} | {r['episode_return']:.1f} | {r['updates']:.0f} | "
                     f"{r['wall_seconds'] / 60:.1f} min |")
    lines += ["", f"Plan2Explore covers more than both baselines: **{record['plan2explore_wins']}**", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = ArgumentParser(prog="python -m benchmarks.exploration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="dmc_cartpole_swingup")
    parser.add_argument("--configs", nargs="*", default=["cpu"], help="presets applied to every method")
    parser.add_argument("--steps", type=int, default=30_000, help="environment steps per run")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--bins", type=int, default=20, help="cells per position dimension")
    parser.add_argument("--full-bins", type=int, default=8, help="cells per dimension of the pos+vel grid")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", help="result file stem (default exploration_<env>_<configs>)")
    args = parser.parse_args(argv)

    from benchmarks.common import command_line, provenance, write_record

    overrides = dict(item.split("=", 1) for item in args.set)
    start = time.time()
    nq, angles = joint_layout(args.env)
    per_seed, runs_info = [], {m: [] for m in args.methods}
    for seed in args.seeds:
        runs = {}
        for method in args.methods:
            print(f"== {method}, seed {seed}", file=sys.stderr)
            result = run_method(method, args.env, args.configs, args.steps, seed, overrides)
            runs[method] = result.pop("states")
            runs_info[method].append(result)
        per_seed.append(coverage(runs, nq, angles, args.bins, args.full_bins))
    summary = {}
    for m in args.methods:
        info = runs_info[m]
        returns = [r for i in info for r in i["episode_returns"]]
        summary[m] = {
            "position_cells": float(np.mean([c[m]["position_cells"] for c in per_seed])),
            "state_cells": float(np.mean([c[m]["state_cells"] for c in per_seed])),
            "position_grid": per_seed[0][m]["position_grid"], "state_grid": per_seed[0][m]["state_grid"],
            "episode_return": float(np.mean(returns)) if returns else float("nan"),
            "updates": float(np.mean([i["updates"] for i in info])),
            "wall_seconds": float(np.sum([i["wall_seconds"] for i in info])),
        }
    wins = None
    if "plan2explore" in summary and len(summary) > 1:
        wins = all(summary["plan2explore"]["position_cells"] > s["position_cells"]
                   for m, s in summary.items() if m != "plan2explore")
    dims = ", ".join(f"qpos[{i}]{' (angle, wrapped)' if a else ''}" for i, a in enumerate(angles))
    if args.env.startswith("dmc_cartpole"):
        dims = "cart position x pole angle (wrapped)"
    record = {
        **provenance(command_line("benchmarks.exploration", argv), start),
        "benchmark": "exploration", "env": args.env, "configs": args.configs, "steps": args.steps,
        "seeds": args.seeds, "overrides": overrides, "position_dims": dims,
        "summary": summary, "per_seed": per_seed, "plan2explore_wins": wins,
    }
    name = args.name or f"exploration_{args.env}_{'_'.join(args.configs) or 'default'}"
    write_record(args.out, name, f"Exploration coverage on {args.env}", record, markdown(record),
                 folders={args.out: "DIR"})
    print(markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(lambda: main() or 0, sys.argv[1:]))

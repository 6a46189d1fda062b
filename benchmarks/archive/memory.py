"""Process memory over a long training run: does it grow with the number of updates?

    python -m benchmarks.archive.memory [--steps 40000] [--configs debug] [--env dmc_cartpole_balance]
                                [--capacity 10000] [--updates 50] [--out benchmarks/results]

Runs the training command in a subprocess with a replay capacity smaller than the run (so the
replay fills up and then stays at capacity), samples the process's resident memory (VmRSS,
from /proc) every second, and reports it against environment steps: RSS when the replay is
first full, at the end, and the least-squares slope over the part of the run where the replay
is full (where nothing should grow any more).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import git_commit, machine
from dreamer.cli import ArgumentParser, run_command
from dreamer.logger import read_metrics

RESULTS = Path(__file__).resolve().parent / "results"


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def last_step(metrics_path: Path) -> tuple[int, float]:
    """(latest env step, replay steps) logged so far."""
    if not metrics_path.exists():
        return 0, 0.0
    step, replay = 0, 0.0
    for row in read_metrics(metrics_path):
        step = max(step, row["step"])
        replay = row.get("replay/steps", replay)
    return step, replay


def measure(args: argparse.Namespace, logdir: Path) -> dict:
    command = [sys.executable, "-m", "dreamer.train", "--env", args.env, "--configs", *args.configs,
               "--steps", str(args.steps), "--logdir", str(logdir),
               "--run.replay_capacity", str(args.capacity), "--run.eval_every", str(args.steps),
               "--run.train_steps", str(args.updates)]
    start = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []  # (seconds, env step, replay steps, rss MiB)
    while process.poll() is None:
        rss = rss_mib(process.pid)
        step, replay = last_step(logdir / "metrics.jsonl")
        if rss is not None:
            samples.append((time.time() - start, step, replay, rss))
        time.sleep(1.0)
    if process.returncode != 0:
        raise SystemExit(f"training exited with {process.returncode}: {' '.join(command)}")
    samples = np.array(samples)
    # Full: the replay has stopped growing (whole episodes are kept, so it peaks a little under
    # the capacity).
    full = samples[samples[:, 2] >= 0.98 * samples[:, 2].max()]
    if len(full) < 10:
        raise SystemExit("the replay never filled up: raise --steps or lower --capacity")
    slope = np.polyfit(full[:, 1], full[:, 3], 1)[0]  # MiB per env step
    return {"command": " ".join(["python", "-m", "dreamer.train", *command[3:]]),
            "wall_seconds": round(time.time() - start, 1), "replay_capacity": args.capacity,
            "rss_mib_first_full": float(full[0, 3]), "rss_mib_end": float(full[-1, 3]),
            "rss_mib_max": float(samples[:, 3].max()), "env_step_first_full": int(full[0, 1]),
            "env_step_end": int(full[-1, 1]), "slope_mib_per_10k_steps": float(slope * 1e4),
            "curve": [[int(s), round(float(r), 1)] for _, s, _, r in samples[:: max(1, len(samples) // 60)]]}


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m benchmarks.archive.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="dmc_cartpole_balance")
    parser.add_argument("--configs", nargs="+", default=["debug"])
    parser.add_argument("--steps", type=int, default=40_000)
    parser.add_argument("--capacity", type=int, default=10_000, help="replay capacity (agent steps)")
    parser.add_argument("--updates", type=int, default=50, help="updates per run.train_every env steps")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args, Path(tmp) / "run")
    result.update(commit=git_commit(), machine=machine())
    summary = (f"RSS {result['rss_mib_first_full']:.0f} MiB when the replay (capacity {args.capacity} steps) was first full "
               f"(env step {result['env_step_first_full']}), {result['rss_mib_end']:.0f} MiB at env step "
               f"{result['env_step_end']}: {result['slope_mib_per_10k_steps']:+.1f} MiB per 10k env steps")
    print(summary)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "memory.json").write_text(json.dumps(result, indent=1))
        (args.out / "memory.md").write_text(
            f"# Process memory over a long debug run\n\n- command: `{result['command']}`\n"
            f"- commit: `{result['commit']}`\n- machine: {result['machine']}\n"
            f"- wall time: {result['wall_seconds']} s\n\n{summary}.\n")


if __name__ == "__main__":
    sys.exit(run_command(lambda: main() or 0, sys.argv[1:]))

"""The overlapped training loop against the synchronous one: the wall time of the same run.

    python -m benchmarks.archive.loops --env dmc_cartpole_swingup --configs cpu --steps 8000 [--pairs 1]
        [--record NAME]

Runs `python -m dreamer.train` with `--run.loop sync` and `--run.loop overlapped`, in turn
(`--pairs` times, each in a fresh logdir), to `--steps` environment steps, and reports per run:
the process's wall time (start-up and compilation included), the seconds after prefill (from
the runs' log lines: steps between two lines over their steps per second), and the updates
run (the final checkpoint's count: the same for both loops). `--record NAME`
writes benchmarks/results/NAME.{json,md} with the command, commit and machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import git_commit, machine
from dreamer import checkpoint
from dreamer.cli import ArgumentParser, run_command
from dreamer.saved_config import load_saved_config
from dreamer.logger import read_metrics

RESULTS = Path(__file__).resolve().parent / "results"
LOOPS = ("sync", "overlapped")


def timed_run(loop: str, args, logdir: Path) -> dict:
    command = [sys.executable, "-m", "dreamer.train", "--env", args.env, "--steps", str(args.steps),
               "--run.loop", loop, "--run.checkpoint_minutes", "0", "--logdir", str(logdir),
               *(["--configs", *args.configs] if args.configs else [])]
    start = time.time()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.time() - start
    if done.returncode:
        raise SystemExit(f"error: the {loop} run failed (exit {done.returncode}): {done.stderr[-2000:]}")
    prefill = load_saved_config(logdir / "config.yaml").run.prefill
    metrics, previous, after_prefill = read_metrics(logdir), 0, 0.0
    for record in metrics:
        if "perf/env_steps_per_second" in record:
            if previous >= prefill:
                after_prefill += (record["step"] - previous) / record["perf/env_steps_per_second"]
            previous = record["step"]
    final = checkpoint.find_latest(logdir / checkpoint.CHECKPOINT_DIR).checkpoint
    return {"loop": loop, "wall_seconds": round(wall, 1), "after_prefill_seconds": round(after_prefill, 1),
            "updates": final.host["scheduled_updates"],
            "final_eval_return": next((m["eval/return"] for m in reversed(metrics) if "eval/return" in m), None)}


def to_markdown(result: dict) -> str:
    lines = [f"# {result['name']}", "", f"- command: `{result['command']}`", f"- commit: `{result['commit']}`",
             f"- machine: {result['machine']}", "",
             "| loop | wall time (s) | after prefill (s) | updates | final evaluation return |",
             "| --- | --- | --- | --- | --- |"]
    for run in result["runs"]:
        lines.append(f"| {run['loop']} | {run['wall_seconds']} | {run['after_prefill_seconds']} | "
                     f"{run['updates']} | {run['final_eval_return']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = ArgumentParser(prog="python -m benchmarks.archive.loops", description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="dmc_cartpole_swingup")
    parser.add_argument("--configs", nargs="*", default=["cpu"])
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--pairs", type=int, default=1, help="sync / overlapped runs in turn")
    parser.add_argument("--record", help="write benchmarks/results/NAME.{json,md}")
    args = parser.parse_args(argv)
    result = {"name": args.record or "loops", "command": "python -m benchmarks.archive.loops " + " ".join(argv),
              "commit": git_commit(), "machine": machine(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="loops-") as tmp:
        for pair in range(args.pairs):
            for loop in LOOPS:
                run = timed_run(loop, args, Path(tmp) / f"{loop}-{pair}")
                print(json.dumps(run), flush=True)
                result["runs"].append(run)
    print(to_markdown(result))
    if args.record:
        (RESULTS / f"{args.record}.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / f"{args.record}.md").write_text(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(lambda: main() or 0, sys.argv[1:]))

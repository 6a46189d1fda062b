"""A stand-in for `python -m dreamer.train` in the launcher tests: the same flags, and in a
blink it appends an evaluation every 500 steps to LOGDIR/metrics.jsonl, starting from step 0
on every invocation as a rerun of the real command does. It counts its invocations in
LOGDIR/invocations; with FAKE_TRAIN_CRASH_SEED=S the run of seed S exits 1 halfway."""

import argparse
import json
import os
import sys
from pathlib import Path

parser = argparse.ArgumentParser()
for flag in ("--agent", "--env", "--logdir"):
    parser.add_argument(flag, required=True)
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--steps", type=int, required=True)
parser.add_argument("--configs", nargs="+", default=[])
args, _ = parser.parse_known_args()
logdir = Path(args.logdir)
logdir.mkdir(parents=True, exist_ok=True)
with open(logdir / "invocations", "a") as f:
    f.write(f"{args.steps}\n")
crash = str(args.seed) == os.environ.get("FAKE_TRAIN_CRASH_SEED")
with open(logdir / "metrics.jsonl", "a") as f:
    for step in range(500, args.steps + 1, 500):
        f.write(json.dumps({"step": step, "eval/return": 100.0 * args.seed + step / 10}) + "\n")
        if crash and step >= args.steps // 2:
            sys.exit(1)

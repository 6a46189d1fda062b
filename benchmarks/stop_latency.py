"""How fast a training run answers Ctrl-C: start `python -m dreamer.train` with the given
flags, wait until it prints its measured seconds per update (during its first burst of
updates), send SIGINT once or twice, and time the exit.

    python -m benchmarks.stop_latency --signals 1 2 --out benchmarks/results \\
        -- --env dmc_walker_walk [--configs cpu]

One signal: the run stops after the update in progress, saves a checkpoint and exits 130.
Two signals (the second 0.2 s after the first): it exits at once, whatever XLA is doing.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import command_line, provenance, write_record
from dreamer.cli import ArgumentParser, run_command

SECOND_AFTER = 0.2  # seconds between the two signals


def measure(train_args: list[str], signals: int) -> dict:
    """One run of the command in a fresh logdir, stopped with `signals` SIGINTs."""
    with tempfile.TemporaryDirectory() as logdir:
        command = [sys.executable, "-m", "dreamer.train", *train_args, "--logdir", logdir]
        start = time.time()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        update_seconds = None
        for line in process.stderr:
            match = re.search(r"([0-9.e+-]+) s per update", line)
            if match:
                update_seconds = float(match[1])
                break
        if update_seconds is None:
            raise RuntimeError(f"the run ended (exit {process.wait()}) before its first burst of updates")
        waited = time.time() - start
        for index in range(signals):
            if index:
                time.sleep(SECOND_AFTER)
            sent = time.time()
            process.send_signal(signal.SIGINT)
        code = process.wait()
        return {"signals": signals, "exit_code": code, "latency_seconds": round(time.time() - sent, 2),
                "update_seconds": update_seconds, "signalled_after_seconds": round(waited, 1),
                "checkpoints": sorted(p.name for p in (Path(logdir) / "checkpoints").glob("ckpt-*"))}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = ArgumentParser(prog="python -m benchmarks.stop_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--signals", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--name", default="stop_latency")
    parser.add_argument("--out", type=Path, default=None, help="write NAME.json/.md here")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the training command's flags")
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    start = time.time()
    rows = [measure(train_args, n) for n in args.signals]
    lines = ["| signals | exit status | exit after the last signal (s) | seconds per update | checkpoints |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['signals']} | {r['exit_code']} | {r['latency_seconds']:.2f} | {r['update_seconds']:.2f} | "
              f"{', '.join(r['checkpoints']) or 'none'} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        record = {**provenance(command_line("benchmarks.stop_latency", argv), start),
                  "train_command": shlex.join(["python", "-m", "dreamer.train", *train_args]), "rows": rows}
        write_record(args.out, args.name, f"Stop latency: {shlex.join(train_args)}", record,
                     f"Training command: `{record['train_command']}`\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(lambda: main(), sys.argv[1:]))

"""Ten minutes of an accelerator turned into evidence: speed and a learning curve, recorded.

    python -m benchmarks.gpu_protocol --minutes M --out DIR [--configs PRESET ...] [--env ENV]

On whatever device JAX sees, within M minutes whatever happens:
  1. prints the device and the versions;
  2. times the Dreamer update at batch 50 x 50 (`--batch`), float32 and bfloat16
     (`benchmarks.throughput`);
  3. trains Dreamer on ENV (default dmc_walker_walk) with `python -m dreamer.train` at the
     paper's settings (or the presets given) for the minutes left, evaluating every
     `--eval-every` environment steps, with the overlapped loop and its policy on the CPU
     (`--loop`, `--actor-device`), and stops it with SIGTERM before the deadline;
  4. writes into DIR (at most 5 files, each far below 16 MB): summary.json and summary.md
     (device, versions, commit, every timing, the environment steps reached, the wall time,
     the hours per 1M steps this pace extrapolates to, the evaluation returns next to the
     published Dreamer V1 curve at the same steps), the run's metrics.jsonl, curve.png, and
     train.log (the run's stderr, its last 200 kB).

A watchdog writes what has been measured so far and ends the process at the deadline if a
step hangs. On a CPU, `--configs debug --minutes 4 --eval-every 500 --repeats 3 --batch 4 12`
runs the same steps at toy size (a test does).
"""

from __future__ import annotations

import os

# The timing step shares the device with the training run it starts: it must not take JAX's
# default 75% of the GPU memory up front (set before JAX is imported; the run gets the default).
_PREALLOCATE = "XLA_PYTHON_CLIENT_PREALLOCATE"
_USER_PREALLOCATE = os.environ.get(_PREALLOCATE)
os.environ.setdefault(_PREALLOCATE, "false")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import command_line, git_commit, provenance, write_record  # noqa: E402
from dreamer.cli import ArgumentParser, run_command  # noqa: E402
from dreamer.errors import UserError  # noqa: E402
from dreamer.logger import read_metrics  # noqa: E402

PAPER_BATCH = (50, 50)  # sequences x length: the timed update's default batch
PACKAGES = ("jax", "jaxlib", "flax", "optax", "distrax", "mujoco", "dm_control", "numpy", "dreamer-jax")
# Seconds before the deadline the run is asked to stop (it checkpoints, then our files are
# written): 45 s, or less on a short budget.
STOP_MARGIN, STOP_FRACTION = 45.0, 0.1
LOG_BYTES = 200_000


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def device() -> str:
    import jax

    kinds = sorted({d.device_kind for d in jax.devices()})
    return f"{jax.default_backend()}: {len(jax.devices())} x {', '.join(kinds)}"


def throughput(presets: list[str], env: str, deadline: float, repeats: int, batch: tuple[int, int]) -> dict:
    """The update at `batch` (sequences x length) in float32 and bfloat16.

    A precision is skipped when the one before it says it would end after `deadline` (each
    costs about one compile plus `repeats` updates): the training run keeps its share.
    """
    from benchmarks.throughput import measure_update
    from dreamer.config import build_config

    rows, last_seconds = {}, 0.0
    for precision in ("float32", "bfloat16"):
        started = time.time()
        if started + last_seconds > deadline:
            rows[precision] = {"skipped": "no time left"}
            continue
        config = build_config(presets, {"env.name": env, "run.precision": precision})
        rows[precision] = measure_update(config, batch, repeats=repeats)
        last_seconds = time.time() - started
    return rows


class Run:
    """`python -m dreamer.train` in a subprocess, stopped with SIGTERM at `stop_at`."""

    def __init__(self, args: argparse.Namespace, logdir: Path):
        self.logdir, self.log = logdir, logdir.parent / "train.log"
        self.command = [sys.executable, "-m", "dreamer.train", "--env", args.env, "--agent", "dreamer",
                        *(["--configs", *args.configs] if args.configs else []),
                        "--steps", str(args.max_steps), "--run.eval_every", str(args.eval_every),
                        "--run.checkpoint_minutes", "0", "--run.loop", args.loop,
                        "--run.actor_device", args.actor_device, "--logdir", str(logdir)]
        self.process: subprocess.Popen | None = None
        self.start = self.end = None

    def __call__(self, stop_at: float) -> None:
        self.start = time.time()
        env = dict(os.environ)
        if _USER_PREALLOCATE is None:  # the run itself may preallocate as usual
            env.pop(_PREALLOCATE, None)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                self.process.wait(timeout=max(stop_at - time.time(), 1.0))
            except subprocess.TimeoutExpired:
                self.stop()
        self.end = time.time()

    def stop(self) -> None:
        """SIGTERM (the run finishes its step and checkpoints), SIGKILL 20 s later."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def summary(self, task: str) -> dict:
        metrics = read_metrics(self.logdir / "metrics.jsonl") if (self.logdir / "metrics.jsonl").exists() else []
        steps = max((m["step"] for m in metrics), default=0)
        wall = (self.end or time.time()) - (self.start or time.time())
        evals = [(m["step"], m["eval/return"]) for m in metrics if m.get("eval/return") is not None]
        fps = [m["perf/env_steps_per_second"] for m in metrics if "perf/env_steps_per_second" in m]
        updates = [m["perf/train_seconds"] for m in metrics if "perf/train_seconds" in m]
        return {
            "command": " ".join(self.command[1:]).replace(str(self.logdir), "LOGDIR"),
            "exit_code": None if self.process is None else self.process.returncode,
            "env_steps": steps, "wall_seconds": round(wall, 1),
            "hours_per_1m_steps": round(wall / steps * 1e6 / 3600, 2) if steps else None,
            "env_steps_per_second_last": fps[-1] if fps else None,
            "train_seconds_per_burst_median": float(np.median(updates)) if updates else None,
            "evaluations": [{"step": step, "return": ret, "dreamer_v1_published": published(step, task)}
                            for step, ret in evals],
        }


def published(step: int, task: str) -> float | None:
    """Dreamer V1's published mean return at `step` (its score file), interpolated."""
    from benchmarks.reference import reference_curves

    for series, rows in reference_curves(task):
        if series.id == "dreamer_v1" and rows:
            xs, ys = [r[0] for r in rows], [r[1] for r in rows]
            return None if step > xs[-1] else round(float(np.interp(step, xs, ys)), 1)
    return None


def write(out: Path, summary: dict, run: Run | None) -> None:
    write_record(out, "summary", f"GPU protocol: {summary.get('device', '?')}", summary, to_markdown(summary))
    if run is None:
        return
    if (run.logdir / "metrics.jsonl").exists():
        shutil.copyfile(run.logdir / "metrics.jsonl", out / "metrics.jsonl")
    if run.log.exists():
        data = run.log.read_bytes()
        (out / "train.log").write_bytes(data[-LOG_BYTES:])
    evals = summary.get("run", {}).get("evaluations", [])
    if evals:
        plot(evals, summary.get("env", "dmc_walker_walk"), out / "curve.png")


def plot(evals: list[dict], task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.reference import reference_curves

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([e["step"] for e in evals], [e["return"] for e in evals], "o-", label="this run")
    horizon = max(e["step"] for e in evals)
    for series, rows in reference_curves(task):
        if series.id == "dreamer_v1":
            rows = [r for r in rows if r[0] <= max(horizon * 1.5, 100_000)]
            ax.plot([r[0] for r in rows], [r[1] for r in rows], "--", label=series.label)
    ax.set(xlabel="environment steps", ylabel="evaluation return", title=task)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def to_markdown(s: dict) -> str:
    """The summary's body under `write_record`'s header."""
    lines = [f"- versions: {', '.join(f'{k} {v}' for k, v in s.get('versions', {}).items())}",
             f"- budget: {s.get('minutes')} min" + ("; **cut by the watchdog**" if s.get("watchdog") else ""), "",
             f"## Update, batch {' x '.join(map(str, s.get('batch', PAPER_BATCH)))}", "",
             "| precision | seconds per update | compile s | GFLOP |", "| --- | --- | --- | --- |"]
    for precision, row in s.get("throughput", {}).items():
        if "update_seconds" in row:
            lines.append(f"| {precision} | {row['update_seconds']:.4f} | {row['compile_seconds']:.1f} | "
                         f"{row['update_gflop']:.1f} |")
        else:
            lines.append(f"| {precision} | {row.get('skipped', row.get('error', '?'))} | | |")
    run = s.get("run", {})
    lines += ["", f"## Training run ({s.get('env')})", "", f"- `{run.get('command')}`",
              f"- environment steps reached: {run.get('env_steps')} in {run.get('wall_seconds')} s "
              f"(exit code {run.get('exit_code')}); extrapolated: {run.get('hours_per_1m_steps')} h per 1M steps",
              "", "| step | eval return | Dreamer V1 published (score file) |", "| --- | --- | --- |"]
    lines += [f"| {e['step']} | {e['return']:.1f} | {e['dreamer_v1_published']} |" for e in run.get("evaluations", [])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = ArgumentParser(prog="python -m benchmarks.gpu_protocol", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="the whole budget, all steps included")
    parser.add_argument("--out", type=Path, required=True, help="where the (at most 5) files go")
    parser.add_argument("--configs", nargs="*", default=[], help="presets (default: the paper's settings)")
    parser.add_argument("--env", default="dmc_walker_walk")
    parser.add_argument("--eval-every", type=int, default=10_000, help="environment steps between evaluations")
    parser.add_argument("--max-steps", type=int, default=1_000_000, help="the run stops here if time remains")
    parser.add_argument("--loop", choices=("sync", "overlapped"), default="overlapped",
                        help="the run's run.loop (default: overlapped, collection beside the updates)")
    parser.add_argument("--actor-device", choices=("learner", "cpu"), default="cpu",
                        help="the overlapped loop's policy device (default: cpu, off the updates' stream)")
    parser.add_argument("--commit", help="the commit to record (default: the checkout's HEAD)")
    parser.add_argument("--repeats", type=int, default=10, help="timed updates per precision (the median)")
    parser.add_argument("--batch", type=int, nargs=2, default=PAPER_BATCH, metavar=("SEQUENCES", "LENGTH"),
                        help="the timed update's batch (default: the paper's 50 x 50)")
    args = parser.parse_args(argv)
    if min(args.batch) < 1:
        raise UserError(f"--batch needs two positive sizes, got {' '.join(map(str, args.batch))}")
    try:  # the files go here at the end: find out now if they cannot
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / ".writable").touch()
        (args.out / ".writable").unlink()
    except OSError as err:
        raise UserError(f"cannot write into --out '{args.out}': {err.strerror or err}") from None
    start = time.time()
    deadline = start + 60 * args.minutes
    summary: dict = {**provenance(command_line("benchmarks.gpu_protocol", argv), start),
                     "commit": args.commit or git_commit(),  # an offline host's copy has no git
                     "minutes": args.minutes, "env": args.env, "batch": list(args.batch),
                     "versions": versions(), "device": device()}
    print(f"device: {summary['device']}\nversions: {summary['versions']}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-protocol-"))
    run = Run(args, workdir / "run")
    lock = threading.Lock()

    def finish(watchdog: bool) -> None:
        with lock:
            run.stop()
            summary.update(watchdog=watchdog, wall_seconds=round(time.time() - start, 1), run=run.summary(args.env))
            write(args.out, summary, run)

    def watchdog() -> None:  # a step that hangs: write what there is and end at the deadline
        finish(watchdog=True)
        print(f"watchdog: the budget ended; wrote {args.out}", file=sys.stderr, flush=True)
        os._exit(0)

    timer = threading.Timer(max(deadline - time.time() - 10.0, 1.0), watchdog)
    timer.daemon = True
    timer.start()
    try:
        # The updates take about a quarter of the budget; the run gets the rest.
        summary["throughput"] = throughput(args.configs, args.env, start + 15 * args.minutes, args.repeats,
                                           tuple(args.batch))
        print(json.dumps(summary["throughput"]), flush=True)
        run(stop_at=deadline - min(STOP_MARGIN, STOP_FRACTION * 60 * args.minutes + 5))
    finally:
        timer.cancel()
        finish(watchdog=False)
        shutil.rmtree(workdir, ignore_errors=True)
    print(to_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(lambda: main() or 0, sys.argv[1:]))

"""Launchers for a sweep of training runs: local subprocesses, or Ray tasks.

Every run is the command users run, `python -m dreamer.train --agent A --env E --seed S
--steps N [--configs ...] --logdir OUT/runs/A/E/seed_S`, its output appended to `train.log` in
that logdir. A run is finished when its logdir holds `done.json`, written after the command
exited 0 with metrics.jsonl at its step budget; an unfinished run is run again with the same
command and logdir (the training command reloads the replay found there).

    launcher.run(jobs, workers) -> [attempt, ...]   # one dict per attempt
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from benchmarks.aggregate import run_records
from dreamer.errors import UserError

TRAIN_MODULE = "dreamer.train"
DONE_FILE, RUN_FILE, LOG_FILE = "done.json", "run.json", "train.log"
RAY_MISSING = "--launcher ray needs Ray: pip install -e '.[ray]'"
POLL_SECONDS = 2.0
ROOT = Path(__file__).resolve().parent.parent


class LauncherError(UserError):
    """The launcher cannot start (Ray missing, a logdir holding another run's settings)."""


@dataclass(frozen=True)
class Job:
    agent: str
    env: str
    seed: int
    steps: int
    logdir: str  # absolute, so that workers in other directories find it
    configs: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()  # extra `--section.key VALUE` flags, passed through
    module: str = TRAIN_MODULE

    @property
    def name(self) -> str:
        return f"{self.agent}/{self.env}/seed_{self.seed}"

    def train_args(self) -> list[str]:
        configs = ["--configs", *self.configs] if self.configs else []
        return ["--agent", self.agent, "--env", self.env, "--seed", str(self.seed), "--steps", str(self.steps),
                *configs, "--logdir", self.logdir, *self.overrides]

    def command(self, python: str | None = None) -> list[str]:
        # --force: the logdir already holds the launcher's own train.log and run.json.
        return [python or sys.executable, "-m", self.module, *self.train_args(), "--force"]

    def settings(self) -> list[str]:
        """What must match for an existing logdir to continue this run: all but the steps and
        the logdir itself (a sweep directory may be moved)."""
        args = self.train_args()
        drop = {i + k for flag in ("--steps", "--logdir") for k in (0, 1) for i in [args.index(flag)]}
        return [self.module, *(a for i, a in enumerate(args) if i not in drop)]


def make_job(out: Path, agent: str, env: str, seed: int, steps: int, configs: Sequence[str] = (),
             overrides: Sequence[str] = (), module: str | None = None) -> Job:
    logdir = (Path(out) / "runs" / agent / env / f"seed_{seed}").resolve()
    return Job(agent, env, seed, steps, str(logdir), tuple(configs), tuple(overrides), module or TRAIN_MODULE)


# ----------------------------------------------------------------------------- run state


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_finished(job: Job) -> bool:
    done = _read_json(Path(job.logdir) / DONE_FILE)
    return bool(done) and done.get("settings") == job.settings() and done.get("steps", 0) >= job.steps


def check_settings(job: Job) -> None:
    """A logdir that holds a run with other settings (agent, env, presets, flags) is an error:
    rerunning into it would mix two experiments."""
    for name in (DONE_FILE, RUN_FILE):
        data = _read_json(Path(job.logdir) / name)
        if data and data.get("settings") != job.settings():
            old = shlex.join(data.get("settings") or [])
            raise LauncherError(f"'{job.logdir}' holds a run with other settings ({old}); "
                                f"use another --out or remove that directory")


def logged_step(logdir: str | Path) -> int:
    """The last step in metrics.jsonl, read from its end (cheap on long files)."""
    path = Path(logdir) / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def execute(job: Job, on_start: Callable[[subprocess.Popen], None] | None = None) -> dict:
    """Run one attempt of `job` to its end (blocking); write done.json if it finished.
    Returns the attempt record. Also what each Ray task runs."""
    logdir = Path(job.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    (logdir / RUN_FILE).write_text(json.dumps({"settings": job.settings(), "steps": job.steps}) + "\n")
    command = job.command()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = datetime.now(timezone.utc)
    start = time.time()
    with open(logdir / LOG_FILE, "a") as log:
        log.write(f"=== {started.isoformat(timespec='seconds')} {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        if on_start:
            on_start(process)
        code = process.wait()
    wall = time.time() - start
    reached = max((r["step"] for r in run_records(logdir)), default=0)
    finished = code == 0 and reached >= job.steps
    attempt = {**job_fields(job), "command": shlex.join(command), "started": started.isoformat(timespec="seconds"),
               "wall_seconds": round(wall, 1), "exit_code": code, "last_step": reached, "finished": finished,
               "host": platform.node(), "cpu_count": os.cpu_count()}
    if finished:
        done = {**attempt, "settings": job.settings(), "steps": job.steps}
        (logdir / DONE_FILE).write_text(json.dumps(done, indent=1) + "\n")
    return attempt


def job_fields(job: Job) -> dict:
    return {k: v for k, v in asdict(job).items() if k in ("agent", "env", "seed", "steps", "logdir")}


def failed_attempt(job: Job, error: BaseException) -> dict:
    return {**job_fields(job), "command": shlex.join(job.command()), "exit_code": None,
            "finished": False, "error": f"{type(error).__name__}: {error}",
            "last_step": logged_step(job.logdir)}


# ----------------------------------------------------------------------------- progress


@dataclass
class Progress:
    """Runs done out of the total (finished earlier ones included), with the steps of the running ones."""

    total: int
    done: int = 0
    disable: bool = False
    _bar: tqdm = field(init=False, repr=False)
    _shown: float = field(init=False, default=0.0)

    def __post_init__(self):
        self._bar = tqdm(total=self.total, initial=self.done, desc="runs", unit="run", dynamic_ncols=True,
                         disable=self.disable, file=sys.stderr, mininterval=1.0 if sys.stderr.isatty() else 60.0)

    def running(self, jobs: Sequence[Job]) -> None:
        """Show the running jobs' steps (redrawn every second on a terminal, every minute otherwise)."""
        now = time.time()
        if now - self._shown < (1.0 if sys.stderr.isatty() else 60.0):
            return
        self._shown = now
        self._bar.set_postfix_str(", ".join(f"{j.name} {logged_step(j.logdir)}/{j.steps}" for j in jobs))

    def finished(self, attempt: dict) -> None:
        if attempt.get("finished"):
            self._bar.update(1)
        else:
            tqdm.write(f"run {attempt['agent']}/{attempt['env']}/seed_{attempt['seed']} did not finish "
                       f"(exit code {attempt.get('exit_code')}, step {attempt.get('last_step')}); "
                       f"see {Path(attempt['logdir']) / LOG_FILE}", file=sys.stderr)

    def close(self) -> None:
        self._bar.close()


# ----------------------------------------------------------------------------- launchers


class Launcher:
    """Runs jobs and returns one attempt record per job, in completion order."""

    def run(self, jobs: Sequence[Job], workers: int | None = None,
            progress: Progress | None = None,
            on_attempt: Callable[[dict], None] | None = None) -> list[dict]:
        raise NotImplementedError

    @staticmethod
    def _finish(job: Job, result: Callable[[], dict], attempts: list[dict], progress: Progress | None,
                on_attempt: Callable[[dict], None] | None) -> None:
        """Record one finished job: its attempt, or a failure record if it raised."""
        try:
            attempt = result()
        except Exception as err:  # noqa: BLE001 (a task error or a lost node: the sweep goes on)
            attempt = failed_attempt(job, err)
        attempts.append(attempt)
        if on_attempt:
            on_attempt(attempt)
        if progress:
            progress.finished(attempt)


class LocalLauncher(Launcher):
    """Subprocesses on this machine, `workers` (default 1) at a time."""

    def run(self, jobs, workers=None, progress=None, on_attempt=None):
        workers = max(1, workers or 1)
        processes: dict[Job, subprocess.Popen] = {}
        lock = threading.Lock()

        def register(job):
            def on_start(process):
                with lock:
                    processes[job] = process
            return on_start

        attempts, futures = [], {}
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = {pool.submit(execute, job, register(job)): job for job in jobs}
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = futures[future]
                    with lock:
                        processes.pop(job, None)
                    self._finish(job, future.result, attempts, progress, on_attempt)
                if progress:
                    with lock:
                        progress.running(list(processes))
        except BaseException:  # Ctrl-C or a crash here: stop the runs this launcher started
            for future in futures:
                future.cancel()
            with lock:
                for process in processes.values():
                    process.terminate()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return attempts


class RayLauncher(Launcher):
    """Each job a Ray task requesting `cpus_per_run` CPUs and `gpus_per_run` GPUs; a local Ray
    instance by default, an existing cluster with `address` ("auto" or "HOST:PORT"). The runs'
    logdirs must be on a filesystem the nodes share. At most `workers` tasks are in flight
    (default: all, and Ray schedules them as resources allow)."""

    def __init__(self, address: str | None = None, cpus_per_run: float = 1, gpus_per_run: float = 0,
                 init_kwargs: dict | None = None):
        self.address, self.cpus, self.gpus = address, cpus_per_run, gpus_per_run
        self.init_kwargs = init_kwargs or {}

    @staticmethod
    def import_ray():
        try:
            import ray
        except ImportError:
            raise LauncherError(RAY_MISSING) from None
        return ray

    def run(self, jobs, workers=None, progress=None, on_attempt=None):
        ray = self.import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            kwargs = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
            if self.address is None:  # a local instance: its workers import this checkout
                path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
                kwargs.setdefault("runtime_env", {"env_vars": {"PYTHONPATH": path}})
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise LauncherError(f"cannot start or reach Ray (address {self.address or 'local'}): "
                                    f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
        task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus)(execute)
        queue, in_flight, attempts = list(jobs), {}, []
        limit = workers or len(queue)
        try:
            while queue or in_flight:
                while queue and len(in_flight) < limit:
                    job = queue.pop(0)
                    in_flight[task.remote(job)] = job
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_SECONDS)
                for ref in ready:
                    job = in_flight.pop(ref)
                    self._finish(job, lambda ref=ref: ray.get(ref), attempts, progress, on_attempt)
                if progress:
                    progress.running([j for j in in_flight.values() if logged_step(j.logdir) > 0])
        except BaseException:
            for ref in in_flight:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started_here:
                ray.shutdown()
        return attempts


def make_launcher(name: str, address: str | None = None, cpus_per_run: float = 1,
                  gpus_per_run: float = 0) -> Launcher:
    if name == "local":
        return LocalLauncher()
    if name == "ray":
        RayLauncher.import_ray()  # fail before anything runs
        return RayLauncher(address, cpus_per_run, gpus_per_run)
    raise LauncherError(f"unknown launcher '{name}' (local or ray)")

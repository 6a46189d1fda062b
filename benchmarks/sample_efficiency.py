"""Sample efficiency on DMC from pixels against the published results: run, tabulate, plot.

    python -m benchmarks.sample_efficiency --agents dreamer planet --envs dmc_walker_walk \\
        --seeds 3 --steps 500000 [--configs PRESET ...] --out DIR [--workers N] \\
        [--launcher local|ray [--address ADDR] [--cpus-per-run N] [--gpus-per-run N]] \\
        [--budgets 100000 500000] [--random-episodes N] [--aggregate-only] [--record NAME] \\
        [--section.key VALUE ...]

Runs every agent x env x seed through `python -m dreamer.train` into DIR/runs/AGENT/ENV/seed_S
(skipping finished runs, rerunning unfinished ones), then writes DIR/summary.md and
DIR/summary.json (returns at the budgets with the published numbers) and DIR/plots/*.png.
`--random-episodes N` adds the uniform random policy's return on each run's own settings.
Extra `--section.key VALUE` flags go to every run. `--record NAME` copies the table, the grid
plot and the provenance into benchmarks/results/NAME.*.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import aggregate, launch, plots
from benchmarks.aggregate import RunDir
from dreamer.cli import ArgumentParser
from dreamer.config import build_config, parse_overrides
from dreamer.errors import ConfigError, UserError
from dreamer.registry import agent_spec, agent_specs

RESULTS = Path(__file__).resolve().parent / "results"
ATTEMPTS_FILE = "attempts.jsonl"
RANDOM_FILE = "random_returns.json"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = ArgumentParser(prog="python -m benchmarks.sample_efficiency",
                             description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--agents", nargs="+", default=["dreamer"], help=f"of {', '.join(agent_specs())}")
    parser.add_argument("--envs", nargs="+", required=True, help="dmc_<domain>_<task> or gym:<id>")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument("--steps", type=int, default=500_000, help="environment steps per run")
    parser.add_argument("--configs", nargs="+", default=[], help="presets for every run")
    parser.add_argument("--out", required=True, help="sweep directory")
    parser.add_argument("--workers", type=int, help="runs at a time (local default 1; ray default all)")
    parser.add_argument("--launcher", choices=["local", "ray"], default="local")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, help="Ray CPUs per run")
    parser.add_argument("--gpus-per-run", type=float, default=0.0, help="Ray GPUs per run")
    parser.add_argument("--budgets", nargs="+", type=int,
                        help="step budgets of the table (default: 100k, 500k, 1M as reached, and --steps)")
    parser.add_argument("--tolerance", type=float, default=aggregate.TOLERANCE,
                        help="how far before a budget (fraction of it) an evaluation still counts")
    parser.add_argument("--random-episodes", type=int, default=0, metavar="N",
                        help="also measure the uniform random policy over N episodes per task and settings "
                             "(a column of the table, a line in the plots; cached in DIR)")
    parser.add_argument("--aggregate-only", action="store_true", help="run nothing; tabulate and plot DIR")
    parser.add_argument("--record", metavar="NAME", help="copy table, plot and provenance to benchmarks/results/")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args, rest = parser.parse_known_args(argv)
    return args, rest


def validate(args: argparse.Namespace, rest: list[str]) -> list[str]:
    """Check everything before any run starts; return the pass-through flags."""
    for name, value, low in (("--seeds", args.seeds, 1), ("--steps", args.steps, 1), ("--workers", args.workers, 1),
                             ("--random-episodes", args.random_episodes, 0)):
        if value is not None and value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    if any(b <= 0 for b in args.budgets or []):
        raise ConfigError(f"--budgets must be positive step counts, got {args.budgets}")
    if not 0 <= args.tolerance < 1:
        raise ConfigError(f"--tolerance must be in [0, 1), got {args.tolerance}")
    if args.record and (not args.record.replace("_", "").replace("-", "").isalnum()):
        raise ConfigError(f"--record takes a plain name (letters, digits, _ and -), got '{args.record}'")
    if args.launcher != "ray" and (args.address or args.cpus_per_run != 1.0 or args.gpus_per_run != 0.0):
        raise ConfigError("--address, --cpus-per-run and --gpus-per-run need --launcher ray")
    for agent in args.agents:
        agent_spec(agent)  # an unknown name raises the registry's error (with a close match)
    for env in args.envs:
        check_env(env)
    try:
        overrides = parse_overrides(rest)
    except ConfigError as err:
        raise ConfigError(f"{err} (unknown argument for the sweep)") from None
    reserved = {"env.name", "agent", "seed", "steps", "logdir"} & set(overrides)
    if reserved:
        raise ConfigError(f"--{sorted(reserved)[0]} is set by the sweep; use --agents/--envs/--seeds/--steps/--out")
    for agent in args.agents:  # unknown presets, keys or values fail here, not in a run
        for env in args.envs:
            build_config(args.configs, {**overrides, "env.name": env, "steps": args.steps}, agent=agent)
    return rest


def check_env(name: str) -> None:
    if name.startswith("dmc_"):
        from dreamer.envs.dmc import parse_dmc_name

        parse_dmc_name(name)
    elif not (name.startswith("gym:") and len(name) > 4):
        from dreamer.envs.dmc import unknown_name_error

        raise unknown_name_error(name, [])


def record_attempt(out: Path, attempt: dict) -> None:
    with open(out / ATTEMPTS_FILE, "a") as f:
        f.write(json.dumps(attempt) + "\n")


def read_attempts(out: Path) -> list[dict]:
    path = out / ATTEMPTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# Environment settings that change the random policy's returns (not how many envs run, or where).
RANDOM_KEY_DROP = ("num_envs", "parallel", "max_restarts")


def random_baselines(jobs: list[launch.Job], episodes: int, out: Path) -> dict[tuple[str, str], dict]:
    """(agent, env) -> the uniform random policy's {mean, std, episodes, action_repeat} on that
    group's own environment settings (action repeat, time limit, rendering), measured on this
    machine once per distinct settings and kept in DIR/random_returns.json, so reruns and
    --aggregate-only reuse it."""
    from benchmarks.record_run import random_policy_returns  # noqa: PLC0415 (imports JAX, dm_control)
    from dreamer.train import parse_args as train_config  # noqa: PLC0415

    path = out / RANDOM_FILE
    cache = json.loads(path.read_text()) if path.is_file() else {}
    result = {}
    for job in jobs:
        if (job.agent, job.env) in result:
            continue
        config, _ = train_config(job.train_args())
        config = dataclasses.replace(config, seed=0)  # one measurement per settings, whichever seeds ran
        settings = {k: v for k, v in config.to_dict()["env"].items() if k not in RANDOM_KEY_DROP}
        key = json.dumps({"env": settings, "episodes": episodes}, sort_keys=True)
        if key not in cache:
            print(f"measuring the uniform random policy on {job.env} ({episodes} episodes, action repeat "
                  f"{config.env.action_repeat})", file=sys.stderr)
            returns = random_policy_returns(config, episodes)
            cache[key] = {"mean": round(float(np.mean(returns)), 2), "std": round(float(np.std(returns)), 2),
                          "episodes": episodes, "action_repeat": config.env.action_repeat}
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cache, indent=1) + "\n")
        result[(job.agent, job.env)] = cache[key]
    return result


def try_random_baselines(jobs: list[launch.Job], episodes: int, out: Path) -> dict[tuple[str, str], dict] | None:
    """As `random_baselines`, but a failure (no renderer here, a broken cache file) costs only
    the column: the table of the runs is still written."""
    try:
        return random_baselines(jobs, episodes, out)
    except Exception as err:  # noqa: BLE001
        print(f"warning: no uniform-random column: {type(err).__name__}: {err}", file=sys.stderr)
        return None


def header(args: argparse.Namespace, passthrough: list[str]) -> str:
    configs = " ".join(args.configs) or "none (the papers' settings)"
    lines = [
        "# Sample efficiency: evaluation return at step budgets", "",
        f"- agents: {', '.join(args.agents)}; tasks: {', '.join(args.envs)}; seeds: {args.seeds}; "
        f"steps per run: {args.steps:,}",
        f"- presets: {configs}" + (f"; flags: `{shlex.join(passthrough)}`" if passthrough else ""),
        "- runs: `python -m dreamer.train --agent A --env E --seed S --steps N"
        + (f" --configs {' '.join(args.configs)}" if args.configs else "") + " --logdir DIR/runs/A/E/seed_S`",
    ]
    if args.configs:
        lines.append("- the published numbers use the papers' full-size settings; runs with smaller presets "
                     "are not comparable to them in absolute terms")
    return "\n".join(lines)


def sweep_record(args, argv: list[str], attempts: list[dict], jobs: list[launch.Job], start: float,
                 summary: dict) -> dict:
    """The record of a sweep: its provenance, each run's attempts and wall time, the summary."""
    from benchmarks import common  # noqa: PLC0415 (git and JAX's devices, only when recording)

    runs = []
    for job in jobs:
        mine = [a for a in attempts if a.get("logdir") == job.logdir]
        runs.append({"run": job.name, "attempts": len(mine), "finished": launch.is_finished(job),
                     "wall_seconds": round(sum(a.get("wall_seconds") or 0 for a in mine), 1),
                     "hosts": sorted({f"{a.get('host')} ({a.get('cpu_count')} CPUs)" for a in mine})})
    return {**common.provenance(common.command_line("benchmarks.sample_efficiency", argv), start),
            "launcher": args.launcher, "runs": runs, "summary": summary}


def write_sweep_record(name: str, out: Path, summary_md: str, record: dict) -> list[Path]:
    from benchmarks import common  # noqa: PLC0415

    run_lines = [f"| {r['run']} | {'yes' if r['finished'] else 'no'} | {r['attempts']} | "
                 f"{r['wall_seconds'] / 60:.1f} | {', '.join(r['hosts'])} |" for r in record["runs"]]
    body = "\n".join([
        f"Launcher: {record['launcher']}; the wall time above is this invocation's, the runs' own below.", "",
        f"![learning curves]({name}.png)", "",
        "| run | finished | attempts | wall time (min) | host |", "| --- | --- | --- | --- | --- |", *run_lines, "",
        summary_md])
    md, js = common.write_record(RESULTS, name, name, record, body, folders={out: "DIR"})
    shutil.copyfile(out / "plots" / "grid.png", RESULTS / f"{name}.png")
    return [md, js, RESULTS / f"{name}.png"]


def sweep(argv: list[str]) -> int:
    start = time.time()
    args, rest = parse_args(argv)
    passthrough = validate(args, rest)
    out = Path(args.out)
    jobs = [launch.make_job(out, agent, env, seed, args.steps, args.configs, passthrough)
            for agent in args.agents for env in args.envs for seed in range(args.seeds)]
    for job in jobs:
        launch.check_settings(job)
    pending = [job for job in jobs if not launch.is_finished(job)]
    failed = []
    if not args.aggregate_only and pending:
        launcher = launch.make_launcher(args.launcher, args.address, args.cpus_per_run, args.gpus_per_run)
        out.mkdir(parents=True, exist_ok=True)
        print(f"{len(jobs) - len(pending)} of {len(jobs)} runs already finished in {out}; running {len(pending)} "
              f"({args.launcher}, {args.workers or ('1' if args.launcher == 'local' else 'all')} at a time)",
              file=sys.stderr)
        progress = launch.Progress(len(jobs), len(jobs) - len(pending), disable=args.quiet)
        try:
            attempts = launcher.run(pending, args.workers, progress, lambda a: record_attempt(out, a))
        finally:
            progress.close()
        failed = [a for a in attempts if not a["finished"]]
    elif not args.aggregate_only:
        print(f"all {len(jobs)} runs already finished in {out}", file=sys.stderr)
    budgets = args.budgets or aggregate.default_budgets(args.steps)
    runs = [RunDir(j.agent, j.env, j.seed, Path(j.logdir)) for j in jobs]
    baselines = try_random_baselines(jobs, args.random_episodes, out) if args.random_episodes else None
    summary = aggregate.aggregate(runs, budgets, tolerance=args.tolerance, random_returns=baselines)
    md_path, json_path = aggregate.write_summary(summary, out, header(args, passthrough))
    horizon = max([args.steps, *budgets])
    plot_paths = plots.plot_sweep(runs, out / "plots", horizon, budgets, random_returns=baselines)
    print(md_path.read_text())
    print(f"wrote {md_path}, {json_path} and {len(plot_paths)} plots in {out / 'plots'}", file=sys.stderr)
    if args.record:
        record = sweep_record(args, argv, read_attempts(out), jobs, start, summary)
        paths = write_sweep_record(args.record, out, md_path.read_text(), record)
        print(f"recorded {', '.join(str(p) for p in paths)}", file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} run(s) did not finish: "
              + ", ".join(f"{a['agent']}/{a['env']}/seed_{a['seed']}" for a in failed)
              + " (see train.log in their logdirs); rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return sweep(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

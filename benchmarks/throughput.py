"""Throughput of every hot path, against the machine's matmul ceiling.

    python -m benchmarks.throughput [--quick] [--json] [--configs PRESET ...] [--env NAME]
                                    [--batch SEQUENCES LENGTH] [--out DIR]

Measures, with the paper's model sizes unless presets say otherwise:
- the full update (world model + Dreamer behaviour) on a replay-shaped batch, 16 x 50 on CPU and
  50 x 50 on an accelerator: median seconds, compile seconds, FLOPs and the fraction of the
  float32 matmul ceiling measured in the same process;
- imagination throughput: latent steps per second of the actor's rollout (horizon 15 from every
  posterior state of the batch), forward only, as the behaviour update runs it;
- PlaNet's CEM latency per action at the paper's planner settings (`benchmarks.planning`);
- environment frames per second (environment steps, action repeat included) of the collection
  path (worker processes, one render after the last action repeat) against one dm_control
  environment stepped and rendered every step in one process, both at default visual quality,
  so both give the same observations.

FLOPs: XLA's cost analysis counts a while-loop body once whatever its trip count, so the update
is costed on a copy of the program whose scans are fully unrolled (`unrolled_flops`); the timed
program is the real, rolled one. `--json` makes the last output line one JSON object.
"""

from __future__ import annotations

if __name__ == "__main__":  # before JAX starts: glibc reads allocator tunables at exec
    from dreamer.runtime import reexec_with_huge_pages

    reexec_with_huge_pages()

import contextlib
import json
import sys
import time
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import command_line, matmul_ceiling_gflops, median_seconds, provenance, write_record
from dreamer.cli import ArgumentParser, run_command
from dreamer.config import Config, build_config
from dreamer.device import DeviceAgent
from dreamer.errors import UserError
from dreamer.registry import agent_class

RESULTS = Path(__file__).resolve().parent / "results"
ENV = "dmc_walker_walk"
ENV_SECONDS = {True: 3.0, False: 20.0}  # how long each environment measurement runs, by --quick


def unrolled_flops(fn, *args) -> float:
    """FLOPs of `fn(*args)` with every `lax.scan` fully unrolled, so each step is counted.

    JAX's caches are cleared first: a trace of `fn` made earlier (the benchmark compiles the
    update before counting) would otherwise be reused with its scans rolled, and each counted
    once (the Dreamer update: 311 instead of 364 GFLOP)."""
    jax.clear_caches()
    scan = jax.lax.scan

    def scan_unrolled(f, init, xs=None, length=None, reverse=False, unroll=1, **kwargs):
        return scan(f, init, xs, length=length, reverse=reverse, unroll=True, **kwargs)

    with mock.patch.object(jax.lax, "scan", scan_unrolled):
        cost = jax.jit(fn).lower(*args).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def env_spec(config: Config) -> tuple[dict, int]:
    """(observation space, action size) of the configured environment (built once, not stepped)."""
    from dreamer.collect import env_factory

    env = env_factory(config, seed=0)()
    try:
        return dict(env.obs_space), env.action_size
    finally:
        env.close()


def fake_batch(obs_space: dict, batch: int, length: int, action_size: int) -> dict:
    """Replay-shaped random data: the update's cost does not depend on the values."""
    rng = np.random.default_rng(0)
    inputs = {key: (rng.integers(0, 256, (batch, length, *shape), dtype=np.uint8) if dtype == np.uint8
                    else rng.normal(size=(batch, length, *shape)).astype(dtype))
              for key, (shape, dtype) in obs_space.items()}
    return jax.device_put({
        **inputs,
        "action": rng.uniform(-1, 1, (batch, length, action_size)).astype(np.float32),
        "reward": rng.normal(size=(batch, length)).astype(np.float32),
        "is_first": np.zeros((batch, length), bool),
        "is_last": np.zeros((batch, length), bool),
        "is_terminal": np.zeros((batch, length), bool),
    })


def measure_update(config: Config, batch_shape: tuple[int, int], repeats: int) -> dict:
    """The Dreamer update as the train loop runs it (jitted, state donated)."""
    obs_space, action_size = env_spec(config)
    agent = agent_class("dreamer")(config, action_size, False, obs_space)
    device = DeviceAgent(agent)
    state = device.init(jax.random.PRNGKey(0))
    batch = fake_batch(obs_space, *batch_shape, action_size)
    start = time.perf_counter()
    compiled = device.update.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    flops = unrolled_flops(agent.update, state, batch)
    state, _, _ = compiled(state, batch)  # warm-up: first-run allocations
    holder = {"state": state}

    def step():
        holder["state"], metrics, _ = compiled(holder["state"], batch)
        return holder["state"], metrics

    seconds = median_seconds(step, repeats)
    return {"update_seconds": seconds, "compile_seconds": compile_seconds, "update_gflop": flops / 1e9,
            "batch": list(batch_shape)}


def measure_imagination(config: Config, starts: int, repeats: int) -> dict:
    """Forward imagination from `starts` states for the behaviour horizon, actor in the loop."""
    obs_space, action_size = env_spec(config)
    agent = agent_class("dreamer")(config, action_size, False, obs_space)
    state = DeviceAgent(agent).init(jax.random.PRNGKey(0))
    start_states = jax.tree.map(lambda x: jnp.repeat(x, starts, 0), agent.wm.rssm.initial(1))
    imagine = jax.jit(lambda actor, wm, start, key: agent.ac.imagine(actor, wm, start, key)["feat"])
    args = (state.agent.actor, state.wm, start_states, jax.random.PRNGKey(1))
    jax.block_until_ready(imagine(*args))
    seconds = median_seconds(lambda: imagine(*args), repeats)
    steps = starts * config.behavior.horizon
    return {"imagine_steps_per_second": steps / seconds, "imagine_seconds": seconds,
            "imagine_starts": starts, "imagine_horizon": config.behavior.horizon}


def measure_cem(presets: list[str], repeats: int) -> dict:
    from benchmarks.planning import measure

    row = measure("paper" if not presets else "+".join(presets), repeats, presets=presets)
    return {"cem_ms_per_action": row["ms_per_action"], "cem_gflop_per_action": row["gflop_per_action"],
            "cem_latent_steps_per_action": row["latent_steps_per_action"]}


def _dmc_baseline_fps(config: Config, seconds: float) -> float:
    """One dm_control environment in this process, physics step and (for images) render every
    step."""
    from dm_control import suite

    from dreamer.envs.dmc import DEFAULT_CAMERAS, parse_dmc_name

    domain, task = parse_dmc_name(config.env.name)
    env = suite.load(domain, task, task_kwargs={"random": 0})
    camera = DEFAULT_CAMERAS.get(domain, 0)
    spec = env.action_spec()
    rng = np.random.default_rng(0)
    env.reset()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step = env.step(rng.uniform(spec.minimum, spec.maximum, spec.shape))
        if config.env.obs != "vector":
            env.physics.render(config.env.size, config.env.size, camera_id=camera)
        steps += 1
        if step.last():
            env.reset()
    return steps / (time.perf_counter() - start)


def _collection_fps(config: Config, seconds: float, num_envs: int) -> float:
    """The train loop's collection path: worker processes, render after the last repeat."""
    from dreamer.collect import Collector, make_vector_env
    from dreamer.collect import random_actions

    envs = make_vector_env(config, seed=0, num_envs=num_envs, parallel=num_envs > 1)
    rng = np.random.default_rng(0)
    try:
        collector = Collector(envs, config.env.action_repeat)
        act = lambda obs: random_actions(rng, envs.num_envs, envs.action_size, envs.discrete)  # noqa: E731
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            steps += collector.step(act)[1]
        return steps / (time.perf_counter() - start)
    finally:
        envs.close()


def measure_env(config: Config, seconds: float, num_envs: int) -> dict:
    config = build_config([], {"env.name": config.env.name, "env.action_repeat": config.env.action_repeat,
                               "env.obs": config.env.obs,
                               "env.fast_render": False})  # default quality: identical observations
    return {"env_fps": _collection_fps(config, seconds, num_envs),
            "env_fps_baseline": _dmc_baseline_fps(config, seconds),
            "env_workers": num_envs, "env_name": config.env.name, "action_repeat": config.env.action_repeat}


def run(presets: list[str], quick: bool, env: str = ENV, batch: tuple[int, int] | None = None) -> dict:
    config = build_config(presets, {"env.name": env})
    accelerator = jax.default_backend() != "cpu"
    batch_shape = batch or ((50, 50) if accelerator else (16, 50))
    repeats = 3 if quick else 10
    ceiling = matmul_ceiling_gflops(sizes=(1024, 2048) if quick else (1024, 2048, 4096))
    result = {"backend": jax.default_backend(), "presets": presets, "quick": quick,
              "roofline_gflops": ceiling, "obs": config.env.obs}
    result.update(measure_update(config, batch_shape, repeats))
    result["update_gflops"] = result["update_gflop"] / result["update_seconds"]
    result["roofline_fraction"] = result["update_gflops"] / ceiling
    result.update(measure_imagination(config, batch_shape[0] * batch_shape[1], repeats))
    result.update(measure_cem(presets, repeats))
    result.update(measure_env(config, seconds=ENV_SECONDS[quick], num_envs=2))
    result["env_speedup"] = result["env_fps"] / result["env_fps_baseline"]
    return result


def to_table(r: dict) -> str:
    rows = [
        ("full update (WM + behaviour), batch " + "x".join(map(str, r["batch"])), f"{r['update_seconds']:.3f} s"),
        ("update FLOPs (scans unrolled)", f"{r['update_gflop']:.1f} GFLOP"),
        ("update throughput", f"{r['update_gflops']:.0f} GFLOP/s = {100 * r['roofline_fraction']:.0f}% "
                              f"of the {r['roofline_gflops']:.0f} GFLOP/s matmul ceiling"),
        ("update compile", f"{r['compile_seconds']:.1f} s"),
        (f"imagination ({r['imagine_starts']} starts x {r['imagine_horizon']} steps)",
         f"{r['imagine_steps_per_second']:,.0f} latent steps/s"),
        (f"PlaNet CEM ({r['cem_latent_steps_per_action']:,} latent steps)",
         f"{r['cem_ms_per_action']:.1f} ms/action ({r['cem_gflop_per_action']:.1f} GFLOP)"),
        (f"collection, {r['env_workers']} workers, {r['env_name']} repeat {r['action_repeat']}",
         f"{r['env_fps']:.0f} env steps/s"),
        ("one dm_control env" + (", render every step" if r.get("obs", "image") != "vector" else ""), f"{r['env_fps_baseline']:.0f} env steps/s "
                                                  f"(collection {r['env_speedup']:.1f}x)"),
    ]
    lines = ["| what | measured |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shorter env runs (a few minutes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--configs", nargs="*", default=[], help="presets (default: the paper's sizes)")
    parser.add_argument("--batch", nargs=2, type=int, metavar=("SEQUENCES", "LENGTH"),
                        help="the timed update's batch (default 16 x 50 on CPU, 50 x 50 on an accelerator)")
    parser.add_argument("--env", default=ENV, help=f"the task whose observations and actions are used (default {ENV})")
    parser.add_argument("--out", type=Path, default=None, help=f"write throughput.json/.md here (e.g. {RESULTS})")
    args = parser.parse_args(argv)
    start = time.time()
    with contextlib.redirect_stdout(open("/dev/null", "w")) if args.json else contextlib.nullcontext():
        if args.batch and min(args.batch) < 1:
            raise UserError(f"--batch takes two positive integers, got {args.batch[0]} {args.batch[1]}")
        result = run(args.configs, args.quick, args.env, tuple(args.batch) if args.batch else None)
    result = {**provenance(command_line("benchmarks.throughput", argv), start), **result}
    table = to_table(result)
    print(table)
    if args.out:
        write_record(args.out, "throughput", "Throughput", result, table)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    # Compile time is measured from scratch: with a persistent compilation cache
    # (JAX_COMPILATION_CACHE_DIR) it would be a disk read. A process-wide setting, so it is made
    # here, before the first compile, and not in `main`, which tests call in their own process.
    jax.config.update("jax_enable_compilation_cache", False)
    sys.exit(run_command(lambda: main() or 0, sys.argv[1:]))

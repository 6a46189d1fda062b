"""PlaNet planning cost: milliseconds and FLOPs per action, and the fraction of the matmul ceiling.

    python -m benchmarks.planning [--presets paper cpu] [--repeats 5] [--out benchmarks/results]

FLOPs come from XLA's cost analysis. XLA counts a while-loop body once, whatever its trip
count, so the planner is costed by parts that contain no loop, each compiled on its own:
  flops/action = filter step + iterations x (candidate sampling and refit
                 + horizon x (one batched latent step + reward head)).
The latency is the wall time of the real jitted policy (one environment, one action).
"""

from __future__ import annotations

if __name__ == "__main__":  # before JAX starts: glibc reads allocator tunables at exec
    from dreamer.runtime import reexec_with_huge_pages

    reexec_with_huge_pages()

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import command_line, matmul_ceiling_gflops, provenance, write_record, xla_flops
from dreamer.cli import ArgumentParser, run_command
from dreamer.config import build_config
from dreamer.device import DeviceAgent
from dreamer.registry import agent_class
from planet.planner import cem, initial_plan  # the pure CEM function, not the agent

PRESETS = {"paper": [], "cpu": ["cpu"]}


def planner_flops(agent, state) -> dict[str, float]:
    cfg, wm, n = agent.config.planet, agent.wm, agent.config.planet.candidates
    latent = agent.wm.rssm.initial(n)
    actions = jnp.zeros((n, agent.action_size))
    key = jax.random.PRNGKey(0)

    def latent_step(latent, actions, key):  # one horizon step for all candidates
        nxt = wm.rssm.img_step(state.wm["rssm"], latent, actions, key)
        return wm.reward(state.wm, wm.rssm.get_feat(nxt))

    def cem_overhead(key):  # one iteration with a free objective: sampling, top-k, refit
        return cem(lambda a, k: -jnp.sum(a, (-2, -1)), key, initial_plan(cfg.horizon, agent.action_size),
                   iterations=1, candidates=n, top_k=cfg.top_k)

    one = agent.wm.rssm.initial(1)
    obs = {"image": jnp.zeros((1, 64, 64, 3), jnp.uint8)}
    first = jnp.ones(1, bool)
    parts = {
        "filter_step": xla_flops(lambda *a: wm.filter_step(state.wm, *a), one, jnp.zeros((1, agent.action_size)),
                                 obs, first, key),
        "latent_step_all_candidates": xla_flops(latent_step, latent, actions, key),
        "cem_iteration_overhead": xla_flops(cem_overhead, key),
    }
    parts["per_action"] = parts["filter_step"] + cfg.iterations * (
        parts["cem_iteration_overhead"] + cfg.horizon * parts["latent_step_all_candidates"])
    return parts


def measure(preset: str, repeats: int, presets: list[str] | None = None) -> dict:
    """Latency and FLOPs per action of the planner of `PRESETS[preset]` (or of `presets`)."""
    presets = PRESETS[preset] if presets is None else presets
    # The planner's cost on images, whatever observations the presets choose.
    config = build_config(presets, {"env.name": "dmc_cartpole_balance", "env.obs": "image"}, agent="planet")
    agent = DeviceAgent(agent_class("planet")(config, action_size=1, discrete=False))
    state = agent.init(jax.random.PRNGKey(0))
    pstate = agent.agent.initial_policy_state(1)
    obs = {"image": jnp.zeros((1, 64, 64, 3), jnp.uint8), "is_first": jnp.zeros(1, bool)}
    start = time.perf_counter()
    action, pstate = agent.policy(state, obs, pstate, jax.random.PRNGKey(0), "train")
    action.block_until_ready()
    compile_s = time.perf_counter() - start
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        action, pstate = agent.policy(state, obs, pstate, jax.random.PRNGKey(i), "train")
        action.block_until_ready()
        times.append(time.perf_counter() - start)
    flops = planner_flops(agent.agent, state)
    cfg = config.planet
    seconds = float(np.median(times))
    return {
        "preset": preset, "horizon": cfg.horizon, "iterations": cfg.iterations,
        "candidates": cfg.candidates, "top_k": cfg.top_k,
        "model": {"deter": config.model.deter, "stoch": config.model.stoch,
                  "hidden": config.model.hidden, "head_units": config.model.head_units},
        "latent_steps_per_action": cfg.iterations * cfg.horizon * cfg.candidates,
        "ms_per_action": 1000 * seconds, "ms_per_action_min": 1000 * min(times),
        "compile_seconds": compile_s, "gflop_per_action": flops["per_action"] / 1e9,
        "gflops_achieved": flops["per_action"] / seconds / 1e9,
        "flops_parts": flops, "repeats": repeats,
    }


def main() -> None:
    parser = ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    start = time.time()
    ceiling = matmul_ceiling_gflops()
    rows = [measure(p, args.repeats) for p in args.presets]
    for row in rows:
        row["roofline_gflops"] = ceiling
        row["roofline_fraction"] = row["gflops_achieved"] / ceiling
    lines = ["| preset | H x iters x candidates | latent steps/action | ms/action | GFLOP/action | GFLOP/s | of ceiling |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['horizon']} x {r['iterations']} x {r['candidates']} | "
                     f"{r['latent_steps_per_action']:,} | {r['ms_per_action']:.1f} | {r['gflop_per_action']:.2f} | "
                     f"{r['gflops_achieved']:.1f} | {100 * r['roofline_fraction']:.0f}% |")
    table = "\n".join(lines)
    print(table)
    print(f"matmul ceiling (float32, XLA, best of 1024-4096 squared): {ceiling:.0f} GFLOP/s")
    record = {**provenance(command_line("benchmarks.planning"), start), "benchmark": "planet_planning",
              "devices": [str(d) for d in jax.devices()], "results": rows}
    write_record(args.out, "planet_planning", "PlaNet planning cost", record,
                 f"matmul ceiling: {ceiling:.0f} GFLOP/s\n\n{table}")

if __name__ == "__main__":
    sys.exit(run_command(lambda: main() or 0, sys.argv[1:]))

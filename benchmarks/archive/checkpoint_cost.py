"""What a checkpoint of the train state costs: this library's msgpack checkpoints against
orbax-checkpoint's CheckpointManager (synchronous and asynchronous saves), on one state.

    python -m benchmarks.archive.checkpoint_cost [--agent dreamer] [--configs PRESET ...] [--repeats 5]

For each method: the seconds the training loop is blocked per save (for an asynchronous save,
until `save` returns; the write goes on in a thread) and the seconds until the checkpoint is
durable on disk, median over `--repeats` saves into a fresh directory. Writes
benchmarks/results/checkpoint_cost.{json,md}.
"""

from __future__ import annotations

import sys
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import git_commit, machine
from dreamer import checkpoint
from dreamer.cli import ArgumentParser, run_command
from dreamer.config import build_config
from dreamer.registry import agent_class


def state_of(agent_name: str, presets: list[str]):
    config = build_config(presets, agent=agent_name)
    agent = agent_class(agent_name)(config, action_size=6, discrete=False)
    return jax.device_get(jax.jit(agent.initial_state)(jax.random.PRNGKey(0)))


def time_msgpack(state, repeats: int) -> dict:
    blocked = []
    with tempfile.TemporaryDirectory() as root:
        for step in range(repeats):
            start = time.perf_counter()
            checkpoint.save(Path(root), state, {"step": step}, keep=3)  # fsynced when it returns
            blocked.append(time.perf_counter() - start)
    return {"blocked_seconds": float(np.median(blocked)), "durable_seconds": float(np.median(blocked))}


def time_orbax(state, repeats: int, asynchronous: bool) -> dict:
    import orbax.checkpoint as ocp

    blocked, durable = [], []
    with tempfile.TemporaryDirectory() as root:
        options = ocp.CheckpointManagerOptions(max_to_keep=3, enable_async_checkpointing=asynchronous)
        with ocp.CheckpointManager(Path(root) / "ckpt", options=options) as manager:
            for step in range(repeats):
                start = time.perf_counter()
                manager.save(step, args=ocp.args.StandardSave(state))
                blocked.append(time.perf_counter() - start)
                manager.wait_until_finished()
                durable.append(time.perf_counter() - start)
    return {"blocked_seconds": float(np.median(blocked)), "durable_seconds": float(np.median(durable))}


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="dreamer")
    parser.add_argument("--configs", nargs="*", default=[])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    state = state_of(args.agent, args.configs)
    size = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(state))
    rows = {"msgpack (this library)": time_msgpack(state, args.repeats),
            "orbax, synchronous": time_orbax(state, args.repeats, asynchronous=False),
            "orbax, asynchronous": time_orbax(state, args.repeats, asynchronous=True)}
    command = "python -m benchmarks.archive.checkpoint_cost " + " ".join(
        [f"--agent {args.agent}"] + ([f"--configs {' '.join(args.configs)}"] if args.configs else []))
    record = {"benchmark": "checkpoint_cost", "command": command, "commit": git_commit(),
              "machine": machine(), "agent": args.agent, "presets": args.configs,
              "state_megabytes": size / 2**20, "repeats": args.repeats, "results": rows}
    lines = ["| method | loop blocked per save (s) | until durable (s) |", "| --- | --- | --- |"]
    lines += [f"| {name} | {r['blocked_seconds']:.3f} | {r['durable_seconds']:.3f} |" for name, r in rows.items()]
    table = "\n".join(lines)
    print(f"train state: {size / 2**20:.1f} MiB\n{table}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "checkpoint_cost.json").write_text(json.dumps(record, indent=1))
    (args.out / "checkpoint_cost.md").write_text(
        f"# Checkpoint cost\n\n- command: `{command}`\n- commit: `{record['commit']}`\n"
        f"- machine: {record['machine']}\n- train state: {size / 2**20:.1f} MiB "
        f"({args.agent}, presets: {args.configs or 'none, the paper sizes'}), median of "
        f"{args.repeats} saves\n\n{table}\n")


if __name__ == "__main__":
    sys.exit(run_command(lambda: main() or 0, sys.argv[1:]))

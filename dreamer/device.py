"""The agent on its devices: `DeviceAgent` is the one place that jits an agent's pure
functions and places its state and batches on devices; the training loop, evaluation and the
benchmarks talk to it, and agents never know how many devices there are.

Data parallelism over local devices with JAX sharding: one device mesh axis, 'data': the replayed batch is split along its first (sequence) axis,
parameters, optimizer states and keys are replicated, and XLA inserts the gradient all-reduce
when it partitions the one jitted update. With one device every function here is the identity,
so single- and multi-device runs take the same code path.

Multi-host: start the same command on every host with JAX_COORDINATOR_ADDRESS (host:port of
process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID set; `join_hosts` connects them before any
device is used, `jax.devices()` then lists the devices of all hosts, and `--devices` may name
all of them (see the README). Each host acts, evaluates and checkpoints on its own copy of the
replicated state (`local`); only the update runs across hosts.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dreamer.errors import ConfigError


COORDINATION_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def join_hosts() -> None:
    """Join a multi-host run if the coordination variables are set (all three, or none).
    CPU hosts all-reduce through gloo."""
    values = {name: os.environ.get(name) for name in COORDINATION_VARIABLES}
    if not any(values.values()):
        return
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ConfigError(f"a multi-host run needs {', '.join(COORDINATION_VARIABLES)}; "
                          f"{', '.join(missing)} not set")
    try:
        processes, index = int(values["JAX_NUM_PROCESSES"]), int(values["JAX_PROCESS_ID"])
    except ValueError:
        raise ConfigError("JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers") from None
    if not 0 <= index < processes:
        raise ConfigError(f"JAX_PROCESS_ID {index} is not in [0, JAX_NUM_PROCESSES={processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(values["JAX_COORDINATOR_ADDRESS"], processes, index)


class DataParallel:
    """Places the train state (replicated) and batches (split over 'data') on `num_devices`."""

    def __init__(self, num_devices: int, batch_size: int):
        available = jax.devices()
        if num_devices > len(available):
            hint = (" (on CPU, set XLA_FLAGS=--xla_force_host_platform_device_count="
                    f"{num_devices} to split it into virtual devices)") if available[0].platform == "cpu" else ""
            raise ConfigError(f"--devices {num_devices} asks for more devices than the "
                              f"{len(available)} JAX sees{hint}")
        if batch_size * jax.process_count() % num_devices:
            raise ConfigError(f"run.batch_size {batch_size} is not divisible by --devices {num_devices}; "
                              "choose a batch size that is a multiple of the device count")
        self.num_devices = num_devices
        self.mesh = Mesh(np.array(available[:num_devices]), ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.split = NamedSharding(self.mesh, PartitionSpec("data"))

    def replicate(self, tree: Any) -> Any:
        """Every device holds a full copy (every host computes the same initial state); leaves
        already replicated stay as they are."""
        if self.num_devices == 1:
            return tree

        def place(x):
            if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(self.replicated, x.ndim):
                return x
            if jax.process_count() == 1:
                return jax.device_put(x, self.replicated)
            return jax.make_array_from_callback(x.shape, self.replicated, lambda index: np.asarray(x)[index])
        return jax.tree.map(place, tree)

    def local(self, tree: Any) -> Any:
        """This host's copy of a replicated tree (each leaf's local shard): what the host acts,
        evaluates and checkpoints with. With one process, the tree itself."""
        if jax.process_count() == 1:
            return tree
        return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)

    def shard_batch(self, batch: dict) -> dict:
        """Batch arrays [B, T, ...] -> each device holds B / num_devices sequences. With several
        hosts, each host's replay gives its own B sequences of a global batch of hosts x B."""
        if self.num_devices == 1:
            return batch
        if jax.process_count() == 1:
            return jax.device_put(batch, self.split)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.split, x), batch)

    def host_rows(self, tree: Any) -> Any:
        """This host's sequences of arrays split like the batch (`constrain_rows`), as NumPy
        arrays [B, ...] in the order of the host's batch."""
        if jax.process_count() == 1:
            return jax.device_get(tree)

        def rows(x):
            shards = sorted(x.addressable_shards, key=lambda shard: shard.index[0].start or 0)
            return np.concatenate([np.asarray(shard.data) for shard in shards])
        return jax.tree.map(rows, tree)

    def constrain_rows(self, tree: Any) -> Any:
        """Inside jit: arrays [B, ...] split over the devices as the batch is."""
        if self.num_devices == 1:
            return tree
        return jax.lax.with_sharding_constraint(tree, self.split)

    def constrain_state(self, tree: Any) -> Any:
        """Inside jit: keep the updated state replicated, so its sharding never changes
        between updates (which would retrace the update)."""
        if self.num_devices == 1:
            return tree
        return jax.lax.with_sharding_constraint(tree, self.replicated)


class DeviceAgent:
    """An agent (`dreamer.base_agent.WorldModelAgent` or any object with its pure methods) as
    the loop runs it: jitted, its train state replicated over `devices` devices and each batch
    split over them. Everything here is placement and compilation; the agent stays pure.

        state = device.init(key)                          # replicated train state
        state = device.restore(host_tree)                 # a checkpoint's arrays, replicated
        state, metrics, entries = device.update(state, batch)   # jitted `agent.update`, state donated
        action, pstate = device.policy(state, obs, pstate, key, mode)   # jitted `agent.act`
        videos = device.report(state, batch)              # jitted `agent.report`
        state = device.on_env_steps(state, env_steps)     # host side, after collection
        device.local(tree), device.shard(batch)           # this host's copy; a placed batch
        device.host_rows(entries)                         # this host's rows of update outputs
    """

    def __init__(self, agent, devices: int = 1):
        self.agent = agent
        self.placement = DataParallel(devices, agent.config.run.batch_size)
        self.update = jax.jit(self._constrained(agent.update), donate_argnums=0)
        self.policy = jax.jit(agent.act, static_argnames="mode")
        self._report = jax.jit(agent.report)
        self._init = jax.jit(agent.initial_state)  # one compiled init instead of many eager ops

    def _constrained(self, update: Callable) -> Callable:
        def constrained(state, batch):
            new_state, metrics, entries = update(state, batch)
            return (self.placement.constrain_state(new_state), metrics,
                    self.placement.constrain_rows(entries))
        return constrained

    @property
    def num_devices(self) -> int:
        return self.placement.num_devices

    def init(self, key: jax.Array) -> Any:
        return self.placement.replicate(self._init(key))

    def restore(self, tree: Any) -> Any:
        """A train state read from a checkpoint (host arrays), on the devices."""
        return self.placement.replicate(jax.device_put(tree))

    def report(self, state: Any, batch: dict) -> dict:
        return self._report(self.local(state), batch)

    def on_env_steps(self, state: Any, env_steps: int) -> Any:
        new = self.agent.on_env_steps(state, env_steps)
        return state if new is state else self.placement.replicate(new)

    def local(self, tree: Any) -> Any:
        return self.placement.local(tree)

    def host_rows(self, tree: Any) -> Any:
        return self.placement.host_rows(tree)

    def shard(self, batch: dict) -> dict:
        """A host batch [B, T, ...] on the devices, split over them; with one device sent to
        it, so that the next batch is prepared while an update runs."""
        if self.num_devices == 1:
            return jax.device_put(batch)
        return self.placement.shard_batch(batch)

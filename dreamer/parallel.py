"""Data-parallel training over local devices with JAX sharding.

One device mesh axis, 'data': the replayed batch is split along its first (sequence) axis,
parameters, optimizer states and keys are replicated, and XLA inserts the gradient all-reduce
when it partitions the one jitted update. With one device every function here is the identity,
so single- and multi-device runs take the same code path.

Multi-host: start the same command on every host after `jax.distributed.initialize()` (or set
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID); `jax.devices()` then lists the
devices of all hosts and `--devices` may name all of them (see the README).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dreamer.errors import ConfigError


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
            raise ConfigError(f"train.batch_size {batch_size} is not divisible by --devices {num_devices}; "
                              "choose a batch size that is a multiple of the device count")
        self.num_devices = num_devices
        self.mesh = Mesh(np.array(available[:num_devices]), ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.split = NamedSharding(self.mesh, PartitionSpec("data"))

    def replicate(self, tree: Any) -> Any:
        """Every device holds a full copy (every host computes the same initial state)."""
        if self.num_devices == 1:
            return tree
        if jax.process_count() == 1:
            return jax.device_put(tree, self.replicated)
        return jax.tree.map(lambda x: jax.make_array_from_callback(
            x.shape, self.replicated, lambda index: np.asarray(x)[index]), tree)

    def shard_batch(self, batch: dict) -> dict:
        """Batch arrays [B, T, ...] -> each device holds B / num_devices sequences. With several
        hosts, each host's replay gives its own B sequences of a global batch of hosts x B."""
        if self.num_devices == 1:
            return batch
        if jax.process_count() == 1:
            return jax.device_put(batch, self.split)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.split, x), batch)

    def constrain_state(self, tree: Any) -> Any:
        """Inside jit: keep the updated state replicated, so its sharding never changes
        between updates (which would retrace the update)."""
        if self.num_devices == 1:
            return tree
        return jax.lax.with_sharding_constraint(tree, self.replicated)

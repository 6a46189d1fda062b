"""Multi-host data parallelism, for real: two processes on this machine, each a host with its
own CPU device, coordinated through `jax.distributed` on a localhost port (gloo collectives),
train one run with `--devices 2`. Each collects its own data into its own logdir; the
gradient all-reduce must leave both with bit-identical train states."""

from __future__ import annotations

import pytest

import hashlib
import os
import socket
import subprocess
import sys

from dreamer import checkpoint
from tests.support import ROOT

pytestmark = pytest.mark.e2e  # two host processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_hosts_train_one_model_on_their_own_data(tmp_path):
    port, hosts = free_port(), []
    for index in range(2):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
               "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(index)}
        command = [sys.executable, "-m", "dreamer.train", "--env", "dmc_cartpole_balance", "--configs", "debug",
                   "--steps", "1500", "--devices", "2", "--run.video_every", "0",
                   "--run.checkpoint_minutes", "0", "--run.checkpoint_every", "500",
                   "--logdir", str(tmp_path / f"host{index}")]
        hosts.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        outputs = [host.communicate(timeout=400) for host in hosts]
    finally:
        for host in hosts:  # never leave a host waiting for its peer
            host.kill()
            host.wait()
    for host, (_, err) in zip(hosts, outputs):
        assert host.returncode == 0, err[-3000:]
    saved = [checkpoint.find_latest(tmp_path / f"host{i}" / "checkpoints").checkpoint.host for i in range(2)]
    assert saved[0]["step"] == saved[1]["step"] == 1500
    assert saved[0]["scheduled_updates"] == saved[1]["scheduled_updates"] > 0
    assert saved[0]["digest"] == saved[1]["digest"]  # the same parameters, optimizer states and key

    def replay_digest(index: int) -> str:
        files = sorted((tmp_path / f"host{index}" / "replay").glob("*.npz"))
        return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()

    assert replay_digest(0) != replay_digest(1)  # ... although each host trained on its own data

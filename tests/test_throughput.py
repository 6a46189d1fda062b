"""The throughput benchmark's FLOP counting and its JSON interface."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest

from benchmarks import throughput


def test_unrolled_flops_counts_every_scan_step():
    n, steps = 64, 10
    w = jnp.ones((n, n))

    def loop(x):
        return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=steps)[0]

    one_step = 2 * n ** 3  # one [n, n] @ [n, n] matmul
    assert throughput.unrolled_flops(loop, jnp.ones((n, n))) == pytest.approx(steps * one_step, rel=0.01)


def test_quick_json_has_the_documented_keys(capsys, monkeypatch):
    # Tiny everything: the debug preset, short environment runs, a small ceiling measurement.
    monkeypatch.setattr(throughput, "ENV_SECONDS", {True: 0.5, False: 20.0})
    throughput.main(["--quick", "--configs", "debug", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("update_seconds", "update_gflop", "roofline_gflops", "roofline_fraction", "compile_seconds",
                "imagine_steps_per_second", "cem_ms_per_action", "env_fps", "env_fps_baseline"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["update_gflop"] > 1.0  # the scans are counted step by step

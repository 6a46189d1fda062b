"""The throughput benchmark's FLOP counting and its JSON interface; the convolution-path table."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest

from benchmarks import throughput
from tests.support import placed


def test_unrolled_flops_counts_every_scan_step():
    n, steps = 64, 10
    w = jnp.ones((n, n))

    def loop(x):
        return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=steps)[0]

    one_step = 2 * n ** 3  # one [n, n] @ [n, n] matmul
    assert throughput.unrolled_flops(loop, jnp.ones((n, n))) == pytest.approx(steps * one_step, rel=0.01)


def test_unrolled_flops_are_not_taken_from_an_earlier_trace():
    # The benchmark compiles the update (scans rolled) before counting its FLOPs; a trace cached
    # then must not stand in for the unrolled one (it did: 311 instead of 364 GFLOP).
    from dreamer.agent import Dreamer
    from dreamer.config import build_config

    config = build_config(["debug"], {"env.name": "dmc_walker_walk"})
    agent = Dreamer(config, 6, discrete=False)
    state = placed(agent).init(jax.random.PRNGKey(0))
    batch = throughput.fake_batch(agent.obs_space, 2, 8, 6)
    fresh = throughput.unrolled_flops(agent.update, state, batch)
    placed(agent).update.lower(state, batch)
    assert throughput.unrolled_flops(agent.update, state, batch) == fresh


@pytest.mark.e2e  # the whole benchmark, on MuJoCo
def test_quick_json_has_the_documented_keys(capsys, monkeypatch):
    # Tiny everything: the debug preset, short environment runs, a small ceiling measurement.
    monkeypatch.setattr(throughput, "ENV_SECONDS", {True: 0.5, False: 20.0})
    throughput.main(["--quick", "--configs", "debug", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("update_seconds", "update_gflop", "roofline_gflops", "roofline_fraction", "compile_seconds",
                "imagine_steps_per_second", "cem_ms_per_action", "env_fps", "env_fps_baseline"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["update_gflop"] > 1.0  # the scans are counted step by step


def test_conv_paths_prints_a_row_per_convolution_with_its_xla_path(capsys, monkeypatch):
    from benchmarks.archive import conv_paths

    shapes = {"a 5x5 convolution": (5, 4, 2, 3), "another": (4, 3, 3, 2)}
    monkeypatch.setattr(conv_paths, "SHAPES", shapes)
    conv_paths.main(["--batch", "2", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0][2:] for row in rows[1:]] == list(shapes)
    for row in rows[1:]:
        cells = row.strip("| ").split(" | ")
        assert len(cells) == 2 + len(conv_paths.METHODS) and cells[-1] in ("ynn", "eigen")
        assert all(len(cell.split(" / ")) == 3 for cell in cells[1:-1])


def test_a_non_positive_batch_is_refused_before_anything_runs():
    from dreamer.errors import UserError

    with pytest.raises(UserError, match="--batch takes two positive integers, got 0 5"):
        throughput.main(["--batch", "0", "5"])

"""Learning tests (about an hour each on 2 CPU cores): `pytest -m slow`.

Each trains with the `cpu` preset on cartpole balance and asserts that the best evaluation
return reaches 1.5x the uniform random policy's return measured on the same settings.
"""

import numpy as np
import pytest

from benchmarks.record_run import random_policy_returns
from dreamer.config import build_config
from dreamer.logger import read_metrics
from tests.support import run_train


@pytest.mark.slow
@pytest.mark.timeout(2 * 3600)
@pytest.mark.parametrize("agent", ["dreamer", "planet"])
def test_cpu_preset_learns_cartpole_balance(tmp_path, agent):
    logdir = tmp_path / agent
    result = run_train("--env", "dmc_cartpole_balance", "--agent", agent, "--configs", "cpu",
                       "--logdir", str(logdir), timeout=2 * 3600)
    assert result.returncode == 0, result.stderr[-3000:]
    best = max(m["eval/return"] for m in read_metrics(logdir) if "eval/return" in m)
    config = build_config(["cpu"], {"env.name": "dmc_cartpole_balance"}, agent=agent)
    random_return = float(np.mean(random_policy_returns(config, 10)))
    assert best >= 1.5 * random_return, (best, random_return)

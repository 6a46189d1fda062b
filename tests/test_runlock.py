"""One training process per logdir: the lock, a refused second start, kill -9 then a rerun,
and reading a live run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dreamer import evaluate, train
from dreamer.errors import UserError
from dreamer.runlock import LOCK_FILE, RunLock, live_holder

from tests.support import ROOT

try:  # tests/ is on sys.path under pytest's default (prepend) import mode
    import fake_envs
except ImportError:  # tests/ is a package
    from tests import fake_envs

RUN = ['--env', f'gym:{fake_envs.__name__}:FakeDict-v0', '--env.obs', 'vector', '--configs', 'debug',
       '--env.time_limit', '100', '--steps', '1000']


def hold_lock(logdir: Path) -> subprocess.Popen:
    """Another process that holds `logdir`'s lock until it is killed."""
    code = ('import sys, time; from dreamer.runlock import RunLock; lock = RunLock(sys.argv[1]); '
            'print("held", flush=True); time.sleep(600)')
    process = subprocess.Popen([sys.executable, '-c', code, str(logdir)], cwd=ROOT, stdout=subprocess.PIPE,
                               env={**os.environ, 'PYTHONPATH': str(ROOT)}, text=True)
    assert process.stdout.readline().strip() == 'held'
    return process


def snapshot(directory: Path) -> list:
    return sorted((str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob('*'))


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp('lock') / 'run'
    assert train.main([*RUN, '--logdir', str(logdir)]) == 0
    return logdir


def test_a_clean_end_leaves_an_empty_unheld_lock(finished_run, capsys):
    assert (finished_run / LOCK_FILE).read_text() == '' and live_holder(finished_run) is None
    RunLock(finished_run).release()
    assert 'taking over' not in capsys.readouterr().err


def test_a_second_start_on_a_live_run_is_one_line_and_changes_nothing(finished_run, capsys):
    holder = hold_lock(finished_run)
    try:
        before = snapshot(finished_run)
        capsys.readouterr()
        assert train.main([*RUN, '--steps', '2000', '--logdir', str(finished_run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error:'), err
        assert f'process {holder.pid} on host {socket.gethostname()} is training it' in err[0]
        assert snapshot(finished_run) == before
        # Reading a live run works, and says it is live.
        assert evaluate.main(['--logdir', str(finished_run), '--episodes', '1']) == 0
        assert f"is live (process {holder.pid} on host" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    # kill -9: the kernel released the lock. A start refused for its config leaves the dead
    # holder's record as it was; the next good start takes the lock over, saying whose it was.
    record = (finished_run / LOCK_FILE).read_text()
    assert record.startswith(f'{holder.pid} ')
    assert train.main([*RUN, '--model.deter', '64', '--logdir', str(finished_run)]) == 2
    assert (finished_run / LOCK_FILE).read_text() == record
    assert train.main([*RUN, '--steps', '1500', '--logdir', str(finished_run)]) == 0
    err = capsys.readouterr().err
    assert f'taking over the lock of process {holder.pid}' in err and 'resuming from' in err


def test_a_failed_start_in_a_new_logdir_leaves_nothing(tmp_path, capsys):
    """The environment fails after the lock was taken: the lock file and the new dirs go."""
    logdir = tmp_path / 'new' / 'run'
    args = ['--env', f'gym:{fake_envs.__name__}:FakeText-v0', '--env.obs', 'vector', '--configs', 'debug']
    assert train.main([*args, '--logdir', str(logdir)]) == 2
    assert "no encoder" in capsys.readouterr().err
    assert not (tmp_path / 'new').exists()


def test_a_lock_that_cannot_be_created_is_one_error(tmp_path):
    not_a_dir = tmp_path / 'file'
    not_a_dir.write_text('x')
    with pytest.raises(UserError, match="cannot create the run's lock"):
        RunLock(not_a_dir)
    assert not_a_dir.read_text() == 'x'


def test_two_locks_in_one_process_conflict_too(tmp_path):
    first = RunLock(tmp_path)
    try:
        with pytest.raises(UserError, match=f"process {os.getpid()} on host"):
            RunLock(tmp_path)
        assert live_holder(tmp_path) == f'process {os.getpid()} on host {socket.gethostname()}'
    finally:
        first.release()
    assert live_holder(tmp_path) is None

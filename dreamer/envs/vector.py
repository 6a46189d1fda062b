"""A batch of environments with auto-reset, stepped in-process or in worker processes."""

from __future__ import annotations

import multiprocessing as mp
import pickle  # only for PicklingError: spawn pickles env_fns for the worker
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from dreamer.envs.base import Env, Obs, space_from_key, space_key
from dreamer.errors import EnvError, UserError


def env_spec(env: Env) -> tuple[int, bool, tuple]:
    """(action_size, discrete, observation space as `space_key`): what every env of a
    VectorEnv must agree on, in a form that crosses a pipe."""
    return env.action_size, env.discrete, space_key(env.obs_space)


class _LocalEnv:
    """Runs env calls in this process; same call/result interface as `_ProcessEnv`."""

    def __init__(self, env_fn: Callable[[], Env]):
        self.env = env_fn()
        self._result: Any = None

    def spec(self) -> tuple[int, bool, tuple]:
        return env_spec(self.env)

    def call(self, method: str, *args: Any) -> None:
        self._error: Exception | None = None
        try:
            self._result = getattr(self.env, method)(*args)
        except Exception as error:  # pylint: disable=broad-except
            self._error = error  # raised by result(), as a worker's error would be

    def result(self) -> Any:
        if getattr(self, '_error', None) is not None:
            error, self._error = self._error, None
            raise error
        return self._result

    def close(self) -> None:
        self.env.close()


def _worker(conn: Any, env_fn: Callable[[], Env]) -> None:
    """Worker loop: receives (method, args), replies ('ok', result) or ('error', exc, tb)."""
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group: the parent finishes its
    # step and saves a checkpoint, then closes the workers; a dead parent means EOF here.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    env = None
    try:
        env = env_fn()
        conn.send(('ok', env_spec(env)))
        while True:
            method, args = conn.recv()
            if method == 'close':
                break
            conn.send(('ok', getattr(env, method)(*args)))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass  # the parent has gone away
    except Exception as error:  # pylint: disable=broad-except
        _send_error(conn, error, traceback.format_exc())
    finally:
        _close_quietly(env)
        conn.close()


def _close_quietly(env: Env | None) -> None:
    """Closes `env`, ignoring errors (used while shutting down)."""
    try:
        if env is not None:
            env.close()
    except Exception:  # pylint: disable=broad-except
        pass


def _send_error(conn: Any, error: Exception, trace: str) -> None:
    """Sends the error as plain strings (no exception objects cross the pipe); a UserError
    keeps its class name so the parent can re-raise it as the same kind of error."""
    kind = type(error).__name__ if isinstance(error, UserError) else 'other'
    try:
        conn.send(('error', (kind, type(error).__name__, str(error)), trace))
    except (EOFError, BrokenPipeError):
        pass


class WorkerError(RuntimeError):
    """An exception raised inside an environment worker, as its class name and message."""

    def __init__(self, name: str, text: str, message: str):
        super().__init__(message)
        self.summary = f'{name}: {text}'


class _ProcessEnv:
    """An env living in a daemon 'spawn' worker process, talked to through a pipe."""

    def __init__(self, env_fn: Callable[[], Env], index: int):
        ctx = mp.get_context('spawn')
        self.index = index
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_worker, args=(child, env_fn), daemon=True,
                                    name=f'env-worker-{index}')
        try:
            self._process.start()
        except (pickle.PicklingError, AttributeError, TypeError) as error:
            raise TypeError('VectorEnv(parallel=True) needs picklable env_fns, e.g. '
                            f'functools.partial(make_env, name, seed=...): {error}') from error
        finally:
            child.close()  # the worker sees EOF if this process dies
        self._alive = True

    def spec(self) -> tuple[int, bool, tuple]:
        return self.result()

    def call(self, method: str, *args: Any) -> None:
        self._conn.send((method, args))

    def result(self) -> Any:
        try:
            message = self._conn.recv()
        except (EOFError, ConnectionResetError) as error:
            self._alive = False
            raise RuntimeError(f'environment worker {self.index} died (exit code '
                               f'{self._process.exitcode}); see its output above') from error
        if message[0] == 'ok':
            return message[1]
        self._alive = False
        _, (kind, name, text), trace = message
        user_errors = {cls.__name__: cls for cls in (UserError, *UserError.__subclasses__())}
        if kind in user_errors:
            raise user_errors[kind](text)
        raise WorkerError(name, text, f'environment worker {self.index} raised {name}: '
                                      f'{text}\n--- worker traceback ---\n{trace}')

    def close(self) -> None:
        if self._alive:
            try:
                self._conn.send(('close', ()))
            except (BrokenPipeError, OSError):
                pass
        self._alive = False
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=1)
        self._conn.close()


def _gather(fetches: list[Callable[[], Any]]) -> list[Any]:
    """Calls every fetch (draining all pipes), then re-raises the first error."""
    results, first_error = [], None
    for fetch in fetches:
        try:
            results.append(fetch())
        except Exception as error:  # pylint: disable=broad-except
            first_error = first_error or error
            results.append(None)
    if first_error is not None:
        raise first_error
    return results


class VectorEnv:
    """N environments stepped together, with automatic resets.

    The first `step` resets every env (actions ignored); afterwards an env whose
    last observation had is_last=True is reset instead of stepped. With
    `parallel=True` each env runs in its own process (env_fns must pickle).
    """

    def __init__(self, env_fns: list[Callable[[], Env]], parallel: bool = False,
                 max_restarts: int = 0):
        if not env_fns:
            raise ValueError('VectorEnv needs at least one env_fn')
        self.parallel = parallel
        self._env_fns = list(env_fns)
        self.max_restarts = max_restarts  # consecutive failures of one env before giving up
        self._failures = [0] * len(env_fns)
        self.restarts = 0  # total, for logging
        self._envs: list[Any] = []
        try:
            for index, env_fn in enumerate(env_fns):
                self._envs.append(self._start(index))
            specs = _gather([env.spec for env in self._envs])
        except BaseException:
            self.close()
            raise
        if len(set(specs)) != 1:
            self.close()
            raise ValueError('VectorEnv envs differ in (action_size, discrete, observation space): '
                             f'{specs}')
        self.action_size, self.discrete, space = specs[0]
        self.obs_space = space_from_key(space)  # the named inputs: key -> (shape, dtype)
        self.num_envs = len(self._envs)
        self._needs_reset = np.ones(self.num_envs, bool)  # [N]

    def _start(self, index: int) -> Any:
        fn = self._env_fns[index]
        return _ProcessEnv(fn, index) if self.parallel else _LocalEnv(fn)

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """actions float32 [N, A] -> obs dict of stacked arrays, e.g. image uint8 [N, H, W, 3].

        With `max_restarts > 0`, an env that raises (other than a UserError) is closed,
        recreated and reset: its observation is then an episode start, so the episode in
        progress is dropped by the collector, and training goes on with a warning. After more
        than `max_restarts` failures of one env without a completed episode in between, an
        EnvError stops the run.
        """
        actions = np.asarray(actions, np.float32)
        if actions.shape != (self.num_envs, self.action_size):
            raise ValueError(f'expected actions of shape {(self.num_envs, self.action_size)}, '
                             f'got {actions.shape}')
        for env, reset, action in zip(self._envs, self._needs_reset, actions):
            if reset:
                env.call('reset')
            else:
                env.call('step', action)
        if self.max_restarts == 0:
            obs: list[Obs] = _gather([env.result for env in self._envs])
        else:
            obs = [self._result_or_restart(index) for index in range(self.num_envs)]
        self._needs_reset = np.array([o['is_last'] for o in obs], bool)
        return {key: np.stack([o[key] for o in obs]) for key in obs[0]}

    def _result_or_restart(self, index: int) -> Obs:
        while True:
            try:
                obs = self._envs[index].result()
                if obs['is_last']:  # a completed episode: the env works again
                    self._failures[index] = 0
                return obs
            except UserError:
                raise
            except Exception as error:  # pylint: disable=broad-except
                self._failures[index] += 1
                summary = getattr(error, 'summary', None) or f'{type(error).__name__}: {error}'
                summary = summary.splitlines()[0] if summary else type(error).__name__
                if self._failures[index] > self.max_restarts:
                    raise EnvError(f'environment {index} failed {self._failures[index]} times in a row '
                                   f'(last: {summary}); fix the environment or raise env.max_restarts') from None
                print(f'warning: environment {index} raised {summary}; dropped its episode and restarted '
                      f'it ({self._failures[index]}/{self.max_restarts})', file=sys.stderr)
                self.restarts += 1
                _close_quietly(self._envs[index])
                self._envs[index] = self._start(index)
                self._envs[index].spec()  # a worker first reports its spec
                self._envs[index].call('reset')

    def physics_state(self) -> np.ndarray:
        """Stacked `physics_state()` of every env: [N, D]."""
        for env in self._envs:
            env.call('physics_state')
        return np.stack(_gather([env.result for env in self._envs]))

    def close(self) -> None:
        """Closes every env (and stops the workers)."""
        envs, self._envs = self._envs, []
        for env in envs:
            try:
                env.close()
            except Exception:  # pylint: disable=broad-except
                pass

    def __enter__(self) -> VectorEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


"""A batch of environments with auto-reset, stepped in-process or in worker processes."""

from __future__ import annotations

import multiprocessing as mp
import pickle  # only for PicklingError: spawn pickles env_fns for the worker
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from dreamer.envs.base import Env, Obs
from dreamer.errors import UserError


class _LocalEnv:
    """Runs env calls in this process; same call/result interface as `_ProcessEnv`."""

    def __init__(self, env_fn: Callable[[], Env]):
        self.env = env_fn()
        self._result: Any = None

    def spec(self) -> tuple[int, bool, tuple[int, ...]]:
        return self.env.action_size, self.env.discrete, tuple(self.env.obs_shape)

    def call(self, method: str, *args: Any) -> None:
        self._result = getattr(self.env, method)(*args)

    def result(self) -> Any:
        return self._result

    def close(self) -> None:
        self.env.close()


def _worker(conn: Any, env_fn: Callable[[], Env]) -> None:
    """Worker loop: receives (method, args), replies ('ok', result) or ('error', exc, tb)."""
    env = None
    try:
        env = env_fn()
        conn.send(('ok', (env.action_size, env.discrete, tuple(env.obs_shape))))
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

    def spec(self) -> tuple[int, bool, tuple[int, ...]]:
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
        raise RuntimeError(f'environment worker {self.index} raised {name}: '
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

    def __init__(self, env_fns: list[Callable[[], Env]], parallel: bool = False):
        if not env_fns:
            raise ValueError('VectorEnv needs at least one env_fn')
        self.parallel = parallel
        self._envs: list[Any] = []
        try:
            for index, env_fn in enumerate(env_fns):
                self._envs.append(_ProcessEnv(env_fn, index) if parallel else _LocalEnv(env_fn))
            specs = _gather([env.spec for env in self._envs])
        except BaseException:
            self.close()
            raise
        if len(set(specs)) != 1:
            self.close()
            raise ValueError('VectorEnv envs differ in (action_size, discrete, obs_shape): '
                             f'{specs}')
        self.action_size, self.discrete, self.obs_shape = specs[0]
        self.num_envs = len(self._envs)
        self._needs_reset = np.ones(self.num_envs, bool)  # [N]

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """actions float32 [N, A] -> obs dict of stacked arrays, e.g. image uint8 [N, H, W, 3]."""
        actions = np.asarray(actions, np.float32)
        if actions.shape != (self.num_envs, self.action_size):
            raise ValueError(f'expected actions of shape {(self.num_envs, self.action_size)}, '
                             f'got {actions.shape}')
        for env, reset, action in zip(self._envs, self._needs_reset, actions):
            if reset:
                env.call('reset')
            else:
                env.call('step', action)
        obs: list[Obs] = _gather([env.result for env in self._envs])
        self._needs_reset = np.array([o['is_last'] for o in obs], bool)
        return {key: np.stack([o[key] for o in obs]) for key in obs[0]}

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


"""Ray glue: a cluster to render on (a local one started here, or one joined), one
worker actor per GPU or per few CPUs (each loads the weights once and renders chunk
after chunk), and the loop that hands out chunks, retries them and keeps them.

Ray restarts a worker whose process dies and runs its chunk again (``RESTARTS``); a
chunk whose own code fails is tried ``RESTARTS`` more times, then the job stops with
that chunk's message. The local cluster listens on 127.0.0.1 only and has no dashboard;
Ray's token authentication is left as the cluster has it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from .chunks import ChunkError, Job, Worker
from .plan import Chunk
from .source import VideoError

__all__ = ["ClusterError", "connect", "start_local", "held_signals", "workers", "render_chunks", "RESTARTS"]

log = logging.getLogger("vsdsfn")

#: how often a worker process may die (and be restarted) and a chunk be tried again
RESTARTS = 3
#: how long the cluster's address may take to accept a connection
CONNECT_TIMEOUT_S = 10.0
_LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ClusterError(VideoError):
    """The job cannot run on the cluster; the text names the fix."""


def _ray():
    try:
        import ray
    except ImportError:
        raise ClusterError("--workers and --ray need the ray package; install it with pip install 'vsdsfn[ray]'") \
            from None
    return ray


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    return False


def _local_only(ray) -> None:
    """Make Ray use 127.0.0.1 as this node's address (servers bound to it, and a
    127.0.0.1 address not rewritten to the machine's network address): Ray's own switch
    for single-machine clusters, for this process and the ones it starts."""
    from ray._private import ray_constants

    os.environ[_LOCAL_ONLY] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def start_local(cpus: int, **init) -> None:
    """Start a local Ray cluster with ``cpus`` CPUs (and the machine's GPUs), listening on
    127.0.0.1 only, without a dashboard; Ray's default token authentication stays on."""
    ray = _ray()
    _local_only(ray)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # a local cluster reports nothing anywhere
    address = os.environ.pop("RAY_ADDRESS", None)            # ray.init would join that cluster instead
    # Ray says it turned token authentication on (and how to turn it off): not for this command's users
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = notice.level
    notice.setLevel(logging.ERROR)
    try:
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING,
                 configure_logging=False, **init)
    finally:
        notice.setLevel(level)
        if address is not None:
            os.environ["RAY_ADDRESS"] = address


def _join(address: str) -> None:
    """Join the running cluster at ``address`` (``auto``: $RAY_ADDRESS)."""
    ray = _ray()
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            raise ClusterError("--ray auto reads the cluster's address from RAY_ADDRESS, which is not set; "
                               "set it or give the address, e.g. --ray 10.0.0.1:6379")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address.startswith("ray://") or not host or not port.isdigit():
        raise ClusterError(f"--ray expects the head node's HOST:PORT (e.g. 10.0.0.1:6379, the GCS address that "
                           f"`ray start --head` prints), not {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check the address "
                           "(`ray status` on the head node) and that this machine can reach it") from None
    if _loopback(host):
        _local_only(ray)
    try:
        ray.init(address=address, logging_level=logging.WARNING, configure_logging=False)
    except Exception as exc:   # ConnectionError, AuthenticationError, RuntimeError ...
        raise ClusterError(f"cannot join the Ray cluster at {address}: {_last_line(exc)}; with token "
                           "authentication set RAY_AUTH_MODE=token and the cluster's token "
                           "(RAY_AUTH_TOKEN, or ~/.ray/auth_token)") from None


@contextlib.contextmanager
def connect(address: str | None, cpus: int) -> Iterator[Any]:
    """Ray, connected: to ``address`` (joined, left on exit), or to a local cluster of
    ``cpus`` CPUs started here and stopped on exit; a connection this process already
    has is used as it is."""
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    previous = os.environ.get(_LOCAL_ONLY)
    with _own_signals():
        if address:
            _join(address)
        else:
            start_local(cpus)
    try:
        yield ray
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop(_LOCAL_ONLY, None)


@contextlib.contextmanager
def _own_signals() -> Iterator[None]:
    """Keep this process's handlers of SIGINT, SIGTERM and SIGHUP: ``ray.init`` installs
    its own (exit at once), which would skip keeping the finished chunks."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in kept.items():
            if handler is not None:
                signal.signal(s, handler)


_STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def held_signals() -> Iterator[Callable[[], None]]:
    """Hold SIGINT, SIGTERM and SIGHUP while Ray's calls run (a Python handler raising
    inside them breaks them) and yield a check that runs the held signal's own handler
    (e.g. the command line's, which stops the job) between them."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    held: list[int] = []
    kept = {s: signal.getsignal(s) for s in _STOPS if callable(signal.getsignal(s))}

    def check() -> None:
        if held:
            signum = held.pop()
            kept[signum](signum, None)

    for s in kept:
        signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        yield check
    finally:
        for s, handler in kept.items():
            signal.signal(s, handler)
    check()


def _wait(ray, refs: list[Any], check: Callable[[], None], count: int = 1) -> list[Any]:
    """The first ``count`` of ``refs`` to finish, running ``check`` twice a second."""
    while True:
        ready, _ = ray.wait(refs, num_returns=count, timeout=0.5)
        check()
        if len(ready) == count:
            return ready


def _last_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1]


def _wants_gpu(job: Job, gpus: float) -> bool:
    device = str(job.args.get("device") or "auto")
    if device.startswith("cuda") and gpus < 1:
        raise ClusterError(f"--device {device} needs a GPU for each worker, but the Ray cluster has none; "
                           "add GPU nodes, or render on CPUs with --device cpu")
    return gpus >= 1 and device != "cpu"


@contextlib.contextmanager
def workers(ray, job: Job, count: int | None, cpus: int,
            check: Callable[[], None] = lambda: None) -> Iterator[list[tuple[Any, dict[str, Any]]]]:
    """``count`` worker actors (default: one per GPU, else as many as the CPUs allow),
    each asking one GPU (where the cluster has them) and ``cpus`` CPUs, each ready
    (clip built, input checked on its node), with what each said of the job; they are
    stopped on exit."""
    total = ray.cluster_resources()
    gpu = _wants_gpu(job, total.get("GPU", 0))
    fits = int(total.get("GPU", 0)) if gpu else int(total.get("CPU", 0) // cpus)
    count = count or fits
    if count < 1 or count > fits:
        have = f"{int(total.get('GPU', 0))} GPUs" if gpu else f"{total.get('CPU', 0):g} CPUs"
        raise ClusterError(f"the Ray cluster has {have}: room for {fits} workers of {'1 GPU' if gpu else f'{cpus} CPUs'}"
                           f", not {count}; use --workers {max(fits, 1)}{'' if gpu else ' or fewer --worker-cpus'}")
    remote = ray.remote(Worker).options(num_cpus=cpus, num_gpus=1 if gpu else 0, max_restarts=RESTARTS,
                                        max_task_retries=RESTARTS)
    actors = [remote.remote(job, gpu) for _ in range(count)]
    try:
        try:
            refs = [a.prepare.remote() for a in actors]
            infos = ray.get(_wait(ray, refs, check, len(refs)))
        except Exception as exc:
            raise ClusterError(_cause(ray, exc)) from None
        yield list(zip(actors, infos))
    finally:
        for a in actors:
            ray.kill(a)


def _cause(ray, exc: BaseException) -> str:
    """The message of what failed inside a worker (without Ray's traceback)."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ChunkError):
            return str(cause)
        if cause is not None:
            return f"{type(cause).__name__}: {_last_line(cause)}"
    return _last_line(exc)


class Progress:
    """One line on stderr: frames done / total, frames/s of this run, ETA, workers busy."""

    def __init__(self, total: int, done: int, quiet: bool) -> None:
        self.total, self.done, self.quiet = total, done, quiet
        self.start, self.rendered = time.perf_counter(), 0
        self.tty = sys.stderr.isatty()
        self._last = -1

    def update(self, frames: int, busy: int, workers: int) -> None:
        self.done += frames
        self.rendered += frames
        if self.quiet:
            return
        pct = 100 * self.done // max(self.total, 1)
        if not self.tty and pct // 10 == self._last // 10 and self.done != self.total:
            return
        self._last = pct
        rate = self.rendered / max(time.perf_counter() - self.start, 1e-9)
        eta = f"ETA {(self.total - self.done) / rate:.0f} s" if self.rendered else "ETA -"
        msg = (f"vsdsfn: frame {self.done}/{self.total} ({pct}%), {rate:.2f} frames/s, {eta}, "
               f"{busy}/{workers} workers busy")
        sys.stderr.write(("\r" + msg + ("\n" if self.done == self.total else "")) if self.tty else msg + "\n")
        sys.stderr.flush()


def render_chunks(ray, actors: list[Any], todo: list[Chunk], keep: Callable[[Chunk, bytes], None],
                  progress: Progress, check: Callable[[], None] = lambda: None) -> None:
    """Render ``todo`` on ``actors``, one chunk in flight per actor, passing each finished
    chunk to ``keep`` as it arrives; a failing chunk is tried again, ``RESTARTS`` times."""
    queue = deque((c, 0) for c in todo)
    idle, inflight = list(actors), {}
    while queue or inflight:
        while idle and queue:
            actor = idle.pop()
            chunk, tries = queue.popleft()
            inflight[actor.render.remote(chunk.start, chunk.stop)] = (actor, chunk, tries)
        for ref in _wait(ray, list(inflight), check):
            actor, chunk, tries = inflight.pop(ref)
            try:
                data = ray.get(ref)
            except ray.exceptions.RayActorError as exc:   # died more often than Ray restarts it
                log.warning("%s: a worker was lost (%s)", chunk, _last_line(exc))
                if tries >= RESTARTS or not (idle or inflight):
                    raise ClusterError(f"{chunk}: workers kept dying ({_last_line(exc)}); check the nodes' "
                                       "memory and logs, then run the same command again") from None
                queue.appendleft((chunk, tries + 1))
                continue
            except ray.exceptions.RayTaskError as exc:
                if tries >= RESTARTS:
                    raise ClusterError(f"{chunk} failed {tries + 1} times: {_cause(ray, exc)}") from None
                log.warning("%s failed (%s); trying it again", chunk, _cause(ray, exc))
                queue.appendleft((chunk, tries + 1))
            else:
                keep(chunk, data)
                progress.update(chunk.frames, len(inflight), len(actors))
            idle.append(actor)

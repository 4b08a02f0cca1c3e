"""Command line: ``vsdsfn INPUT -o OUTPUT`` (also ``python -m vsdsfn``).

Parses the flags (:func:`vsdsfn.job.parser`) and calls :func:`vsdsfn.render` with them,
which checks the paths and options before any work and writes OUTPUT through a
:class:`vsdsfn.partial.Partial` file, in this process (:mod:`vsdsfn.local`) or on a Ray
cluster. Without INPUT it upscales the small sample clip shipped in the package
(:data:`SAMPLE`). Progress, the summary and vsdsfn's log records go to stderr; errors
are one line naming the fix, and a signal removes the partial output on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator

from . import job, options
from .job import SAMPLE
from .source import VideoError

__all__ = ["main", "SAMPLE"]


def _parser() -> argparse.ArgumentParser:
    """The command line's flags (:func:`vsdsfn.job.parser`)."""
    return job.parser()


class _Stopped(BaseException):
    """A signal (SIGINT, SIGTERM, SIGHUP) turned into an exception, so that the partial
    output is removed on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame) -> None:
    raise _Stopped(signum)


def _catchable() -> list[int]:
    """SIGINT, SIGTERM and SIGHUP, except those this process was started to ignore
    (``nohup``, a background job) and except off the main thread (no handlers there)."""
    if threading.current_thread() is not threading.main_thread():
        return []
    return [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) is not signal.SIG_IGN]


@contextlib.contextmanager
def _logs_on_stderr(verbose: bool) -> Iterator[None]:
    """vsdsfn's log records on stderr (``vsdsfn: WARNING: ...``; INFO too when
    ``verbose``) while the command runs: the library itself only has a NullHandler."""
    log = logging.getLogger("vsdsfn")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    previous = {s: signal.signal(s, _raise_stopped) for s in _catchable()}
    try:
        with options.cli_terms(), _logs_on_stderr(args.verbose):
            job.render(**{k: v for k, v in vars(args).items() if k != "verbose"})
            return 0
    except VideoError as exc:
        sys.stderr.write(f"vsdsfn: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\nvsdsfn: interrupted\n")
        return 130
    except _Stopped as exc:
        sys.stderr.write(f"\nvsdsfn: {'interrupted' if exc.signum == signal.SIGINT else f'stopped by {exc}'}\n")
        return 128 + exc.signum
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())

"""The training loop of the trainers on cached pools (:mod:`training.multiframe`,
:mod:`training.refit`): RAdam steps under a cosine learning rate with warm-up, a log line
every ``log_every`` steps, validation every ``val_every`` steps (a row of ``log.csv``; the
best kept in ``best.pt``), ``last.pt`` every ``ckpt_every`` steps, and an exact resume.
With ``--ema D`` an exponential moving average of the trained weights (decay D) is what is
validated and kept in ``best.pt`` (so what ``--export`` writes); ``last.pt`` holds both.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .train import load_checkpoint, save_checkpoint

__all__ = ["PoolTrainer", "add_loop_arguments", "train_or_export"]

log = logging.getLogger("vsdsfn.training")


def add_loop_arguments(p: argparse.ArgumentParser, *, iters: int, lr: float, warmup: int, val_every: int) -> None:
    """The loop's flags, with a trainer's defaults where they differ."""
    p.add_argument("--iters", type=int, default=iters)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--val-every", type=int, default=val_every)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate and keep an exponential moving average of the weights (e.g. 0.999; 0: off)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last.pt")


def train_or_export(args: argparse.Namespace, trainer: Callable[[], "PoolTrainer"], export: Callable[[], Path]) -> None:
    """What a pool trainer's command does, logging to stderr: with ``--export``, ``export()``
    and stop; else ``trainer()`` trained (``--threads``, seed 0, ``--resume``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.export:
        log.info("wrote %s", export())
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    trainer().start()


class PoolTrainer:
    """Subclasses give the trained ``modules()`` (checkpoint key -> module), ``loss(step)``
    (the step's batch is a pure function of the step), ``validate()`` (PSNRs by name) and
    :attr:`score`, the name of the PSNR that picks the best step. ``args``: ``lr``,
    ``warmup``, ``iters``, ``log_every``, ``val_every``, ``ckpt_every`` and ``ema`` (the
    moving average's decay; 0 or absent: none)."""

    score = "psnr"

    def __init__(self, args: argparse.Namespace, out: str | Path) -> None:
        self.args, self.out = args, Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.step, self.best = 0, -math.inf
        self.opt: torch.optim.Optimizer | None = None
        #: the moving average of the trained parameters (``--ema``), by name, or None
        self.shadow: dict[str, torch.Tensor] | None = None

    def modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def loss(self, step: int) -> torch.Tensor:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        raise NotImplementedError

    def optimizer(self) -> torch.optim.Optimizer:
        """RAdam over the trained modules' parameters that require gradients (a group's
        ``scale`` multiplies the learning rate for it)."""
        if self.opt is None:
            params = [p for m in self.modules().values() for p in m.parameters() if p.requires_grad]
            self.opt = torch.optim.RAdam(params, lr=self.args.lr)
        return self.opt

    def lr_at(self, step: int) -> float:
        """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` to 2 % of it.

        >>> t = PoolTrainer(argparse.Namespace(lr=1.0, warmup=10, iters=100), "/nonexistent")
        >>> [round(t.lr_at(s), 3) for s in (0, 9, 50, 100)]
        [0.1, 0.981, 0.51, 0.02]
        """
        a = self.args
        warm = min(1.0, (step + 1) / a.warmup)
        return a.lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(step, a.iters) / a.iters)))

    def trained(self) -> dict[str, torch.nn.Parameter]:
        """The parameters the optimiser moves, by ``module.parameter`` name."""
        return {f"{k}.{n}": p for k, m in self.modules().items() for n, p in m.named_parameters() if p.requires_grad}

    def average(self) -> None:
        """One step of the moving average (``--ema``; nothing without it): its decay is held
        at ``(1 + step) / (10 + step)`` while that is lower, so the first steps' weights do
        not linger.

        >>> t = PoolTrainer(argparse.Namespace(ema=0.9), "/nonexistent")
        >>> w = torch.nn.Parameter(torch.zeros(1)); t.modules = lambda: {"m": torch.nn.ParameterList([w])}
        >>> t.average(); t.step = 100; _ = w.data.fill_(1.0); t.average(); round(float(t.shadow["m.0"]), 3)
        0.1
        """
        decay = getattr(self.args, "ema", 0.0)
        if not decay:
            return
        live = self.trained()
        if self.shadow is None:
            self.shadow = {k: p.detach().clone() for k, p in live.items()}
            return
        decay = min(decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for k, p in live.items():
                self.shadow[k].lerp_(p.detach(), 1 - decay)

    @contextmanager
    def averaged(self) -> Iterator[None]:
        """Within it the trained parameters hold the moving average (``--ema``), if any."""
        if self.shadow is None:
            yield
            return
        live = self.trained()
        kept = {k: p.detach().clone() for k, p in live.items()}
        with torch.no_grad():
            for k, p in live.items():
                p.copy_(self.shadow[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k, p in live.items():
                    p.copy_(kept[k])

    def state(self) -> dict:
        return {**{k: m.state_dict() for k, m in self.modules().items()}, "opt": self.optimizer().state_dict(),
                "step": self.step, "best": self.best, "ema": self.shadow}

    def resume(self) -> None:
        state = load_checkpoint(self.out / "last.pt")
        for k, m in self.modules().items():
            m.load_state_dict(state[k])
        self.optimizer().load_state_dict(state["opt"])
        self.step, self.best = state["step"], state["best"]
        self.shadow = state.get("ema") if getattr(self.args, "ema", 0.0) else None
        log.info("resumed at step %d (best %.3f dB)", self.step, self.best)

    def start(self) -> None:
        """:meth:`resume` where ``--resume`` finds a ``last.pt``, then :meth:`run`."""
        if self.args.resume and (self.out / "last.pt").exists():
            self.resume()
        self.run()

    def run(self) -> None:
        """Train from the current step to ``iters``: validated first when at step 0."""
        a, opt = self.args, self.optimizer()
        if self.shadow is None:   # step 0, or --ema on a run resumed without one: it starts here
            self.average()
        if self.step == 0:
            self.checkpoint()
        t0, seen = time.time(), []
        while self.step < a.iters:
            for group in opt.param_groups:
                group["lr"] = self.lr_at(self.step) * group.get("scale", 1.0)
            loss = self.loss(self.step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.step += 1
            self.average()
            seen.append(float(loss.detach()))
            if self.step % a.log_every == 0:
                log.info("step %d loss %.5f lr %.2e %.2f s/step", self.step, np.mean(seen), self.lr_at(self.step),
                         (time.time() - t0) / a.log_every)
                seen, t0 = [], time.time()
            if self.step % a.val_every == 0 or self.step == a.iters:
                self.checkpoint()
            elif self.step % a.ckpt_every == 0:
                save_checkpoint(self.out / "last.pt", self.state())

    def checkpoint(self) -> None:
        """Validate, log (and append to ``log.csv``), keep the best, write ``last.pt`` (with
        ``--ema``: the moving average is validated and kept as the best)."""
        with self.averaged():
            scores = self.validate()
            if scores[self.score] > self.best:
                self.best = scores[self.score]
                save_checkpoint(self.out / "best.pt", self.state())
        log.info("val step %d: %s", self.step, ", ".join(f"{k} {v:.3f} dB" for k, v in scores.items()))
        table = self.out / "log.csv"
        with open(table, "a") as f:
            if f.tell() == 0:
                f.write(",".join(["step", *scores]) + "\n")
            f.write(",".join([str(self.step), *(f"{v:.4f}" for v in scores.values())]) + "\n")
        save_checkpoint(self.out / "last.pt", self.state())

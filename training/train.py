"""Staged DSFN training (paper, Sec. 3.4-3.5).

Stages: ``spatial`` and ``temporal`` pretrain M_S and M_T (stage 1); ``fusion`` freezes
them and trains F and R on L_F + L_R (stage 2); ``joint`` fine-tunes everything on all
six losses (stage 3). Each run writes to ``--out``: ``last.pt`` (atomic, every
``ckpt_every`` steps), ``best.pt`` (best validation PSNR), ``log.csv`` and ``config.json``
(the resolved config).

Examples::

    python -m training.train --config training/configs/cpu.toml --data-root ../shared/data \\
        --stage temporal --out runs/temporal
    python -m training.train ... --stage fusion --out runs/fusion \\
        --init runs/spatial/best.pt:spatial --init runs/temporal/best.pt:temporal
    python -m training.train ... --out runs/fusion --resume     # continue exactly

Several GPUs: ``torchrun --nproc_per_node N -m training.train ...`` (DDP).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vsdsfn import allocator, precision
from vsdsfn.nets import DSFN, DSFNConfig

from .config import load_config, stage_options

from .datasets import (MixtureSet, SRSet, SyntheticMotionSet, TripletSet, config_images, config_sequences, data_path,
                       downscale, to_batch, vimeo_sequences)
from .losses import STAGE_LOSSES, dsfn_losses, total_loss
from .metrics import psnr

__all__ = ["Trainer", "build_datasets", "main", "save_checkpoint", "load_checkpoint", "triplet_spans", "widened"]

log = logging.getLogger("vsdsfn.training")

#: which sub-networks each stage trains
STAGE_MODULES = {
    "spatial": ("spatial",),
    "temporal": ("temporal",),
    "fusion": ("fusion", "refine"),
    "joint": ("spatial", "temporal", "fusion", "refine"),
}


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file, then an atomic rename (a killed run never leaves a
    half-written checkpoint in place)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint, loaded with ``weights_only=True`` (no arbitrary unpickling).

    Raises :class:`ValueError` naming the file when it is unreadable or holds objects
    other than tensors and plain containers.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 -- UnpicklingError, truncated zip, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"checkpoint {str(path)!r} cannot be loaded safely ({first}); it is corrupt, "
                         "truncated or contains arbitrary Python objects") from None


# ----------------------------------------------------------------------------- data
def triplet_spans(d: dict) -> dict[int, list[int]]:
    """Span -> strides of the triplets: span 2 (the middle frame) with ``data.strides``,
    and ``data.spans`` (``[{span = 4, strides = [1]}]``: timesteps 1/4, 1/2, 3/4)."""
    return {2: list(d["strides"]), **{int(e["span"]): list(e["strides"]) for e in d.get("spans", [])}}


def build_datasets(cfg: dict, stage: str, crop: int) -> tuple[object, list[list[np.ndarray]]]:
    """The training sampler and the fixed validation samples for a stage."""
    d = cfg["data"]
    root = Path(d["root"])
    val_rng = np.random.default_rng(12345)
    if stage == "spatial":
        train = SRSet(config_images(root, d["sr_images"]), crop)
        val_set = SRSet(config_images(root, d["sr_val"]) or config_images(root, d["sr_images"])[:8], crop)
        val = [val_set.get(i, val_rng, train=False) for i in range(len(val_set))]
        return train, val
    seqs = config_sequences(root, d["sequences"])
    if d.get("vimeo"):
        seqs += vimeo_sequences(data_path(root, d["vimeo"]), "train")
    parts, weights = [], []
    if seqs:
        parts.append(TripletSet(seqs, crop=crop, spans=triplet_spans(d)))
        weights.append(1.0 - d["synthetic_weight"])
    if d["sr_images"] and d["synthetic_weight"] > 0:
        parts.append(SyntheticMotionSet(config_images(root, d["sr_images"]), crop, d["synthetic_max_shift"]))
        weights.append(d["synthetic_weight"])
    if not parts:
        raise ValueError("no training data: set data.sequences, data.vimeo or data.sr_images")
    train = MixtureSet(parts, weights)
    vseqs = config_sequences(root, d["val_sequences"])
    if d.get("vimeo"):
        vseqs += vimeo_sequences(data_path(root, d["vimeo"]), "test")
    if not vseqs:
        raise ValueError("no validation data: set data.val_sequences or data.vimeo")
    vset = TripletSet(vseqs, crop=d["val_crop"], spans={m: [1] for m in triplet_spans(d)})
    n = min(len(vset), d["val_max"])
    idx = np.linspace(0, len(vset) - 1, n).round().astype(int)
    val = [vset.get(int(i), val_rng, train=False) for i in idx]
    return train, val


def widened(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each convolution weight that has fewer input channels than the
    network's (F's and R's first layers once they are given t) widened by zero weights
    for the new, last, channels: the network then computes what the smaller one did."""
    out = {}
    for k, v in state.items():
        want = target.get(k)
        if want is not None and v.dim() == 4 and want.shape[0] == v.shape[0] and want.shape[1] > v.shape[1] \
                and want.shape[2:] == v.shape[2:]:
            v = torch.cat((v, v.new_zeros(v.shape[0], want.shape[1] - v.shape[1], *v.shape[2:])), 1)
        out[k] = v
    return out


# ----------------------------------------------------------------------------- trainer
class TrainError(ValueError):
    """A run that cannot start or continue as asked; ``main`` prints it and exits."""


#: options that do not change what a run computes (may differ on --resume)
RUNTIME_KEYS = ("threads", "workers", "log_every", "ckpt_every")


def _trajectory(cfg: dict) -> str:
    """The config without :data:`RUNTIME_KEYS`, as canonical JSON (what --resume compares)."""
    cfg = json.loads(json.dumps(cfg))
    for section in [cfg.get("train", {}), *cfg.get("stages", {}).values()]:
        for k in RUNTIME_KEYS:
            section.pop(k, None)
    return json.dumps(cfg, sort_keys=True)


class StepBatches(torch.utils.data.Dataset):
    """Item ``step`` is the training batch of that step: a pure function of the step.

    So batches can be made ahead in worker processes (``train.workers``) and a resumed
    run draws the same ones; the frames are CPU tensors (B, 3, H, W), ``half`` says
    whether the stage trains this step at half resolution (M_T on low-res frames).
    """

    def __init__(self, train_set, batch: int, seed: int, rank: int, half_res: float = 0.0) -> None:
        self.train_set, self.batch, self.seed, self.rank, self.half_res = train_set, batch, seed, rank, half_res

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, step: int) -> dict:
        rng = np.random.default_rng([self.seed, step, self.rank])
        before = getattr(self.train_set, "skipped", 0)
        frames = to_batch([self.train_set.sample(rng) for _ in range(self.batch)])
        half = bool(self.half_res) and rng.random() < self.half_res
        return {"step": step, "frames": frames, "half": half,
                "skipped": getattr(self.train_set, "skipped", 0) - before}


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class StageForward(torch.nn.Module):
    """The forward pass of one stage: frames -> (losses, prediction, target).

    One module for every stage, so DistributedDataParallel wraps (and synchronises) the
    stage's real computation, including the backbone-only pretraining stages.
    """

    def __init__(self, model: DSFN, stage: str) -> None:
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, frames: list[torch.Tensor]):
        if self.stage == "spatial":
            (h,) = frames
            pred = self.model.spatial(downscale(h))
            return {"spatial": F.l1_loss(pred, h)}, pred, h
        (f0, f1, f2), t = frames[:3], frames[3].flatten()
        if self.stage == "temporal":
            pred = self.model.temporal(f0, f2, timestep=t)
            return {"temporal": F.l1_loss(pred, f1)}, pred, f1
        out = self.model(downscale(f0), downscale(f2), t=t)
        return dsfn_losses(out, f0, f1, f2, downscale(f1)), out["refined"], f1


class Trainer:
    """One stage of training; everything it needs to resume lives in its checkpoint."""

    def __init__(self, cfg: dict, stage: str, out: Path, device: str = "auto") -> None:
        # a copy: the resolved architecture is written into it, not into the caller's dict
        self.cfg, self.stage, self.out = copy.deepcopy(cfg), stage, Path(out)
        self.opt = stage_options(self.cfg, stage)
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        if device == "auto":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cpu":
            allocator.tune()
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if self.opt["threads"]:
            torch.set_num_threads(int(self.opt["threads"]))
        torch.manual_seed(self.opt["seed"])  # reproducible initial weights (--resume restores the RNG)
        self.model = DSFN(DSFNConfig.from_dict(self.cfg["model"])).to(self.device)
        # store the resolved architecture: checkpoints must not depend on code defaults
        self.cfg["model"] = self.model.config.to_dict()
        self.modules = STAGE_MODULES[stage]
        for name, mod in self.model.named_children():
            mod.requires_grad_(name in self.modules)
        self.optim = torch.optim.RAdam(self._param_groups(), lr=self.opt["lr"])
        # mixed precision: fp16 on CUDA (with loss scaling), bf16 on CPUs that compute it natively
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.amp = bool(self.opt["amp"]) and (self.device.type == "cuda" or precision.cpu_has_native_bf16())
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.device.type == "cuda")
        self.step = 0
        self.best = -math.inf
        self.skipped_steps = 0
        self.data_skipped = 0  # unreadable training samples (counted in whichever process read them)
        self._batch_iter = None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: pick the fastest kernels once
        self.net: torch.nn.Module = StageForward(self.model, stage)
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)

    # -- state
    def state(self) -> dict:
        return {
            "stage": self.stage, "step": self.step, "best": self.best, "config": json.dumps(self.cfg, sort_keys=True),
            "model": self.model.state_dict(), "optim": self.optim.state_dict(),
            "scaler": self.scaler.state_dict(), "torch_rng": torch.get_rng_state(),
            "skipped_steps": self.skipped_steps,
        }

    def resume(self, path: Path) -> None:
        ck = load_checkpoint(path)
        theirs = json.loads(ck["config"])
        if _trajectory(theirs) != _trajectory(self.cfg) or ck["stage"] != self.stage:
            raise TrainError(f"--resume {path}: the checkpoint was made with a different config or "
                             "stage; resume with the same --config/--set/--stage, or start a new --out")
        self.model.load_state_dict(ck["model"])
        self.optim.load_state_dict(ck["optim"])
        self.scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["torch_rng"])
        self.step, self.best = ck["step"], ck["best"]
        self.skipped_steps = ck.get("skipped_steps", 0)
        log.info("resumed %s at step %d (best %.3f dB)", path, self.step, self.best)

    def init_from(self, spec: str) -> None:
        """``PATH`` or ``PATH:mod1,mod2``: copy (some) sub-networks from a checkpoint or
        a .safetensors weights file."""
        path, _, mods = spec.partition(":")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            state = load_file(path)
        else:
            state = load_checkpoint(path)["model"]
        wanted = tuple(mods.split(",")) if mods else tuple(n for n, _ in self.model.named_children())
        sub = {k: v for k, v in state.items() if k.split(".", 1)[0] in wanted}
        missing = [k for k in self.model.state_dict() if k.split(".", 1)[0] in wanted and k not in sub]
        if missing:
            raise TrainError(f"--init {spec}: checkpoint lacks {len(missing)} tensors (e.g. {missing[0]}); "
                             "was it made with the same model config?")
        self.model.load_state_dict(widened(sub, self.model.state_dict()), strict=False)
        log.info("initialised %s from %s", ",".join(wanted), path)

    # -- one step
    def lr_at(self, step: int) -> float:
        lr, iters, warm = self.opt["lr"], self.opt["iters"], self.opt["warmup"]
        if warm and step < warm:
            return lr * (step + 1) / warm
        if self.opt["schedule"] == "cosine":
            t = min(1.0, (step - warm) / max(1, iters - warm))
            return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))
        return lr

    def compute(self, frames: list[torch.Tensor]) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """Losses, the stage's main output and its target for a batch (through DDP when
        distributed, so gradients are synchronised in every stage)."""
        return self.net(frames)

    def _batches(self):
        """The batches from the current step on: made here (``workers = 0``) or ahead by
        ``workers`` processes, identical either way."""
        maker = StepBatches(self.train_set, self.opt["batch"], self.opt["seed"], self.rank,
                            self.opt.get("half_res", 0.0) if self.stage == "temporal" else 0.0)
        steps = range(self.step, self.opt["iters"])
        workers = int(self.opt.get("workers") or 0)
        if not workers:
            return (maker[s] for s in steps)
        return iter(torch.utils.data.DataLoader(
            maker, batch_size=None, sampler=steps, num_workers=workers, worker_init_fn=_worker_init,
            pin_memory=self.device.type == "cuda", prefetch_factor=4))

    def make_batch(self, step: int) -> list[torch.Tensor]:
        if self._batch_iter is None:
            self._batch_iter = self._batches()
        item = next(self._batch_iter)
        if item["step"] != step:
            raise RuntimeError(f"batch of step {item['step']} drawn at step {step}")
        self.data_skipped += item["skipped"]
        frames = [f.to(self.device, non_blocking=True) for f in item["frames"]]
        if item["half"]:
            # M_T runs on low-res frames in the T->S stream: train on both resolutions
            frames = [downscale(f) for f in frames[:3]] + frames[3:]
        return frames

    def _param_groups(self) -> list[dict]:
        """The trained sub-networks' parameters: one group, or with ``lr_scale`` (e.g.
        ``{refine = 0.25}``) one group per scaled sub-network with its factor."""
        scales = self.opt.get("lr_scale") or {}
        if not isinstance(scales, dict):
            raise ValueError(f"lr_scale must be a table {{module = factor}}, not {scales!r}")
        bad = sorted(set(scales) - set(self.modules))
        if bad:
            raise ValueError(f"lr_scale: {bad} not trained in stage {self.stage!r} (it trains {list(self.modules)})")
        groups = [{"params": [p for n in self.modules if n not in scales
                              for p in getattr(self.model, n).parameters()], "scale": 1.0}]
        for name, factor in sorted(scales.items()):
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 0:
                raise ValueError(f"lr_scale.{name} must be a number >= 0, not {factor!r}")
            groups.append({"params": list(getattr(self.model, name).parameters()), "scale": float(factor)})
        return [g for g in groups if g["params"]]

    def train_step(self) -> dict[str, float]:
        frames = self.make_batch(self.step)
        for g in self.optim.param_groups:
            g["lr"] = self.lr_at(self.step) * g.get("scale", 1.0)
        self.net.train()
        with torch.autocast(self.device.type, self.amp_dtype, enabled=self.amp):
            losses, pred, target = self.compute(frames)
            loss = total_loss(losses, STAGE_LOSSES[self.stage])
        self.optim.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            self.skipped_steps += 1
            log.warning("step %d: non-finite loss %s, step skipped (%d so far)", self.step, float(loss.detach()), self.skipped_steps)
            self.step += 1
            return {"loss": float("nan")}
        self.scaler.scale(loss).backward()
        if self.opt["grad_clip"]:
            self.scaler.unscale_(self.optim)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.opt["grad_clip"])
        self.scaler.step(self.optim)
        self.scaler.update()
        self.step += 1
        stats = {k: float(v.detach()) for k, v in losses.items()}
        stats["loss"] = float(loss.detach())
        stats["psnr"] = float(psnr(pred.detach(), target).mean())
        return stats

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        sums: dict[str, float] = {}
        for sample in self.val:
            frames = to_batch([sample], self.device)
            if self.stage == "spatial":
                h = frames[0]
                h = h[..., : h.shape[-2] // 2 * 2, : h.shape[-1] // 2 * 2]
                res = {"psnr": psnr(self.model.spatial(downscale(h)), h),
                       "bicubic": psnr(F.interpolate(downscale(h), scale_factor=2, mode="bicubic"), h)}
            elif self.stage == "temporal":
                (f0, f1, f2), t = frames[:3], frames[3].flatten()
                res = {"psnr": psnr(self.model.temporal(f0, f2, timestep=t), f1),
                       "blend": psnr(torch.lerp(f0, f2, t.view(-1, 1, 1, 1)), f1)}
                l0, l1, l2 = (downscale(f) for f in frames[:3])
                res["psnr_lr"] = psnr(self.model.temporal(l0, l2, timestep=t), l1)
            else:
                (h0, h1, h2), t = frames[:3], frames[3].flatten()
                out = self.model(downscale(h0), downscale(h2), t=t)
                res = {"psnr": psnr(out["refined"], h1)}
                res.update({k: psnr(out[k], h1) for k in ("st", "ts", "fused")})
            for k, v in res.items():   # PSNR per image (a batch of one)
                sums[k] = sums.get(k, 0.0) + float(v.mean())
        return {k: v / len(self.val) for k, v in sums.items()}

    # -- the loop
    def run(self, resume: bool = False, init: list[str] = ()) -> None:
        """Train from step 0 (after ``init``) or from ``last.pt`` (``resume``) to the stage's ``iters``."""
        self._start(resume, init)
        runlog = RunLog(self.out) if self.rank == 0 else None
        since = (time.time(), self.step)
        avg: dict[str, float] = {}
        try:
            while self.step < self.opt["iters"]:
                _smooth(avg, self.train_step())
                row = self._validate_if_due()
                if self.rank == 0 and self._due("ckpt_every"):
                    save_checkpoint(self.out / "last.pt", self.state())
                if runlog and (self.step % self.opt["log_every"] == 0 or row):
                    self._log_step(runlog, avg, row, since)
        finally:
            if runlog:
                runlog.close()
        if self.data_skipped:
            log.warning("%d unreadable samples were skipped", self.data_skipped)

    def _start(self, resume: bool, init: Sequence[str]) -> None:
        """The data sets, the weights (``last.pt`` or the ``init`` specs) and ``config.json``."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.train_set, self.val = build_datasets(self.cfg, self.stage, self.opt["crop"])
        last = self.out / "last.pt"
        if resume:
            if not last.exists():
                raise TrainError(f"--resume: {last} does not exist")
            self.resume(last)
        else:
            for spec in init:
                self.init_from(spec)
            if last.exists():
                raise TrainError(f"{last} exists; pass --resume to continue it or choose another --out")
        if self.rank == 0:
            (self.out / "config.json").write_text(json.dumps(self.cfg, indent=2, sort_keys=True))

    def _due(self, every: str) -> bool:
        """Whether the option ``every`` (``val_every``, ``ckpt_every``) falls on this step, or it is the last."""
        return self.step % self.opt[every] == 0 or self.step == self.opt["iters"]

    def _validate_if_due(self) -> dict[str, float] | None:
        """Validate when due, keeping ``best.pt``; the log's ``val_*`` values (``None`` if not due)."""
        if not self._due("val_every"):
            return None
        val = self.validate()
        if val["psnr"] > self.best:
            self.best = val["psnr"]
            if self.rank == 0:
                save_checkpoint(self.out / "best.pt", self.state())
        if self.rank == 0:
            log.info("step %d validation: %s (best %.3f)", self.step,
                     " ".join(f"{k}={v:.3f}" for k, v in val.items()), self.best)
        return {f"val_{k}": v for k, v in val.items()}

    def _log_step(self, runlog: RunLog, avg: dict[str, float], row: dict[str, float] | None,
                  since: tuple[float, int]) -> None:
        """This step's record into ``runlog``, and a progress line on stderr."""
        iters = self.opt["iters"]
        rate = (self.step - since[1]) / max(1e-9, time.time() - since[0])
        runlog.write({"step": self.step, "time": round(time.time(), 1), "lr": self.lr_at(self.step - 1),
                      "it_s": round(rate, 3), **{k: round(v, 5) for k, v in avg.items()}, **(row or {})})
        eta = (iters - self.step) / max(rate, 1e-9)
        print(f"[{self.stage}] {self.step}/{iters} loss {avg.get('loss', float('nan')):.4f} "
              f"psnr {avg.get('psnr', float('nan')):.2f} {rate:.2f} it/s eta {eta / 60:.1f} min",
              file=sys.stderr, flush=True)


def _smooth(avg: dict[str, float], stats: dict[str, float]) -> None:
    """Fold a step's finite ``stats`` into their running averages (weight 0.1 for the new step)."""
    for k, v in stats.items():
        if math.isfinite(v):
            avg[k] = 0.9 * avg.get(k, v) + 0.1 * v


class RunLog:
    """A run's log: rows of ``log.csv`` (appended to on resume) and, when tensorboard is
    installed, the same values as TensorBoard scalars under ``tb/``."""

    FIELDS = ("step", "time", "lr", "it_s", "loss", "psnr", *STAGE_LOSSES["joint"],
              "val_psnr", "val_bicubic", "val_blend", "val_psnr_lr", "val_st", "val_ts", "val_fused")

    def __init__(self, out: Path) -> None:
        path = out / "log.csv"
        self._header = not path.exists()
        self._file = open(path, "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=self.FIELDS, extrasaction="ignore")
        try:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(out / "tb"))
        except Exception:  # tensorboard not installed
            self._tb = None

    def write(self, record: dict[str, float]) -> None:
        if self._header:
            self._csv.writeheader()
            self._header = False
        self._csv.writerow(record)
        self._file.flush()
        if self._tb:
            for k, v in record.items():
                if k not in ("step", "time"):
                    self._tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb:
            self._tb.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="TOML config file (defaults: the paper's settings)")
    ap.add_argument("--data-root", help="folder the config's data paths are relative to")
    ap.add_argument("--stage", required=True, choices=sorted(STAGE_MODULES))
    ap.add_argument("--out", required=True, help="run folder (checkpoints, log.csv)")
    ap.add_argument("--resume", action="store_true", help="continue OUT/last.pt exactly")
    ap.add_argument("--init", action="append", default=[], metavar="CKPT[:MODULES]",
                    help="initialise sub-networks (spatial,temporal,fusion,refine) from a checkpoint "
                         "or .safetensors; repeatable")
    ap.add_argument("--iters", type=int, help="total steps of this stage (overrides the config)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set stages.temporal.lr=3e-4")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    overrides = list(args.set)
    if args.data_root:
        overrides.append(f"data.root={json.dumps(args.data_root)}")
    if args.iters:
        overrides.append(f"stages.{args.stage}.iters={args.iters}")
    cfg = load_config(args.config, overrides)
    try:
        Trainer(cfg, args.stage, Path(args.out), args.device).run(resume=args.resume, init=args.init)
    except ValueError as exc:  # bad config, data or checkpoint: a message, not a traceback
        raise SystemExit(f"train: {exc}") from None


if __name__ == "__main__":
    main()

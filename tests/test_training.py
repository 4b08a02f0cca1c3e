"""training/: every stage end to end on a tiny self-made dataset, exact resume, export,
losses, metrics, augmentations, broken files, NaN steps and the evaluation table.

Everything runs in-process on a TINY model with one torch thread; data are written to
tmp dirs by the fixtures below (a Vimeo-layout tree of 64x64 moving textures, a few
still images, a frames folder).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import moving_frames, run_stage, save, texture, tiny_args, tiny_sets
from training import evaluate as ev
from training import train as tr
from training.augment import augment, center_crop, random_crop
from training.datasets import TripletSet, downscale, vimeo_sequences
from training.export import export, pick_best
from training.losses import LOSS_NAMES, STAGE_LOSSES, dsfn_losses, total_loss
from training.metrics import psnr, ssim
from vsdsfn.nets import DSFN, DSFNConfig
from vsdsfn.weights import load_model, save_model

TINY_MODEL = {
    "spatial_args": {"channels": 8, "layers": 2},
    "temporal_args": {"widths": [8, 8, 8, 8], "refine": True, "large_motion": True},   # a tiny RIFE
    "fusion_widths": [4, 4, 4, 4, 4],
    "refine_channels": 4,
    "refine_blocks": 1,
}


#: every test here runs with one torch thread (the trainer sets the count process-wide)
pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- data
def read_log(out: Path) -> list[dict]:
    with open(out / "log.csv") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- stages
@pytest.mark.parametrize("stage", ["spatial", "temporal", "fusion", "joint"])
def test_stage_runs_end_to_end(data, tmp_path, stage):
    out = tmp_path / stage
    ck = run_stage(data, stage, out, iters=3)
    assert ck["stage"] == stage and ck["step"] == 3
    assert (out / "best.pt").exists() and (out / "config.json").exists()
    assert json.loads(ck["config"])["model"]["spatial_args"] == {"channels": 8, "layers": 2}
    rows = read_log(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert math.isfinite(float(rows[-1]["val_psnr"]))
    assert math.isfinite(ck["best"])
    # only the stage's sub-networks changed
    torch.manual_seed(0)  # the trainer seeds its initial weights with train.seed (0)
    fresh = DSFN(DSFNConfig.from_dict(TINY_MODEL)).state_dict()
    changed = {k.split(".", 1)[0] for k, v in ck["model"].items() if not torch.equal(v, fresh[k])}
    assert changed <= set(tr.STAGE_MODULES[stage]) and changed


def test_lr_scale_per_module(data, tmp_path):
    """stages.X.lr_scale gives a sub-network its own learning rate (0 freezes it)."""
    ck = run_stage(data, "fusion", tmp_path / "f", iters=3, extra=[("stages.fusion.lr_scale", "{refine = 0.0}")])
    torch.manual_seed(0)
    fresh = DSFN(DSFNConfig.from_dict(TINY_MODEL)).state_dict()
    changed = {k.split(".", 1)[0] for k, v in ck["model"].items() if not torch.equal(v, fresh[k])}
    assert changed == {"fusion"}
    groups = ck["optim"]["param_groups"]
    assert [g["scale"] for g in groups] == [1.0, 0.0] and groups[1]["lr"] == 0.0 < groups[0]["lr"]
    with pytest.raises(SystemExit, match="not trained in stage .fusion."):
        run_stage(data, "fusion", tmp_path / "g", iters=1, extra=[("stages.fusion.lr_scale", "{temporal = 0.5}")])


def test_fusion_init_from_pretrained_stages(data, tmp_path):
    sp = run_stage(data, "spatial", tmp_path / "spatial", iters=2)
    tp = run_stage(data, "temporal", tmp_path / "temporal", iters=2)
    ck = run_stage(data, "fusion", tmp_path / "fusion", iters=2,
                   more=["--init", f"{tmp_path / 'spatial' / 'last.pt'}:spatial",
                         "--init", f"{tmp_path / 'temporal' / 'last.pt'}:temporal"])
    for k, v in ck["model"].items():
        mod = k.split(".", 1)[0]
        if mod == "spatial":
            assert torch.equal(v, sp["model"][k])     # frozen in stage 2
        elif mod == "temporal":
            assert torch.equal(v, tp["model"][k])


def test_existing_run_without_resume_refuses(data, tmp_path):
    run_stage(data, "temporal", tmp_path / "t", iters=2)
    with pytest.raises(SystemExit, match="--resume"):
        run_stage(data, "temporal", tmp_path / "t", iters=2)


# ----------------------------------------------------------------------------- resume
def interrupt_at_step(monkeypatch, step: int):
    """Make training raise KeyboardInterrupt when it reaches ``step``; returns the undo."""
    real_step = tr.Trainer.train_step

    def interrupted(self):
        if self.step == step:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(tr.Trainer, "train_step", interrupted)
    return lambda: monkeypatch.setattr(tr.Trainer, "train_step", real_step)


def test_resume_continues_exactly(data, tmp_path, monkeypatch):
    """A run interrupted after step 3 (checkpoint at 2) and resumed ends with the same
    weights and optimizer state as an uninterrupted run."""
    full = run_stage(data, "joint", tmp_path / "full", iters=4)

    restore = interrupt_at_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_stage(data, "joint", tmp_path / "cut", iters=4)
    assert tr.load_checkpoint(tmp_path / "cut" / "last.pt")["step"] == 2
    restore()
    resumed = run_stage(data, "joint", tmp_path / "cut", iters=4, more=["--resume"])
    assert resumed["step"] == 4
    steps = [int(r["step"]) for r in read_log(tmp_path / "cut")]
    assert steps[-2:] == [3, 4] and 4 not in steps[:-1]  # continued, not restarted
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert resumed["best"] == full["best"]
    s_full, s_res = full["optim"]["state"], resumed["optim"]["state"]
    assert s_full.keys() == s_res.keys()
    for i in s_full:
        for name, v in s_full[i].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s_res[i][name])), (i, name)


def test_worker_processes_make_the_same_batches(data, tmp_path, monkeypatch):
    """train.workers > 0 makes the batches ahead in other processes: the run is the same
    (temporal: the half-resolution draw too), also when cut and resumed with another
    worker count."""
    one = run_stage(data, "temporal", tmp_path / "w0", iters=4)
    two = run_stage(data, "temporal", tmp_path / "w2", iters=4, extra=[("train.workers", "2")])
    for k, v in one["model"].items():
        assert torch.equal(v, two["model"][k]), k
    assert [r["loss"] for r in read_log(tmp_path / "w0")] == [r["loss"] for r in read_log(tmp_path / "w2")]

    restore = interrupt_at_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_stage(data, "temporal", tmp_path / "cut", iters=4, extra=[("train.workers", "2")])
    restore()
    resumed = run_stage(data, "temporal", tmp_path / "cut", iters=4, extra=[("train.workers", "1")], more=["--resume"])
    for k, v in one["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def test_resume_with_different_config_refuses(data, tmp_path):
    run_stage(data, "temporal", tmp_path / "t", iters=2)
    with pytest.raises(SystemExit, match="different config"):
        run_stage(data, "temporal", tmp_path / "t", iters=2, extra=[("train.lr", "5e-4")], more=["--resume"])
    with pytest.raises(SystemExit, match="does not exist"):
        run_stage(data, "temporal", tmp_path / "none", iters=2, more=["--resume"])
    # runtime-only options (threads, logging, checkpoint interval) may change on resume
    ck = run_stage(data, "temporal", tmp_path / "t", iters=2,
                   extra=[("train.threads", "2"), ("train.ckpt_every", "1")], more=["--resume"])
    assert ck["step"] == 2


# ----------------------------------------------------------------------------- export
def test_export_loads_back(data, tmp_path):
    run_stage(data, "joint", tmp_path / "joint", iters=2)
    path = export(tmp_path / "joint" / "best.pt", tmp_path / "models" / "tiny.safetensors")
    model = load_model(path)
    ck = tr.load_checkpoint(tmp_path / "joint" / "best.pt")
    assert model.config == DSFNConfig.from_dict(TINY_MODEL)
    for k, v in model.state_dict().items():
        # M_T's tensors are stored in half precision and loaded as float32
        want = ck["model"][k].half().float() if k.startswith("temporal.") else ck["model"][k]
        assert v.dtype == torch.float32 and torch.equal(v, want), k
    from vsdsfn.weights import read_config

    _, meta = read_config(path)
    assert meta["stage"] == "joint" and meta["step"] == "2"


def test_export_picks_the_best_validated(data, tmp_path, monkeypatch):
    run_stage(data, "fusion", tmp_path / "fusion", iters=2)
    run_stage(data, "joint", tmp_path / "joint", iters=2)
    a, b = tmp_path / "fusion" / "best.pt", tmp_path / "joint" / "best.pt"
    for path, best in ((a, 30.0), (b, 31.0)):
        ck = tr.load_checkpoint(path)
        ck["best"] = best
        tr.save_checkpoint(path, ck)
    assert pick_best([a, b]) == b and pick_best([b, a]) == b
    from training.export import main as export_main

    export_main([str(a), str(b), str(tmp_path / "best.safetensors")])
    from vsdsfn.weights import read_config

    _, meta = read_config(tmp_path / "best.safetensors")
    assert meta["stage"] == "joint" and meta["val_psnr"] == "31.0000"


def test_exported_weights_run_in_upscale(data, tmp_path):
    vs = pytest.importorskip("vapoursynth")
    try:
        from vsdsfn.filter import upscale
    except ImportError as exc:  # the runtime is written concurrently
        pytest.skip(f"vsdsfn.upscale not available: {exc}")
    run_stage(data, "joint", tmp_path / "joint", iters=1)
    path = export(tmp_path / "joint" / "last.pt", tmp_path / "tiny.safetensors")
    from training.mvbaseline import frames_from_clip
    from training.flowfps import clip_from_frames

    frames = [f[:32, :48].astype(np.float32) / 255 for f in moving_frames(np.random.default_rng(1), 2)]
    clip = clip_from_frames(frames, fps=(24, 1))
    out = upscale(clip, weights=str(path))
    assert (out.width, out.height, out.num_frames) == (96, 64, 4)
    assert out.format.id == vs.RGBS
    got = frames_from_clip(out)
    model = load_model(path)
    l0, l1 = (torch.from_numpy(f).permute(2, 0, 1)[None] for f in frames)
    with torch.inference_mode():
        ref = model.run(l0, l1)["refined"][0].clamp(0, 1).permute(1, 2, 0).numpy()
    assert np.abs(got[1] - ref).max() < 1e-3   # the interpolated frame is the model's H_R
    assert all(np.isfinite(g).all() for g in got)


# ----------------------------------------------------------------------------- losses
def test_forward_is_streams_then_combine():
    net = DSFN(DSFNConfig(**TINY_MODEL, time_input=True)).eval()
    l0, l1, t = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64), torch.tensor([0.25, 0.5])
    with torch.no_grad():
        whole = net(l0, l1, t=t)
        s = net.streams(l0, l1, t=t)
        parts = {**s, **net.combine(s["st"], s["ts"], s["hr0"], s["hr1"], t)}
    assert set(whole) == set(parts) and all(torch.equal(whole[k], parts[k]) for k in whole)


def _moving_clip(tmp_path: Path, frames: int, seed: int, data: str, size: int = 128) -> Path:
    """``frames`` square frames of a moving texture in tmp_path/data/frames/long and a config
    whose [data] table is ``data`` (TOML lines); returns the config's path."""
    from conftest import moving_frames

    for i, f in enumerate(moving_frames(np.random.default_rng(seed), frames, size=size, step=(2, 1))):
        save(f, tmp_path / "data" / "frames" / "long" / f"{i:03d}.png")
    cfg = tmp_path / "clip.toml"
    cfg.write_text("[data]\n" + data)
    return cfg


def test_refit_trains_f_and_r_on_the_frozen_streams(tmp_path, tiny_multiframe_weights):
    from training import refit

    cfg = _moving_clip(tmp_path, 12, 3, 'strides = [1]\nspans = [{span = 3, strides = [1]}]\n'
                       'sequences = [{path = "frames/long"}]\nval_sequences = [{path = "frames/long", start = 2}]\n')
    out = tmp_path / "run"
    argv = ["--config", str(cfg), "--data-root", str(tmp_path / "data"), "--weights", str(tiny_multiframe_weights),
            "--out", str(out), "--size", "128", "--pool", "6", "--val-pool", "2", "--iters", "4", "--val-every", "2",
            "--log-every", "1"]
    assert refit.main(argv) == 0
    rows = (out / "log.csv").read_text().split()
    assert rows[0] == "step,S->T,F,R" and [r.split(",")[0] for r in rows[1:]] == ["0", "2", "4"]
    pool = torch.load(next(out.glob("pool-train-*.pt")), weights_only=True)
    # a multi-frame M_S of radius 1 needs source frames i - g .. i + 2g (g = m s apart): t in {1/2, 1/3, 2/3}
    assert pool["hr0"].shape == (6, 3, 128, 128) and set(pool["t"].tolist()) <= {0.5, *torch.tensor([1 / 3, 2 / 3]).tolist()}
    assert refit.main([*argv, "--export", str(tmp_path / "refit.safetensors")]) == 0
    before, after = load_model(tiny_multiframe_weights), load_model(tmp_path / "refit.safetensors")
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # noqa: E731
    assert same(before.spatial, after.spatial) and same(before.temporal, after.temporal)
    assert not same(before.fusion, after.fusion) and not same(before.refine, after.refine)
    with pytest.raises(SystemExit, match="--size must be a multiple of 128"):
        refit.main([*argv[:-12], "--size", "96"])
    # F's timestep bias: added at zero (the same frames), trained at its own rate, kept by the export
    biased = refit.rebuilt(before, fusion_time_bias=True)
    l0, l1 = torch.rand(2, 1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(biased.run(l0, l1, t=0.25)["refined"], before.run(l0, l1, t=0.25)["refined"])
    assert refit.main([*argv, "--out", str(tmp_path / "bias"), "--time-bias", "--bias-lr", "0.1"]) == 0
    assert refit.main([*argv, "--out", str(tmp_path / "bias"), "--time-bias",
                       "--export", str(tmp_path / "bias.safetensors")]) == 0
    trained = load_model(tmp_path / "bias.safetensors")
    assert trained.config.fusion_time_bias and trained.fusion.t_bias.abs().max() > 0   # moved from zero
    # R's padding changed (the tiny file's is replicate): trained so, the export says so, a resume must match
    assert before.config.refine_padding == "replicate"
    assert refit.main([*argv, "--out", str(tmp_path / "pad"), "--refine-padding", "zeros"]) == 0
    assert refit.main([*argv, "--out", str(tmp_path / "pad"), "--export", str(tmp_path / "pad.safetensors")]) == 0
    padded = load_model(tmp_path / "pad.safetensors")
    assert padded.config.refine_padding == "zeros" and not padded.config.fusion_time_bias
    assert {m.padding_mode for m in padded.refine.modules() if isinstance(m, torch.nn.Conv2d)} == {"zeros"}
    with pytest.raises(SystemExit, match="was trained with .*'refine_padding': 'zeros'"):
        refit.main([*argv, "--out", str(tmp_path / "pad"), "--resume"])
    # M_S's padding changed: F and R trained on the streams it makes, M_S's tensors kept
    assert before.config.spatial_padding == "replicate"
    assert refit.main([*argv, "--out", str(tmp_path / "spad"), "--spatial-padding", "zeros"]) == 0
    assert refit.main([*argv, "--out", str(tmp_path / "spad"), "--export", str(tmp_path / "spad.safetensors")]) == 0
    spad = load_model(tmp_path / "spad.safetensors")
    assert spad.config.spatial_padding == "zeros" and spad.config.refine_padding == "replicate"
    assert {m.padding_mode for m in spad.spatial.modules() if isinstance(m, torch.nn.Conv2d)} == {"zeros"}
    assert same(before.spatial, spad.spatial) and not same(before.refine, spad.refine)


def test_refit_scores_the_whole_validation_triplets_as_evaluate_does(tmp_path, tiny_multiframe_weights):
    from training import refit
    from training.triplets import config_triplets, load_triplets, outer_low_res

    cfg = _moving_clip(tmp_path, 12, 4, 'strides = [1]\nspans = [{span = 3, strides = [1]}]\n'
                       'sequences = [{path = "frames/long"}]\nval_sequences = [{path = "frames/long", start = 2}]\n',
                       size=192)
    out, root = tmp_path / "run", str(tmp_path / "data")
    argv = ["--config", str(cfg), "--data-root", root, "--weights", str(tiny_multiframe_weights), "--out", str(out),
            "--size", "128", "--pool", "4", "--val-pool", "2", "--val-triplets", "--iters", "2",
            "--val-every", "2", "--log-every", "1"]
    assert refit.main(argv) == 0
    assert (out / "log.csv").read_text().splitlines()[0] == "step,S->T,F,R,S->T triplets,F triplets,R triplets"
    with open(out / "log.csv") as f:   # the best step is the best R on the triplets
        best = max(float(row["R triplets"]) for row in csv.DictReader(f))
    assert tr.load_checkpoint(out / "best.pt")["best"] == pytest.approx(best, abs=1e-4)
    # the validation triplets as whole frames: F and R on them give DSFN.run's frame, as evaluate scores it
    model, trips = load_model(tiny_multiframe_weights), torch.load(out / "pool-val-triplets.pt", weights_only=True)
    triplets, _ = config_triplets(str(cfg), "val", root)
    assert len(trips["st"]) == len(triplets) == 8
    _, trip, (h0, h1, h2) = next(load_triplets(triplets[3:], []))
    with torch.no_grad():
        want = model.run(downscale(h0), downscale(h2), before=outer_low_res(trip, h1)[0],
                         after=outer_low_res(trip, h1)[1])["refined"]
        s = {k: trips[k][3][None].float() for k in ("hr0", "hr1", "st", "ts")}
        got = model.combine(s["st"], s["ts"], s["hr0"], s["hr1"])["refined"][..., :192, :192]
    assert torch.equal(trips["truth"][3][None], h1) and (got - want).abs().max() < 2e-3   # float16 storage


def test_blend_report_per_timestep(tmp_path, tiny_weights, capsys):
    from training import blend

    cfg = _moving_clip(tmp_path, 8, 5, 'strides = [1]\nspans = [{span = 3, strides = [1]}]\n'
                       'sequences = [{path = "frames/long"}]\nval_sequences = [{path = "frames/long"}]\n')
    argv = ["--config", str(cfg), "--data-root", str(tmp_path / "data"), "--weights", str(tiny_weights[0]),
            "--count", "6", "--size", "128", "--threads", "1", "--pool", str(tmp_path / "pool.pt")]
    assert blend.main(argv) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| all |")]
    assert {r[2].strip() for r in rows} <= {"1/3", "1/2", "2/3"} and sum(int(r[3]) for r in rows) == 6
    assert blend.main(argv) == 0 and (tmp_path / "pool.pt").exists()     # the second run reads the kept crops


def test_multiframe_training_resumes_exactly_at_any_radius(tmp_path, monkeypatch):
    from conftest import tiny_model
    from training import multiframe

    init = save_model(tiny_model(), tmp_path / "tiny.safetensors")
    cfg = _moving_clip(tmp_path, 10, 4, 'sequences = [{path = "frames/long"}]\nval_sequences = [{path = "frames/long"}]\n')

    def train(out: Path, iters: int, *extra: str, init: Path = init) -> dict:
        assert multiframe.main(["--config", str(cfg), "--data-root", str(tmp_path / "data"), "--init",
                                str(init), "--out", str(out), "--radius", "2", "--align", "4",
                                "--pool", "4", "--val-pool", "2", "--pool-size", "64", "--crop", "64",
                                "--margin", "8", "--batch", "2", "--iters", str(iters), "--val-every", "2",
                                "--ckpt-every", "1", "--log-every", "1", "--strides", "1", *extra]) == 0
        return tr.load_checkpoint(out / "last.pt")

    whole = train(tmp_path / "a", 4)
    loss = multiframe.MultiFrameTrainer.loss

    def crash_at_2(self, step):
        if step == 2:
            raise KeyboardInterrupt
        return loss(self, step)

    monkeypatch.setattr(multiframe.MultiFrameTrainer, "loss", crash_at_2)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", 4)
    monkeypatch.undo()
    resumed = train(tmp_path / "b", 4, "--resume")
    assert resumed["step"] == whole["step"] == 4 and resumed["model_args"]["radius"] == 2
    assert all(torch.equal(whole["model"][k], resumed["model"][k]) for k in whole["model"])
    rows = (tmp_path / "a" / "log.csv").read_text().split()
    assert rows[0] == "step,multi-frame,single-frame,start" and [r.split(",")[0] for r in rows[1:]] == ["0", "2", "4"]
    # --part neighbours (the default): the single-frame network stays --init's M_S, the rest is trained
    start = load_model(init).spatial.state_dict()
    assert all(torch.equal(whole["model"][f"single.{k}"], v) for k, v in start.items())
    assert whole["model"]["correct.weight"].abs().max() > 0          # the correction moved from its zero start
    # --part single: the neighbours' part stays at its start, the single-frame network moves
    single = train(tmp_path / "c", 2, "--part", "single")["model"]
    assert not single["correct.weight"].abs().max() and not single["align.2.weight"].abs().max()
    assert not torch.equal(single["single.tail.weight"], start["tail.weight"])
    # --part all: both
    both = train(tmp_path / "d", 2, "--part", "all")["model"]
    assert both["correct.weight"].abs().max() > 0 and not torch.equal(both["single.tail.weight"], start["tail.weight"])
    # M_S pads as --init's (the tiny file's: replicate) unless --spatial-padding says otherwise; the export keeps it
    assert whole["padding"] == "replicate"
    assert train(tmp_path / "e", 2, "--spatial-padding", "zeros")["padding"] == "zeros"
    assert multiframe.main(["--config", str(cfg), "--init", str(init), "--out", str(tmp_path / "e"),
                            "--export", str(tmp_path / "e.safetensors")]) == 0
    exported = load_model(tmp_path / "e.safetensors")
    assert exported.config.spatial_padding == "zeros" and exported.config.refine_padding == "replicate"
    assert {m.padding_mode for m in exported.spatial.modules() if isinstance(m, torch.nn.Conv2d)} == {"zeros"}
    # an --init whose M_S is multi-frame continues from all of it (at lr 0 it stays as it was);
    # one of another shape is refused
    cont = train(tmp_path / "f", 2, "--part", "all", "--lr", "0", init=tmp_path / "e.safetensors")
    assert cont["padding"] == "zeros"
    assert all(torch.equal(cont["model"][k], v) for k, v in exported.spatial.state_dict().items())
    assert cont["model"]["correct.weight"].abs().max() > 0
    with pytest.raises(SystemExit, match="has radius 2 and lk_steps 2: train it with"):
        train(tmp_path / "g", 2, "--radius", "1", init=tmp_path / "e.safetensors")
    with pytest.raises(SystemExit, match="other layers than --align 8"):
        train(tmp_path / "h", 2, "--align", "8", init=tmp_path / "e.safetensors")


def test_multiframe_training_adds_windows_of_moving_stills(tmp_path):
    from conftest import tiny_model
    from training import multiframe
    from training.datasets import downscale

    init = save_model(tiny_model(), tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(5)
    for i in range(2):   # smooth random textures, large enough for 64-pixel low-res crops
        img = np.kron(rng.integers(0, 256, (40, 48, 3)), np.ones((5, 5, 1))).astype(np.uint8)
        save(img, tmp_path / "data" / "images" / "big" / f"{i}.png")
    cfg = _moving_clip(tmp_path, 6, 4, 'sr_images = ["images/big"]\nsequences = [{path = "frames/long"}]\n'
                       'val_sequences = [{path = "frames/long"}]\n')
    out = tmp_path / "run"
    assert multiframe.main(["--config", str(cfg), "--data-root", str(tmp_path / "data"), "--init", str(init),
                            "--out", str(out), "--align", "4", "--pool", "2", "--val-pool", "2", "--stills", "3",
                            "--pool-size", "64", "--crop", "64", "--margin", "8", "--batch", "2", "--iters", "2",
                            "--val-every", "2", "--strides", "1"]) == 0
    stills = torch.load(next(out.glob("pool-stills-3-64-shift4-p0-*.pt")), weights_only=True)
    lr, hr = stills["lr"].float(), stills["hr"].float()
    assert lr.shape == (3, 3, 3, 64, 64) and hr.shape == (3, 3, 128, 128)
    # the centre is the still itself (its truth downscaled); the neighbours moved with the camera
    assert torch.allclose(lr[:, 1], downscale(hr), atol=2e-3)
    assert all((lr[:, j] - lr[:, 1]).abs().mean() > 0.01 for j in (0, 2))
    assert stills["flows"].float().abs().mean() > 0.1


def test_moving_still_patches_cover_and_uncover_the_background():
    from training.datasets import MovingStill

    img = np.full((96, 120, 3), 200, np.uint8)          # flat: the camera's motion changes nothing
    other = np.full((80, 80, 3), 7, np.uint8)
    seq = MovingStill(img, 3, np.random.default_rng(3), max_shift=3.0, border=8, patches=[other])
    alpha = seq.patches[0][0][8:-8, 8:-8, 3] / 255
    frames = [seq.frame(k).astype(int) for k in range(3)]
    # the middle frame: the image where the patch is not, the patch where it fully is
    assert (alpha == 0).any() and (alpha == 1).any()
    assert (frames[1][alpha == 0] == 200).all() and (frames[1][alpha == 1] == 7).all()
    # the patch moves by its own velocity, one way before the middle and the other after:
    # it uncovers part of where it was, and covers background it did not
    velocity = seq.patches[0][1]
    assert np.abs(velocity).max() > 1
    for f in (frames[0], frames[2]):
        assert (f[alpha == 1] > 190).any() and (f[alpha == 0] < 17).any()
    assert not np.array_equal(frames[0], frames[2])


def test_losses_match_hand_computed_values():
    t = lambda *v: torch.tensor(v, dtype=torch.float32).view(1, 1, 1, -1)  # noqa: E731
    h0, h1, h2 = t(0.0, 0.0), t(1.0, 0.5), t(0.2, 0.2)
    l1_mid = t(0.25)
    out = {
        "st": t(0.0, 0.5),        # |1-0|,|0.5-0.5| -> 0.5
        "ts": t(1.0, 1.0),        # 0, 0.5 -> 0.25
        "fused": t(0.5, 0.0),     # 0.5, 0.5 -> 0.5
        "refined": t(1.0, 0.5),   # exact -> 0
        "hr0": t(0.1, -0.1),      # vs h0: 0.1
        "hr1": t(0.0, 0.6),       # vs h2: 0.2, 0.4 -> 0.3
        "lt": t(0.75),            # vs 0.25 -> 0.5
    }
    losses = dsfn_losses(out, h0, h1, h2, l1_mid)
    expect = {"st": 0.5, "ts": 0.25, "fused": 0.5, "refined": 0.0, "spatial": 0.4, "temporal": 0.5}
    assert set(losses) == set(LOSS_NAMES)
    for k, v in expect.items():
        assert float(losses[k]) == pytest.approx(v, abs=1e-6), k
    assert float(total_loss(losses, STAGE_LOSSES["joint"])) == pytest.approx(2.15, abs=1e-6)   # Eq. 17
    assert float(total_loss(losses, STAGE_LOSSES["fusion"])) == pytest.approx(0.5, abs=1e-6)   # L_F + L_R
    assert STAGE_LOSSES["spatial"] == ("spatial",) and STAGE_LOSSES["temporal"] == ("temporal",)


# ----------------------------------------------------------------------------- metrics
def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Direct (windowed) SSIM of Wang et al. on one channel, valid mode: 11x11 Gaussian, sigma 1.5."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / g.sum() ** 2
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            a, b = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_metrics():
    rng = np.random.default_rng(0)
    x = rng.random((3, 16, 18))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    ref = np.mean([_ssim_reference(y[c], x[c]) for c in range(3)])
    assert float(ssim(ty, tx)[0]) == pytest.approx(ref, abs=1e-6)
    assert float(ssim(tx, tx)[0]) == pytest.approx(1.0, abs=1e-9)
    mse = ((y - x) ** 2).mean()
    assert float(psnr(ty, tx)[0]) == pytest.approx(10 * math.log10(1 / mse), abs=1e-4)
    # predictions are clamped to [0, 1]; batches give one value per image
    assert float(psnr(torch.full((1, 3, 4, 4), 1.5), torch.ones(1, 3, 4, 4))[0]) == pytest.approx(100.0)
    assert psnr(torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.1)).shape == (2,)
    with pytest.raises(ValueError, match="window"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_downscale_protocol():
    x = torch.rand(1, 3, 33, 34)
    d = downscale(x)
    assert d.shape == (1, 3, 16, 17)
    ref = torch.nn.functional.interpolate(x[..., :32, :34], scale_factor=0.5, mode="bicubic", align_corners=False)
    assert torch.allclose(d, ref.clamp(0, 1))


# ----------------------------------------------------------------------------- augmentation
def test_augmentations_keep_frames_consistent():
    base = np.random.default_rng(3).integers(0, 200, (12, 10, 3)).astype(np.int32)
    frames = [base + 20 * k for k in range(3)]
    seen = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        out = augment(random_crop(frames, 8, rng), rng)
        # frame k is frame 0 + 20 k: after the same transform the differences stay constant
        d1, d2 = out[1] - out[0], out[2] - out[0]
        assert len(np.unique(d1)) == 1 and len(np.unique(d2)) == 1  # same spatial transform
        assert int(d1.flat[0]) in (20, -20) and int(d2.flat[0]) == 2 * int(d1.flat[0])  # middle stays middle
        seen.add((out[0].shape, int(d1.flat[0])))
    assert {s[1] for s in seen} == {20, -20}       # temporal reversal happens
    rot = [np.rot90(base, k) for k in range(4)]
    shapes = {o.shape for o in (augment([base], np.random.default_rng(s))[0] for s in range(20))}
    assert shapes == {r.shape for r in rot}        # rotations happen (10x12 and 12x10)
    assert [f.shape for f in center_crop(frames, 8)] == [(8, 8, 3)] * 3
    # random crop takes the same window in every frame
    rng = np.random.default_rng(5)
    c = random_crop(frames, 6, rng)
    assert all(np.array_equal(c[k] - 20 * k, c[0]) for k in range(3))


def test_tripletset_augmented_sample_is_consistent(data):
    seqs = vimeo_sequences(data / "vimeo", "train")
    ts = TripletSet(seqs, [1], crop=32)
    for seed in range(5):
        s = ts.get(seed % len(ts), np.random.default_rng(seed))
        assert [f.shape for f in s] == [(32, 32, 3)] * 3 + [(1, 1, 1)] and all(f.dtype == np.float32 for f in s)
        assert all(0 <= f.min() and f.max() <= 1 for f in s) and float(s[3].flat[0]) == 0.5   # the middle frame
    a = ts.get(1, np.random.default_rng(0), train=False)
    b = ts.get(1, np.random.default_rng(99), train=False)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))   # deterministic validation


def test_tripletset_timesteps_and_reversal(data):
    """Spans give the outer frames i, i + m and the truth i + j at t = j/m; temporal
    reversal swaps the outer frames and turns t into 1 - t."""
    seq = [np.full((8, 8, 3), 10 * i, np.uint8) for i in range(7)]

    class Seq:
        def __len__(self):
            return len(seq)

        def frame(self, i):
            return seq[i]

    ts = TripletSet([Seq()], crop=None, spans={2: [1], 4: [1]})
    assert len(ts) == 5 + 3 * 3                                   # span 2: i < 5; span 4: i < 3, j = 1, 2, 3
    seen = set()
    for k in range(len(ts)):
        for seed in range(4):
            a, truth, b, t = ts.get(k, np.random.default_rng(seed), train=seed > 0)
            i0, i1, i2 = (round(float(x.flat[0]) * 255 / 10) for x in (a, truth, b))
            assert float(t.flat[0]) == pytest.approx((i1 - i0) / (i2 - i0))
            seen.add((abs(i2 - i0), float(t.flat[0])))
    assert {t for m, t in seen if m == 4} == {0.25, 0.5, 0.75} and {t for m, t in seen if m == 2} == {0.5}


# ----------------------------------------------------------------------------- robustness
def test_broken_image_is_skipped_and_counted(data, tmp_path, caplog):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(data, root)
    (root / "vimeo" / "sequences" / "00001" / "0002" / "im2.png").write_bytes(b"not a png at all")
    ts = TripletSet(vimeo_sequences(root / "vimeo", "train"), [1], crop=32)
    rng = np.random.default_rng(0)
    samples = [ts.get(1, rng) for _ in range(3)]          # index 1 is the broken folder
    assert len(samples) == 3 and ts.skipped >= 3
    assert "skipping unreadable sample" in caplog.text
    # a training run over the broken tree completes
    ck = run_stage(root, "fusion", tmp_path / "run", iters=3, extra=[("train.batch", "4")])
    assert ck["step"] == 3
    # ... also when worker processes read the files: the count reaches the main process
    caplog.clear()
    ck = run_stage(root, "fusion", tmp_path / "run2", iters=3, extra=[("train.batch", "8"), ("train.workers", "2")])
    assert ck["step"] == 3 and "unreadable samples were skipped" in caplog.text


def test_nan_loss_step_is_skipped(data, tmp_path, monkeypatch):
    from training.config import load_config

    cfg = load_config(None, tiny_sets() + [f"data.root={json.dumps(str(data))}"])
    t = tr.Trainer(cfg, "fusion", tmp_path / "x", device="cpu")
    t.train_set, t.val = tr.build_datasets(cfg, "fusion", 32)
    t.train_step()
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    real_total = tr.total_loss
    monkeypatch.setattr(tr, "total_loss", lambda losses, names: real_total(losses, names) * float("nan"))
    stats = t.train_step()
    assert math.isnan(stats["loss"]) and t.step == 2 and t.skipped_steps == 1
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, before[k]), k       # no update from the NaN step
    monkeypatch.setattr(tr, "total_loss", real_total)
    stats = t.train_step()
    assert math.isfinite(stats["loss"]) and t.step == 3
    assert all(torch.isfinite(v).all() for v in t.model.state_dict().values())
    assert t.state()["skipped_steps"] == 1


# ----------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("w")
    torch.manual_seed(0)
    two = save_model(DSFN(DSFNConfig.from_dict(TINY_MODEL)), d / "two.safetensors")
    one = save_model(DSFN(DSFNConfig.from_dict({**TINY_MODEL, "fusion_masks": 1})), d / "one.safetensors")
    return two, one


def _numbers(report: str, row: str) -> list[float]:
    line = next(ln for ln in report.splitlines() if ln.startswith(f"| {row} |"))
    return [float(c) for c in line.strip("|").split("|")[1:]]


def test_evaluate_prints_all_rows(data, tmp_path, tiny_weights, capsys):
    two, one = tiny_weights
    report_path = tmp_path / "report.md"
    ev.main(["--data", str(data / "frames"), "--layout", "frames", "--weights", str(two),
             "--one-mask-weights", str(one), "--out", str(report_path), "--panels", str(tmp_path / "panels"),
             "--quiet", "--json", str(tmp_path / "scores.json")])
    printed = capsys.readouterr().out
    report = report_path.read_text()
    assert report.strip() in printed
    scores = json.loads((tmp_path / "scores.json").read_text())
    for row in (ev.ST, ev.TS, ev.F1, ev.F2, ev.R, ev.R1, ev.BLEND):
        r = scores["rows"][row]  # full precision, rounding to the report's numbers
        assert r["n"] == 4 and len(scores["per_triplet"][row]) == 4
        assert [round(r["psnr"], 2), round(r["ssim"], 4)] == _numbers(report, row)
    assert len(scores["triplets"]) == 4 and scores["command"].startswith("python -m training.evaluate")
    for row in (ev.ST, ev.TS, ev.F1, ev.F2, ev.R, ev.R1, ev.BLEND, ev.SPLINE_FLOW, ev.SPLINE_FLOW_QP, ev.FLOW_SPLINE,
                ev.MS_FLOW, ev.SPLINE_RIFE, ev.SPLINE_RIFE_R, ev.RIFE_SPLINE):
        p, s = _numbers(report, row)
        assert 5 < p < 100 and -1 <= s <= 1, row
    assert (f"{ev.SPLINE_FLOW_QP}: the mean of FlowFPS's middle frames with pel=4, blksize=16, overlap=8, "
            "searchparam=4 and with pel=4, blksize=8, overlap=4, searchparam=2") in report
    # an untrained fusion head gives masks 0.5: F = (S->T + T->S) / 2, R = F (zero-initialised R)
    assert _numbers(report, ev.R) == _numbers(report, ev.F2)
    # the streams (frames 0-1-2 ... 3-4-5 of a 6-frame folder)
    assert "- Triplets: 4" in report
    for key in ("- Command: `python -m training.evaluate --data", "- Date: ", "- Machine: ", "one.safetensors"):
        assert key in report
    assert len(list((tmp_path / "panels").glob("*.png"))) == 4


def test_evaluate_rows_without_one_mask_model(data, tmp_path, tiny_weights, capsys):
    two, one = tiny_weights
    ev.main(["--data", str(data / "frames" / "seq"), "--weights", str(two), "--max", "2", "--no-mvtools", "--quiet"])
    out = capsys.readouterr().out
    assert f"| {ev.F1} | n/a (pass --one-mask-weights) |" in out
    assert f"| {ev.SPLINE_FLOW} | skipped (--no-mvtools) |" in out
    assert "- Triplets: 2" in out and ev.R1 not in out
    _numbers(out, ev.F2)
    # a one-mask file as --weights: its F is the one-mask row
    ev.main(["--data", str(data / "frames" / "seq"), "--weights", str(one), "--max", "1", "--no-mvtools", "--quiet"])
    out = capsys.readouterr().out
    _numbers(out, ev.F1)
    assert f"| {ev.F2} | n/a" in out
    with pytest.raises(SystemExit, match="one-mask model too"):
        ev.main(["--data", str(data / "frames"), "--weights", str(one), "--one-mask-weights", str(one)])
    with pytest.raises(SystemExit, match="fusion_masks=2"):
        ev.main(["--data", str(data / "frames"), "--weights", str(two), "--one-mask-weights", str(two)])


@pytest.mark.parametrize("broken,args,line", [
    ("002", ["--no-mvtools"], "- Triplets: 1 (3 skipped: unreadable)"),                 # 002 is in triplets 0, 1, 2
    ("005", ["--t"], "- Triplets per timestep: 1, 2, 3, 2, 1 (5 skipped: unreadable)"),  # the last at each t
])
def test_evaluate_skips_broken_triplets(data, tmp_path, tiny_weights, capsys, broken, args, line):
    """The main table and --t load triplets alike: one with an unreadable frame is skipped."""
    import shutil

    seq = tmp_path / "seq"
    shutil.copytree(data / "frames" / "seq", seq)
    (seq / f"{broken}.png").write_bytes(b"broken")
    ev.main(["--data", str(seq), "--weights", str(tiny_weights[0]), *args, "--quiet"])
    assert line in capsys.readouterr().out


def test_evaluate_layouts(data, tmp_path):
    trips = ev.list_triplets(data / "vimeo", "vimeo")
    assert [t.name for t in trips] == ["00001/0005", "00001/0006"]
    assert len(trips[0].load()) == 3
    # septuplet: every consecutive triplet
    sep = tmp_path / "sep"
    frames = moving_frames(np.random.default_rng(0), 7, size=32)
    for i, f in enumerate(frames):
        save(f, sep / "sequences" / "00001" / "0001" / f"im{i + 1}.png")
    (sep / "sep_testlist.txt").write_text("00001/0001\n")
    assert [t.idx for t in ev.list_triplets(sep, "vimeo")] == [(i, i + 1, i + 2) for i in range(5)]
    assert [t.idx for t in ev.list_triplets(sep, "vimeo", stride=3)] == [(0, 3, 6)]
    # frames: one folder, a folder of folders, stride
    assert len(ev.list_triplets(data / "frames" / "seq", "frames")) == 4
    assert len(ev.list_triplets(data / "frames", "frames", stride=2)) == 2
    # ucf
    for k in range(2):
        for name, f in zip(("frame_00.png", "frame_01_gt.png", "frame_02.png"), frames):
            save(f, tmp_path / "ucf" / str(k) / name)
    ucf = ev.list_triplets(tmp_path / "ucf", "ucf")
    assert [t.name for t in ucf] == ["0", "1"]
    assert np.array_equal(ucf[0].load()[1], frames[1])
    # middlebury "other" layout: frame07..frame14, every consecutive triplet
    for k in range(7, 15):
        save(frames[k % 7], tmp_path / "mb" / "Beanbags" / f"frame{k:02d}.png")
    mb = ev.list_triplets(tmp_path / "mb", "middlebury")
    assert [t.name for t in mb] == [f"Beanbags:frame{k:02d}" for k in range(8, 14)]
    # with other-gt-interp: (frame10, frame10i11, frame11)
    save(frames[0], tmp_path / "mb2" / "other-data" / "Walking" / "frame10.png")
    save(frames[2], tmp_path / "mb2" / "other-data" / "Walking" / "frame11.png")
    save(frames[1], tmp_path / "mb2" / "other-gt-interp" / "Walking" / "frame10i11.png")
    mb2 = ev.list_triplets(tmp_path / "mb2", "middlebury")
    assert len(mb2) == 1 and np.array_equal(mb2[0].load()[1], frames[1])
    # --max: evenly spaced
    assert [t.name for t in ev.select(mb, 3)] == ["Beanbags:frame08", "Beanbags:frame10", "Beanbags:frame13"]


def test_evaluate_config_split(data, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nroot = "."\nval_sequences = [{path = "frames/seq", start = 1}]\n')
    trips, desc = ev.config_triplets(str(cfg), "val", str(data))
    assert [t.idx for t in trips] == [(0, 1, 2), (1, 2, 3), (2, 3, 4)] and "frames/seq[1:]" in desc


def test_mvtools_baseline_interpolates_motion():
    pytest.importorskip("vapoursynth")
    from training.mvbaseline import QUARTER_PEL, flowfps_middle, flowfps_of, frames_from_clip
    from training.flowfps import clip_from_frames

    f = [x.astype(np.float32) / 255 for x in moving_frames(np.random.default_rng(2), 3, size=64, step=(3, 0))]
    mid = frames_from_clip(flowfps_middle(clip_from_frames([f[0], f[2]])))[0]
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1)  # noqa: E731
    blend = float(psnr(t((f[0] + f[2]) / 2), t(f[1]))[0])
    assert float(psnr(t(mid), t(f[1]))[0]) > blend + 3
    # the same on given (e.g. M_S's high-res) frames, clamped to [0, 1]
    mid2 = flowfps_of(f[0], f[2])
    assert mid2.shape == f[1].shape and 0 <= mid2.min() and mid2.max() <= 1
    assert float(psnr(t(mid2), t(f[1]))[0]) > blend + 3
    # the quarter-pel settings are used (pel 4, not 2) and interpolate the motion too
    for s in QUARTER_PEL:
        qp = flowfps_of(f[0], f[2], s)
        assert not np.array_equal(qp, mid2) and float(psnr(t(qp), t(f[1]))[0]) > blend + 3, s


@pytest.mark.slow
def test_distributed_training_two_processes(data, tmp_path):
    """torchrun with two CPU processes (gloo): the same script trains with DDP."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.train", *tiny_args(data), "--stage", "temporal", "--out", str(out),
           "--iters", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ck = tr.load_checkpoint(out / "last.pt")
    assert ck["step"] == 2 and [int(r["step"]) for r in read_log(out)] == [1, 2]


def test_evaluate_runs_the_models_as_the_filter(data, monkeypatch):
    """evaluate (--st-scale, --ensemble) runs each model through DSFN.run with those
    options: the filter's path, so it scores what upscale(st_scale=, ensemble=) outputs."""
    from conftest import tiny_model

    net = tiny_model()
    calls = []
    real = DSFN.run
    monkeypatch.setattr(DSFN, "run", lambda self, *a, **kw: calls.append((self, kw)) or real(self, *a, **kw))
    trips = ev.list_triplets(data / "frames" / "seq", "frames")[:1]
    res = ev.evaluate(trips, net, mvtools=False, progress=False, st_scale=0.5, ensemble=True)
    assert calls == [(net, {"st_scale": 0.5, "ensemble": True, "before": None, "after": None})]
    assert res.names == [trips[0].name]


def test_run_st_scale_override_reaches_only_the_st_stream():
    """On frames that need no padding either way (128x128: a multiple of multiple_for(1.0)
    = 64 and of multiple_for(0.25) = 128), only S->T changes; on other sizes the padding
    to multiple_for(st_scale) may change too, and with it T->S at the borders."""
    from conftest import tiny_model

    net = tiny_model()
    l0, l1 = torch.rand(2, 1, 3, 128, 128)
    scale = 0.25 if net.config.st_scale != 0.25 else 1.0
    assert net.multiple_for(scale) == 128
    with torch.no_grad():
        own = net.run(l0, l1)
        other = net.run(l0, l1, st_scale=scale)
    assert own["st"].shape == other["st"].shape == (1, 3, 256, 256)
    torch.testing.assert_close(own["ts"], other["ts"])
    assert (own["st"] - other["st"]).abs().max() > 1e-4


def test_run_ensemble_is_the_filters():
    """DSFN.run(ensemble=True), which evaluate --ensemble scores, is what
    upscale(ensemble=True) outputs (the engine's frames), on frames of any size."""
    from conftest import tiny_model
    from vsdsfn.engine import Engine

    net = tiny_model()
    l0, l1 = torch.rand(2, 1, 3, 20, 28)
    with torch.no_grad():
        got = net.run(l0, l1, ensemble=True)
        plain = net.run(l0, l1)
    frames = [x[0].numpy() for x in (l0, l1)]
    want = Engine(net, device="cpu", layout="chw", ensemble=True).interpolate([tuple(frames)])[0]
    np.testing.assert_allclose(got["refined"][0].clamp(0, 1).numpy(), want, atol=1e-5)
    assert (got["refined"] - plain["refined"]).abs().max() > 1e-4


def write_gray_y4m(path: Path, levels: list[int], w: int = 32, h: int = 16) -> None:
    """A 4:4:4 YUV4MPEG2 file whose frame i is flat gray with luma ``levels[i]``."""
    write_flat_y4m(path, [(y, 128, 128) for y in levels], w, h)


def test_video_sequence_cache(tmp_path, monkeypatch):
    pytest.importorskip("vapoursynth")
    from training.datasets import VideoSequence

    cache = tmp_path / "cache"
    monkeypatch.setenv("VSDSFN_CACHE", str(cache))
    video = tmp_path / "a" / "clip[1].y4m"  # glob characters in the name
    video.parent.mkdir()
    write_gray_y4m(video, [16, 126, 235])
    # another video's cache that only starts with the same stem is left alone
    cache.mkdir()
    unrelated = cache / "clip[1]-x-0123456789ab.npy"
    unrelated.write_bytes(b"other")
    seq = VideoSequence(video, start=1)
    assert unrelated.exists()
    unrelated.unlink()
    assert len(seq) == 2 and seq.name == "clip[1].y4m[1:]"
    # limited-range luma 126 -> about (126 - 16) * 255 / 219 = 128; 235 -> 255
    assert abs(float(seq.frame(0).mean()) - 128) < 2 and seq.frame(1).min() >= 253
    first = sorted(cache.glob("*.npy"))
    assert len(first) == 1
    # the same file again: the cache is reused, not decoded again
    VideoSequence(video)
    assert sorted(cache.glob("*.npy")) == first
    # a video with the same name elsewhere gets its own cache
    other = tmp_path / "b" / "clip[1].y4m"
    other.parent.mkdir()
    write_gray_y4m(other, [16, 16])
    assert len(VideoSequence(other)) == 2
    assert len(list(cache.glob("*.npy"))) == 2
    # a changed file is decoded again and its stale cache removed; the other one stays
    write_gray_y4m(video, [235, 16])
    os.utime(video, ns=(1, 1))
    seq = VideoSequence(video)
    assert len(seq) == 2 and seq.frame(0).min() >= 253
    files = list(cache.glob("*.npy"))
    assert len(files) == 2 and first[0] not in files
    assert not list(cache.glob("*.tmp*"))


def write_flat_y4m(path: Path, yuv: list[tuple[int, int, int]], w: int = 32, h: int = 16) -> None:
    """A 4:4:4 YUV4MPEG2 file whose frame i is flat with (Y, U, V) = ``yuv[i]``."""
    head = f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C444\n".encode()
    body = b"".join(b"FRAME\n" + bytes([y]) * (w * h) + bytes([u]) * (w * h) + bytes([v]) * (w * h)
                    for y, u, v in yuv)
    path.write_bytes(head + body)


def test_video_sequence_ffmpeg_decoder(tmp_path, monkeypatch):
    """Without VapourSynth, videos are decoded by the ffmpeg command, to the same RGB."""
    import shutil

    from training import datasets

    if not (shutil.which("ffmpeg") and shutil.which("ffprobe")):
        pytest.skip("ffmpeg/ffprobe not installed")
    monkeypatch.setenv("VSDSFN_CACHE", str(tmp_path / "cache"))
    video = tmp_path / "c.y4m"
    yuv = [(16, 128, 128), (126, 128, 128), (235, 128, 128), (100, 90, 170), (150, 170, 60)]
    write_flat_y4m(video, yuv)
    monkeypatch.setattr(datasets, "_vapoursynth_source", lambda: False)  # "auto" falls back
    seq = datasets.VideoSequence(video, start=1)
    assert len(seq) == 4 and seq.frame(0).shape == (16, 32, 3) and seq.frame(0).dtype == np.uint8
    assert abs(float(seq.frame(0).mean()) - 128) < 2 and seq.frame(1).min() >= 253
    # BT.601 limited range (16 lines), as the VapourSynth path: Y 100, U 90, V 170
    y, u, v = 1.164 * (100 - 16), 90 - 128, 170 - 128
    expect = np.array([y + 1.596 * v, y - 0.392 * u - 0.813 * v, y + 2.017 * u]).clip(0, 255)
    assert np.abs(seq.frame(2).reshape(-1, 3).mean(0) - expect).max() < 3
    # no decoder at all: a clear error that names every way to get one
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(datasets, "_opencv", lambda: False)
    monkeypatch.setenv("VSDSFN_CACHE", str(tmp_path / "cache2"))
    with pytest.raises(RuntimeError, match="VapourSynth.*ffmpeg.*OpenCV"):
        datasets.VideoSequence(video)
    with pytest.raises(RuntimeError, match="ffmpeg and ffprobe commands are not on PATH"):
        datasets.VideoSequence(video, decoder="ffmpeg")

    def half_written(self, tmp):  # a decoder that dies after writing part of the cache
        tmp.write_bytes(b"partial")
        raise RuntimeError("decoder died")

    monkeypatch.setattr(datasets.VideoSequence, "_decode_ffmpeg", half_written)
    with pytest.raises(RuntimeError, match="decoder died"):
        datasets.VideoSequence(video, decoder="ffmpeg")
    assert not list((tmp_path / "cache2").glob("*"))  # no half-written cache left behind
    with pytest.raises(ValueError, match="decoder"):
        datasets.VideoSequence(video, decoder="pyav")


def test_video_decoders_agree(tmp_path, monkeypatch):
    """Every installed decoder (VapourSynth, ffmpeg, OpenCV) gives the same frames within
    rounding (a BT.601 video: OpenCV's matrix is the others' there)."""
    from training import datasets

    have = [d for d in datasets.DECODERS
            if {"vapoursynth": datasets._vapoursynth_source, "ffmpeg": datasets._ffmpeg,
                "opencv": datasets._opencv}[d]()]
    if len(have) < 2:
        pytest.skip(f"needs two decoders, has {have}")
    video = tmp_path / "c.y4m"
    write_flat_y4m(video, [(60, 200, 100), (180, 70, 140), (100, 90, 170)])
    seqs = []
    for d in have:
        monkeypatch.setenv("VSDSFN_CACHE", str(tmp_path / d))
        seqs.append(datasets.VideoSequence(video, decoder=d))
    for d, seq in zip(have[1:], seqs[1:]):
        assert len(seq) == 3, d
        for i in range(3):
            diff = np.abs(seq.frame(i).astype(int) - seqs[0].frame(i).astype(int)).max()
            assert diff <= 2, f"{d} vs {have[0]}, frame {i}: {diff}"


@pytest.mark.parametrize("masks", [2, 1])
def test_save_panel_layouts(tmp_path, masks):
    """Panels of a two-mask model and of the one-mask ablation: two rows of five tiles."""
    rng = torch.Generator().manual_seed(0)
    img = lambda c=3: torch.rand(1, c, 24, 40, generator=rng)  # noqa: E731
    out = {"st": img(), "ts": img(), "fused": img(), "refined": img(), "masks": img(masks)}
    ev.save_panel(tmp_path / "p.png", img(), out)
    assert Image.open(tmp_path / "p.png").size == (5 * 40, 2 * 24)


def test_pack_writes_a_compact_copy_that_trains(data, tmp_path, monkeypatch):
    """training.pack: every sequence once as an RGB H.264 video, stills as JPEG, and a
    config whose [data] points at them with the same slices; the copy decodes close to
    the originals and builds the training sets."""
    import shutil

    from training.config import load_config
    from training.datasets import FolderSequence, open_sequence
    from training.pack import pack

    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg not installed")
    monkeypatch.setenv("VSDSFN_CACHE", str(tmp_path / "cache"))
    write_flat_y4m(tmp_path / "flat.y4m", [(60, 200, 100)] * 4)  # a video given by absolute path
    cfg = tmp_path / "my.toml"
    cfg.write_text(
        "# my config\n[model]\nrefine_channels = 4  # kept\n\n[data]\n"
        f'sequences = [{{path = "frames/seq", stop = 5}}, {{path = "{tmp_path / "flat.y4m"}"}}]\n'
        'val_sequences = [{path = "frames/seq", start = 3}]\n'
        'sr_images = ["images"]\nsr_val = ["images"]\nstrides = [1, 2]\n\n[train]\nbatch = 3\n')
    out = tmp_path / "packed"
    path = pack(cfg, data, out, crf=12, jpeg=95)
    packed = load_config(path)
    d = packed["data"]
    assert packed["model"]["refine_channels"] == 4 and packed["train"]["batch"] == 3
    assert d["strides"] == [1, 2] and d["sr_images"] == d["sr_val"] == ["images"]
    assert d["sequences"] == [{"path": "seq/seq.mkv", "stop": 5}, {"path": "seq/flat.y4m"}]
    assert d["val_sequences"] == [{"path": "seq/seq.mkv", "start": 3}]
    assert sorted(p.name for p in (out / "seq").iterdir()) == ["flat.y4m", "seq.mkv"]
    assert len(list((out / "images").glob("*.jpg"))) == 4
    orig, copy = FolderSequence(data / "frames" / "seq"), open_sequence(out / "seq" / "seq.mkv")
    assert len(copy) == len(orig) == 6
    for i in range(6):
        mse = np.mean((copy.frame(i).astype(float) - orig.frame(i).astype(float)) ** 2)
        assert 10 * np.log10(255 ** 2 / mse) > 35
    packed["data"]["root"] = str(out)
    train, val = tr.build_datasets(packed, "temporal", 32)
    assert len(val) > 0 and len(train.sample(np.random.default_rng(0))) == 4   # 3 frames and the timestep
    # --videos encode: the video re-encoded as RGB H.264 too, decoding to the same colours
    path2 = pack(cfg, data, tmp_path / "packed2", crf=12, videos="encode")
    assert load_config(path2)["data"]["sequences"][1] == {"path": "seq/flat.mkv"}
    a, b = open_sequence(tmp_path / "flat.y4m"), open_sequence(tmp_path / "packed2" / "seq" / "flat.mkv")
    assert len(a) == len(b) == 4 and np.abs(a.frame(3).astype(int) - b.frame(3).astype(int)).max() <= 3


def test_evaluate_at_timesteps_honours_the_model_options(data, tmp_path, tiny_weights, capsys, monkeypatch):
    """--t runs the model as the main table does (--ensemble, --st-scale), writes --json,
    and refuses the options it has no use for."""
    calls = []
    real = DSFN.run
    monkeypatch.setattr(DSFN, "run", lambda self, *a, **kw: calls.append(kw) or real(self, *a, **kw))
    out = tmp_path / "t.json"
    ev.main(["--data", str(data / "frames" / "seq"), "--weights", str(tiny_weights[0]), "--t", "--ensemble",
             "--st-scale", "0.5", "--json", str(out), "--quiet"])
    assert calls and all(kw["ensemble"] is True and kw["st_scale"] == 0.5 for kw in calls)
    scores = json.loads(out.read_text())
    assert list(scores["timesteps"]) == ["1/4", "1/3", "1/2", "2/3", "3/4"]
    assert scores["timesteps"]["1/4"]["rows"][ev.R]["n"] == 2 and "flip ensemble" in capsys.readouterr().out
    for flag in (["--panels", str(tmp_path / "p")], ["--one-mask-weights", str(tiny_weights[1])], ["--no-model"]):
        with pytest.raises(SystemExit, match=f"--t does not take {flag[0]}"):
            ev.main(["--data", str(data / "frames" / "seq"), "--weights", str(tiny_weights[0]), "--t", *flag])


def test_srset_image_cache_is_bounded_and_not_pickled(data):
    """SRSet keeps decoded images up to cache_bytes (80x80 RGB: 19200 bytes each), the
    most recently used; a pickled copy (a spawned DataLoader worker's) carries none."""
    import pickle

    from training.datasets import SRSet, list_images

    ds = SRSet(list_images(data / "images"), crop=32, cache_bytes=2 * 80 * 80 * 3)
    rng = np.random.default_rng(0)
    for i in (0, 1, 2, 3, 1):
        ds.get(i, rng)
    assert list(ds._cache) == [3, 1]
    assert len(pickle.dumps(ds)) < 2000
    assert pickle.loads(pickle.dumps(ds)).get(0, rng)[0].shape == (32, 32, 3)


def test_data_section_takes_the_given_root_else_the_configs_from_the_working_directory(tmp_path, monkeypatch):
    from training.config import data_section

    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nroot = "here"\nval_sequences = ["a"]\n')
    monkeypatch.chdir(tmp_path)
    data, root = data_section(cfg)
    assert data["val_sequences"] == ["a"] and root == tmp_path / "here"
    assert data_section(cfg, tmp_path / "else")[1] == tmp_path / "else"


def test_pool_trainer_validates_and_keeps_a_moving_average_and_resumes_it_exactly(tmp_path):
    import argparse

    from training.loop import PoolTrainer

    class Toy(PoolTrainer):
        """One weight pulled towards 1; its validation score is the weight itself."""

        crash_at: int | None = None

        def __init__(self, args):
            super().__init__(args, args.out)
            self.net = torch.nn.Linear(1, 1, bias=False)
            torch.nn.init.zeros_(self.net.weight)
            self.seen: list[float] = []

        def modules(self):
            return {"net": self.net}

        def loss(self, step):
            if step == self.crash_at:
                raise KeyboardInterrupt
            return (self.net.weight - 1).abs().sum()

        def validate(self):
            self.seen.append(float(self.net.weight.detach()))
            return {"psnr": self.seen[-1]}

    def run(out, ema, resume=False, crash_at=None):
        args = argparse.Namespace(out=out, iters=6, lr=0.1, warmup=1, log_every=1, val_every=2, ckpt_every=1,
                                  ema=ema, resume=resume)
        toy = Toy(args)
        toy.crash_at = crash_at
        toy.start()
        return toy, tr.load_checkpoint(out / "last.pt"), tr.load_checkpoint(out / "best.pt")

    plain, last, best = run(tmp_path / "plain", 0.0)
    assert last["ema"] is None and plain.seen[-1] == float(last["net"]["weight"])    # the live weight validated
    toy, last, best = run(tmp_path / "ema", 0.5)
    live, avg = float(last["net"]["weight"]), float(last["ema"]["net.weight"])
    assert 0 < avg < live and toy.seen[-1] == avg == toy.best                        # the average validated, lagging
    assert float(best["net"]["weight"]) == avg and float(toy.net.weight) == live     # kept as the best; live restored
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", 0.5, crash_at=3)
    _, resumed, _ = run(tmp_path / "cut", 0.5, resume=True)
    assert resumed["step"] == 6 and torch.equal(resumed["net"]["weight"], last["net"]["weight"])
    assert torch.equal(resumed["ema"]["net.weight"], last["ema"]["net.weight"])

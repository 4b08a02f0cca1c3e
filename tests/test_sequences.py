"""The whole-sequence evaluation and the multi-frame M_S trainer, on tiny data."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import pattern
from training import evaluate, multiframe
from training.sequences import SequenceScores, evaluate_sequences, score_sequence
from vsdsfn.weights import load_model


class _Seq:
    def __init__(self, frames, name="seq"):
        self.frames, self.name = frames, name

    def __len__(self):
        return len(self.frames)

    def frame(self, i):
        return self.frames[i]


def _frames(n=7, w=64, h=48):
    return [(pattern(i, w, h, shift=1.0).transpose(1, 2, 0) * 255).round().astype(np.uint8) for i in range(n)]


def test_scores_split_source_interpolated_and_temporal():
    truth = [np.full((4, 4, 3), v, np.float32) for v in (0.1, 0.2, 0.3, 0.4, 0.5)]
    out = [t + (0.1 if n % 2 else 0.0) for n, t in enumerate(truth)]     # interpolated frames off by 0.1
    s = SequenceScores()
    score_sequence(out, truth, s)
    m = s.means()
    assert m["source"] == 100.0 and m["interpolated"] == pytest.approx(20.0)
    assert m["tpsnr"] == pytest.approx(20.0)                 # every difference off by 0.1
    assert m["all"] == pytest.approx((3 * 100 + 2 * 20) / 5)


def test_sequences_score_the_renderers_output_against_every_true_frame():
    frames = _frames(7)
    seen = []

    def perfect(lr):
        seen.append(len(lr))
        return [f.astype(np.float32) / 255 for f in frames[:2 * len(lr) - 1]]

    total, per_seq, _ = evaluate_sequences([_Seq(frames)], {"perfect": perfect}, progress=False)
    assert seen == [4]                                      # frames 0, 2, 4, 6 in at half size
    assert total["perfect"].means() == {"all": 100.0, "source": 100.0, "interpolated": 100.0, "tpsnr": 100.0}
    assert len(total["perfect"].source) == 4 and len(total["perfect"].interpolated) == 3


def _data(root: Path) -> Path:
    """Two sequences of different sizes (each clip's frames are its own, whatever their index)."""
    for name, (w, h) in (("seq", (80, 64)), ("other", (96, 48))):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(_frames(7, w, h)):
            Image.fromarray(f).save(root / name / f"{i:03d}.png")
    cfg = root / "cfg.toml"
    cfg.write_text(f'[data]\nroot = "{root}"\nsequences = [{{path = "seq"}}]\n'
                   'val_sequences = [{path = "seq"}, {path = "other"}]\n')
    return cfg


def test_evaluate_sequences_mode_reports_each_weights_file(tmp_path, tiny_weights, tiny_multiframe_weights, capsys):
    cfg = _data(tmp_path)
    evaluate.main(["--config", str(cfg), "--sequences", "--weights", str(tiny_multiframe_weights),
                   "--compare", str(tiny_weights), "--precision", "fp32", "--quiet", "--json", str(tmp_path / "s.json")])
    report = capsys.readouterr().out
    for row in ("tiny-mf.safetensors", "tiny.safetensors", "Spline36 → RIFE", "bicubic + frame blend",
                "vsdsfn (tiny-mf.safetensors, S→T stream)"):
        assert row in report
    assert "tiny.safetensors, S→T stream" not in report          # the stream of --weights only
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    full, stream = rows["vsdsfn (tiny-mf.safetensors)"], rows["vsdsfn (tiny-mf.safetensors, S→T stream)"]
    assert stream["source"] == full["source"] and stream["interpolated"] != full["interpolated"]
    assert "14 output frames" in report


def test_multiframe_trainer_runs_resumes_and_exports(tmp_path, tiny_weights, one_thread):
    cfg = _data(tmp_path)
    args = ["--config", str(cfg), "--init", str(tiny_weights), "--out", str(tmp_path / "run"), "--pool", "6", "--val-pool", "2", "--pool-size", "32", "--crop", "32", "--margin", "4", "--batch", "2",
            "--align", "4", "--fuse-layers", "1", "--val-every", "2", "--log-every", "1", "--threads", "1"]
    multiframe.main(args + ["--iters", "2"])
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert first["step"] == 2
    step2 = tmp_path / "step2.pt"
    shutil.copyfile(tmp_path / "run" / "last.pt", step2)
    multiframe.main(args + ["--iters", "4", "--resume"])
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["step"] == 4 and math.isfinite(last["best"])
    out = tmp_path / "mf.safetensors"
    multiframe.main(args + ["--export", str(out)])
    model = load_model(out)
    assert model.config.spatial == "multiframe" and model.radius == 1
    # --average: M_S is the mean of best.pt's and last.pt's weights; export's average= of any two
    multiframe.main(args + ["--export", str(tmp_path / "avg.safetensors"), "--average"])
    ckpts = {n: torch.load(p, weights_only=True)["model"] for n, p in (
        ("best", tmp_path / "run" / "best.pt"), ("last", tmp_path / "run" / "last.pt"), ("step2", step2))}
    multiframe.export(tmp_path / "run" / "last.pt", tiny_weights, tmp_path / "avg2.safetensors", average=step2)
    assert any(not torch.equal(ckpts["last"][k], ckpts["step2"][k]) for k in ckpts["last"])
    for file, (a, b) in (("avg", ("best", "last")), ("avg2", ("last", "step2"))):
        for k, v in load_model(tmp_path / f"{file}.safetensors").spatial.state_dict().items():
            torch.testing.assert_close(v, (ckpts[a][k] + ckpts[b][k]) / 2, rtol=0, atol=1e-6)
    # --part single: the single-frame network alone, exported as a single-frame M_S
    multiframe.main(args + ["--out", str(tmp_path / "single"), "--part", "single", "--iters", "2"])
    single = load_model(multiframe.export(tmp_path / "single" / "last.pt", tiny_weights, tmp_path / "s.safetensors"))
    assert single.config.spatial == "espcn" and single.radius == 0
    trained = torch.load(tmp_path / "single" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(single.spatial.state_dict()[k], trained[f"single.{k}"]) for k in single.spatial.state_dict())
    assert not torch.equal(single.spatial.state_dict()["tail.weight"], load_model(tiny_weights).spatial.tail.weight)
    base = load_model(tiny_weights)
    for k, v in base.state_dict().items():        # every other network is the init's
        if not k.startswith("spatial."):
            assert torch.equal(model.state_dict()[k], v), k

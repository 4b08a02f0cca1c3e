"""Nothing a user does may destroy a file or kill the process: the command line's files,
signals, options bounded where their cost is, broken weights, numeric types, the CLI's own
values and messages, one log prefix."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import vapoursynth as vs
from safetensors.torch import load_file, save_file

from conftest import ROOT, all_frames, default_signals, make_clip

SAMPLE = ROOT / "vsdsfn" / "data" / "sample.y4m"


def _cli(tmp_path, monkeypatch, argv: list[str]) -> int:
    from vsdsfn import cli

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # were anything cached, outside the folder
    return cli.main(argv)


def _folder(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}


# ----------------------------------------------------------------------------- files
def test_input_named_like_a_partial_output_is_untouched(tmp_path, tiny_weights, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    src = work / "clip.part.y4m"
    src.write_bytes(SAMPLE.read_bytes())
    notes = work / "notes.part.y4m"
    notes.write_bytes(b"my notes")
    before = _folder(work)
    argv = ["--frames", "2", "--weights", str(tiny_weights), "-q"]
    assert _cli(tmp_path, monkeypatch, [str(src), "-o", str(work / "clip.y4m"), *argv]) == 0
    assert _cli(tmp_path, monkeypatch, [str(src), "-o", str(work / "notes.y4m"), *argv]) == 0
    after = _folder(work)
    assert {k: after[k] for k in before} == before          # the input and the unrelated file intact
    assert sorted(after) == ["clip.part.y4m", "clip.y4m", "notes.part.y4m", "notes.y4m"]
    assert after["clip.y4m"].startswith(b"YUV4MPEG2 C420 W352 H288 ")
    assert (work / "clip.y4m").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_partial_output_leaves_the_umask_alone_and_syncs(tmp_path, monkeypatch):
    """The partial file is created exclusively with a new file's permissions without
    setting the process-wide umask (other threads create files meanwhile), and the rename
    is made durable: the file's data and then its folder are fsynced."""
    import stat

    from vsdsfn import partial

    mask = _umask()
    monkeypatch.setattr(partial.os, "umask", lambda *a: pytest.fail("the process umask was changed"))
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(partial.os, "fsync", fsync)
    out = tmp_path / "out.bin"
    with partial.Partial(out) as part:
        part.file.write(b"data")
        part.commit()
    assert out.read_bytes() == b"data" and synced == ["file", "dir"]
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("link", ["hard", "soft"])
def test_output_linked_to_the_input_is_refused(tmp_path, tiny_weights, monkeypatch, capsys, link):
    src = tmp_path / "in.y4m"
    src.write_bytes(SAMPLE.read_bytes())
    out = tmp_path / "out.y4m"
    (os.link if link == "hard" else os.symlink)(src, out)
    before = _folder(tmp_path)
    assert _cli(tmp_path, monkeypatch, [str(src), "-o", str(out), "--weights", str(tiny_weights)]) == 1
    assert "the output is the input (or a link to it)" in capsys.readouterr().err
    assert _folder(tmp_path) == before and out.exists() and (link == "hard") != out.is_symlink()


def test_output_that_is_not_a_regular_file_is_refused(tmp_path, tiny_weights, monkeypatch, capsys):
    fifo = tmp_path / "pipe.y4m"
    os.mkfifo(fifo)
    assert _cli(tmp_path, monkeypatch, ["-o", str(fifo), "--weights", str(tiny_weights)]) == 1
    assert "exists and is not a regular file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.y4m"]


def test_failure_while_writing_leaves_the_folder_as_it_was(tmp_path, tiny_weights, monkeypatch):
    from vsdsfn import filter as flt

    out = tmp_path / "out.y4m"
    out.write_bytes(b"an older result")
    real = flt.upscale

    def failing(clip, **kw):
        up = real(clip, **kw)
        return up.std.ModifyFrame(up, lambda n, f: (_ for _ in ()).throw(RuntimeError("boom")) if n == 3 else f)

    monkeypatch.setattr(flt, "upscale", failing)
    before = _folder(tmp_path)
    assert _cli(tmp_path, monkeypatch, ["--frames", "3", "--weights", str(tiny_weights), "-q", "-o", str(out)]) == 1
    assert _folder(tmp_path) == before


def test_ignored_signals_stay_ignored(tmp_path, tiny_weights):
    """``nohup vsdsfn ...``: a signal the CLI was started to ignore stays ignored."""
    code = ("import signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); from vsdsfn import cli; "
            "print(cli._catchable() == [signal.SIGINT, signal.SIGTERM])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         preexec_fn=default_signals, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


def _long_y4m(path: Path, repeats: int) -> None:
    """The sample clip's frames ``repeats`` times over: a run long enough to be stopped."""
    data = SAMPLE.read_bytes()
    end = data.index(b"\n") + 1
    path.write_bytes(data[:end] + data[end:] * repeats)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_leaves_no_file(tmp_path, tiny_weights, sig):
    """A real process stopped by a signal while it writes: the partial file is removed,
    the exit status is 128 + the signal, and the input is intact."""
    src = tmp_path / "in.y4m"
    _long_y4m(src, 40)
    before = src.read_bytes()
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "vsdsfn", str(src), "-o", str(tmp_path / "t.y4m"), "-q",
                             "--weights", str(tiny_weights), "--threads", "1"], env=env, stderr=subprocess.PIPE,
                            preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.endswith(".vsdsfn-part.y4m") and p.stat().st_size > 100_000
                      for p in tmp_path.iterdir()):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no partial output appeared"
            time.sleep(0.05)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()
    assert rc == 128 + sig, proc.stderr.read().decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.y4m"]
    assert src.read_bytes() == before


# ----------------------------------------------------------------------------- options
def test_batch_size_is_bounded_before_any_work(tiny_weights):
    from vsdsfn import upscale

    clip = make_clip(3, 32, 24)
    for bad in (100_000, 65, 10**18):
        with pytest.raises(vs.Error, match=r"upscale: batch_size must be an integer in \[1, 64\], not \d+; "
                                           r"e.g. batch_size=4"):
            upscale(clip, weights=tiny_weights, batch_size=bad)
    assert upscale(clip, weights=tiny_weights, batch_size=64).num_frames == 6


def test_numbers_of_any_type_are_accepted(tiny_weights):
    from vsdsfn import upscale

    clip = make_clip(3, 24, 20)
    ref = all_frames(upscale(clip, weights=tiny_weights, st_scale=0.5, batch_size=2, scene_threshold=0.5))
    for kw in ({"st_scale": np.float32(0.5)}, {"st_scale": Fraction(1, 2)}, {"batch_size": np.int64(2)},
               {"scene_threshold": Fraction(1, 2)}, {"tile": (np.int32(512), 512)}):
        args = {"st_scale": 0.5, "batch_size": 2, "scene_threshold": 0.5, **kw}
        got = all_frames(upscale(clip, weights=tiny_weights, **args))
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a, b)


def test_weights_with_a_non_finite_tensor_are_refused(tmp_path, tiny_weights):
    from safetensors import safe_open

    from vsdsfn import WeightsError, load_model, upscale

    with safe_open(str(tiny_weights), "pt") as f:
        meta = f.metadata()
    for value in (float("nan"), float("inf")):
        state = load_file(str(tiny_weights))
        state["fusion.downs.0.0.0.bias"][1] = value
        broken = tmp_path / "broken.safetensors"
        save_file(state, str(broken), metadata=meta)
        with pytest.raises(WeightsError, match=r"tensor 'fusion.downs.0.0.0.bias' holds NaN or infinite values"):
            load_model(broken)
        with pytest.raises(vs.Error, match=r"upscale: .*'fusion.downs.0.0.0.bias' holds NaN.*weights=None"):
            upscale(make_clip(2, 8, 8), weights=broken)


def test_clear_messages(tmp_path, tiny_weights, monkeypatch, capsys):
    from vsdsfn import upscale

    for empty in ("", "  "):
        with pytest.raises(vs.Error, match=r"upscale: weights must be None/'default' .* not .*; "
                                           r"e.g. weights='my.safetensors'"):
            upscale(make_clip(2, 8, 8), weights=empty)
    assert _cli(tmp_path, monkeypatch, ["--frames", "2", "-o", str(tmp_path / "out_noext")]) == 1
    err = capsys.readouterr().err
    assert "has no extension to choose its format by; add one, e.g. -o" in err and "out_noext.mkv" in err
    assert not (tmp_path / "out_noext").exists()


# ----------------------------------------------------------------------------- the CLI's values
def test_cli_values_from_the_help_work(tmp_path, monkeypatch, capsys):
    from vsdsfn import cli

    helps = {a.option_strings[0]: a.help for a in cli._parser()._actions if a.option_strings}
    for flag, shown in (("--weights", '"default"'), ("--device", '"auto"'), ("--tile", "0:")):
        assert helps[flag].startswith(shown) and "None" not in helps[flag], flag
    out = tmp_path / "x.y4m"
    assert _cli(tmp_path, monkeypatch, ["--frames", "2", "-q", "-o", str(out), "--weights", "default",
                                        "--device", "auto", "--tile", "0"]) == 0
    assert out.read_bytes().startswith(b"YUV4MPEG2 C420 W352 H288 ")


def test_cli_errors_name_flags(tmp_path, monkeypatch, capsys):
    cases = ((["--weights", str(tmp_path / "none.safetensors")], "for the shipped weights use --weights default"),
             (["--batch-size", "100"], "--batch-size must be an integer in [1, 64], not 100; e.g. --batch-size 4"),
             (["--st-scale", "0.3"], "e.g. --st-scale 0.5"),
             (["--device", "gpu"], "e.g. --device cpu"))
    for argv, text in cases:
        assert _cli(tmp_path, monkeypatch, ["--frames", "2", "-o", str(tmp_path / "o.y4m"), *argv]) == 1
        err = capsys.readouterr().err
        assert text in err and "weights=None" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == []


def test_progress_gives_no_eta_before_the_first_frame(monkeypatch):
    from vsdsfn import local

    err = io.StringIO()
    monkeypatch.setattr(local.sys, "stderr", err)
    update = local._progress(False, 10)
    update(0, 10)
    update(10, 10)
    first, last = err.getvalue().splitlines()
    assert first == "vsdsfn: frame 0/10 (0%), 0.00 frames/s, ETA unknown yet", first
    assert last.startswith("vsdsfn: frame 10/10 (100%)") and last.endswith("ETA 0 s")


def test_ratio_errors_in_the_callers_terms(tmp_path, monkeypatch, capsys):
    """``--fps 0`` names the CLI's ratio (no None, an fps example); a fractional
    ``factor_num`` is refused with the two integers that mean it."""
    from vsdsfn import upscale

    assert _cli(tmp_path, monkeypatch, ["--frames", "2", "-o", str(tmp_path / "o.y4m"), "--fps", "0"]) == 1
    err = capsys.readouterr().err
    assert err == ("vsdsfn: error: --fps must be N or N/D with N and D integers in [1, 1000000], not 0; "
                   "e.g. --fps 60000/1001\n"), err
    with pytest.raises(vs.Error, match=r"not Fraction\(5, 2\); e.g. factor_num=5, factor_den=2$"):
        upscale(make_clip(2, 8, 8), factor_num=Fraction(5, 2))


# ----------------------------------------------------------------------------- logs and docs
def _oom_once(monkeypatch) -> None:
    """The engine's first forward pass runs out of memory (a warning, then a retry)."""
    from vsdsfn import engine

    real, calls = engine.Engine._pair_forward, []

    def oom_once(self, *a):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return real(self, *a)

    monkeypatch.setattr(engine.Engine, "_pair_forward", oom_once)


def test_one_log_prefix(tmp_path, tiny_weights, monkeypatch, capsys):
    """The command line shows a warning (here the out-of-memory retry) on stderr as
    ``vsdsfn: WARNING: <message>``, once."""
    _oom_once(monkeypatch)
    assert _cli(tmp_path, monkeypatch, ["--frames", "3", "--batch-size", "2", "-q", "--weights", str(tiny_weights),
                                        "-o", str(tmp_path / "o.y4m")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines and lines[0].startswith("vsdsfn: WARNING: out of memory on cpu"), lines
    assert not any(line.count("vsdsfn:") > 1 for line in lines), lines
    assert logging.getLogger("vsdsfn").handlers == [h for h in logging.getLogger("vsdsfn").handlers
                                                   if isinstance(h, logging.NullHandler)]   # removed after


def test_library_logs_reach_the_application(tiny_weights, monkeypatch, caplog):
    """As a library vsdsfn prints nothing itself: a NullHandler, records propagate to the
    application's handlers (here pytest's), none hidden."""
    import vsdsfn
    from vsdsfn import filter as flt  # noqa: F401  (importing it installs no output)

    log = logging.getLogger("vsdsfn")
    assert log.propagate and all(isinstance(h, logging.NullHandler) for h in log.handlers) and log.handlers
    _oom_once(monkeypatch)
    with caplog.at_level(logging.WARNING):
        all_frames(vsdsfn.upscale(make_clip(3, 16, 16), weights=tiny_weights, batch_size=2))
    assert any(r.name == "vsdsfn" and "out of memory on cpu" in r.getMessage() for r in caplog.records)


def test_readme_batch_size_sentence_is_true(tiny_weights):
    """The README says results differ between batch sizes by float rounding only: < 1e-5 in
    fp32 (the precision this checks), with a caveat for bf16 and fp16."""
    from vsdsfn import upscale

    text = (ROOT / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `batch_size`"))
    assert "< 1e-5 in fp32" in row and "bf16 and fp16" in row and "1 to 64" in row
    clip = make_clip(7, 40, 24)
    ref = all_frames(upscale(clip, weights=tiny_weights, batch_size=1))
    for bs in (2, 3, 8):
        worst = max(np.abs(a - b).max() for a, b in zip(ref, all_frames(upscale(clip, weights=tiny_weights,
                                                                                  batch_size=bs))))
        assert worst < 1e-5

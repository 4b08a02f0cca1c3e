"""End to end: vspipe with a .vpy, the command line on the shipped sample, and an installed
(non-editable) copy of the package finding its default weights."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def parse_y4m(data: bytes, keep: bool = False) -> tuple[dict[str, str], int | list[bytes]]:
    """Header fields (W, H, F, C, ...) and the number of frames of a YUV4MPEG2 stream
    (with ``keep``, the frames' bytes instead)."""
    end = data.index(b"\n")
    head = data[:end].decode().split()
    assert head[0] == "YUV4MPEG2", head
    fields = {t[0]: t[1:] for t in head[1:]}
    w, h = int(fields["W"]), int(fields["H"])
    chroma = fields.get("C", "420jpeg")
    bps = 2 if "p1" in chroma else 1  # C420p10, C444p16 ...
    per = {"420": w * h * 3 // 2, "444": w * h * 3}[chroma[:3]] * bps
    pos, frames = end + 1, []
    while pos < len(data):
        nl = data.index(b"\n", pos)
        assert data[pos:nl].startswith(b"FRAME"), data[pos:pos + 20]
        frames.append(data[nl + 1: nl + 1 + per])
        pos = nl + 1 + per
    assert pos == len(data), "trailing bytes / short frame"
    return fields, frames if keep else len(frames)


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _vspipe() -> str:
    # the vspipe of the interpreter under test first: a vspipe earlier on PATH may belong to
    # another Python (e.g. a pyenv shim of a global install that the active version lacks)
    own = Path(sys.executable).with_name("vspipe")
    exe = str(own) if own.exists() else shutil.which("vspipe") or str(own)
    if not Path(exe).exists():
        pytest.skip("vspipe not found")
    return exe


def test_vspipe_y4m(tmp_path, tiny_weights):
    script = tmp_path / "script.vpy"
    script.write_text(textwrap.dedent(f"""
        import vapoursynth as vs
        import vsdsfn
        core = vs.core
        clip = core.std.BlankClip(format=vs.YUV420P8, width=24, height=16, length=3, fpsnum=24000, fpsden=1001,
                                  color=[90, 100, 160])
        clip = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="709")
        clip = vsdsfn.upscale(clip, weights={str(tiny_weights)!r}, batch_size=2)
        clip = core.resize.Bicubic(clip, format=vs.YUV420P10, matrix_s="709")
        clip.set_output()
    """))
    # pip's vspipe needs `vapoursynth config` once per user; do it in a private config home
    env = _env(XDG_CONFIG_HOME=str(tmp_path / "config"))
    conf = subprocess.run([sys.executable, "-m", "vapoursynth", "config"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert conf.returncode == 0, conf.stdout + conf.stderr
    proc = subprocess.run([_vspipe(), "-c", "y4m", str(script), "-"], capture_output=True, env=env,
                          cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr.decode()
    fields, frames = parse_y4m(proc.stdout)
    assert (fields["W"], fields["H"], fields["F"], fields["C"]) == ("48", "32", "48000:1001", "420p10")
    assert frames == 6


def test_cli_on_sample(tmp_path, tiny_weights):
    out = tmp_path / "out.y4m"
    proc = subprocess.run([sys.executable, "-m", "vsdsfn", "--frames", "3", "-o", str(out), "--weights",
                           str(tiny_weights), "--batch-size", "2"],
                          capture_output=True, env=_env(XDG_CACHE_HOME=str(tmp_path / "cache")),
                          cwd=tmp_path, timeout=240)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert proc.stdout == b""  # stdout is kept clean
    fields, frames = parse_y4m(out.read_bytes())
    assert (fields["W"], fields["H"], fields["F"]) == ("352", "288", "60000:1001")
    assert frames == 6
    assert "3 frames 176x144 @ 29.970 fps -> 6 frames 352x288 @ 59.940 fps" in err
    assert "frame 6/6" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.y4m"]  # no partial file, no index left


def test_cli_in_process_and_errors(tmp_path, tiny_weights, monkeypatch, capsys):
    from vsdsfn import cli

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # a copy of the sample in its own folder: nothing may be written next to the input
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    src = src_dir / "clip.y4m"
    shutil.copy(cli.SAMPLE, src)
    monkeypatch.chdir(tmp_path)
    assert cli.main([str(src), "--frames", "2", "--weights", str(tiny_weights), "--pix-fmt", "yuv444p16", "-q"]) == 0
    fields, frames = parse_y4m((tmp_path / "clip_2x.y4m").read_bytes())
    assert (fields["W"], fields["H"], fields["C"], frames) == ("352", "288", "444p16", 4)
    assert sorted(p.name for p in src_dir.iterdir()) == ["clip.y4m"]
    # the Python API the command line calls writes the same file
    import vsdsfn

    assert vsdsfn.render(src, "api.y4m", frames=2, weights=str(tiny_weights), pix_fmt="yuv444p16") == Path("api.y4m")
    assert (tmp_path / "api.y4m").read_bytes() == (tmp_path / "clip_2x.y4m").read_bytes()
    # --ensemble reaches upscale: every frame changes
    assert cli.main([str(src), "--frames", "2", "--weights", str(tiny_weights), "--pix-fmt", "yuv444p16", "-q",
                     "--ensemble", "-o", "ens.y4m"]) == 0
    _, ens = parse_y4m((tmp_path / "ens.y4m").read_bytes(), keep=True)
    _, plain = parse_y4m((tmp_path / "clip_2x.y4m").read_bytes(), keep=True)
    assert len(ens) == 4 and not any(a == b for a, b in zip(ens, plain))

    capsys.readouterr()
    _fails(capsys, ["--sample", "--frames", "2", "--scene-threshold", "3", "-o", "x.y4m"],
           "--scene-threshold must be a number in (0, 1], not 3.0; e.g. --scene-threshold 0.1")
    _fails(capsys, ["--sample", "--frames", "2", "--device", "gpu", "-o", "x.y4m"], "unknown device 'gpu'")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    _fails(capsys, ["--sample", "-o", "x.mkv"], "needs ffmpeg")
    with pytest.raises(SystemExit):
        cli.main(["--sample", "--bogus"])
    assert not list(tmp_path.glob("x*"))


def test_cli_calls_render_with_its_flags(monkeypatch):
    from vsdsfn import cli, job

    calls = []
    monkeypatch.setattr(job, "render", lambda **kw: calls.append(kw))
    assert cli.main(["in.mkv", "-o", "out.mkv", "--workers", "2", "--factor", "5/2", "--ensemble", "--frames", "9"]) == 0
    (kw,) = calls
    assert (kw["input"], kw["output"], kw["workers"], kw["factor"], kw["ensemble"], kw["frames"]) == \
        ("in.mkv", "out.mkv", 2, (5, 2), True, 9)
    assert "verbose" not in kw and not kw["sample"] and not kw["quiet"]


def _fails(capsys, argv: list[str], *words: str) -> None:
    """``vsdsfn ARGV`` in-process exits 1 with exactly one line ``vsdsfn: error: <problem>; <fix>``
    on stderr that contains ``words``."""
    from vsdsfn import cli

    capsys.readouterr()
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("vsdsfn: error: ") and err.count("\n") == 1 and "; " in err, err
    assert all(w in err for w in words), err


def test_cli_bad_paths_fail_before_any_work(tmp_path, monkeypatch, capsys):
    """Unwritable, missing-folder or folder outputs and missing, non-file or unreadable inputs:
    one error line, exit 1, nothing written, and nothing read or computed first."""
    from vsdsfn import local

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(local, "write", lambda *a: pytest.fail("the work started"))
    _fails(capsys, ["--sample", "-o", "/proc/x.y4m"], "cannot create the output '/proc/x.y4m'")
    _fails(capsys, ["--sample", "-o", str(tmp_path / "no" / "x.y4m")], "does not exist; create it")
    _fails(capsys, ["--sample", "-o", str(tmp_path)], "is a folder")
    _fails(capsys, [str(tmp_path / "missing.mkv"), "-o", "x.y4m"], "does not exist")
    _fails(capsys, [str(tmp_path), "-o", "x.y4m"], "is not a file")
    _fails(capsys, ["--sample", "--batch-size", "0"], "--batch-size must be an integer in [1, 64]")
    locked = tmp_path / "locked.y4m"
    locked.write_bytes(b"")
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads any file: play a user who may not
        monkeypatch.setattr(os, "access", lambda path, mode: False)
    _fails(capsys, [str(locked), "-o", "x.y4m"], "is not readable")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked.y4m"]


def test_cli_bad_output_in_a_fresh_process(tmp_path):
    """The command itself: no traceback, and it fails before VapourSynth or torch are loaded."""
    code = ("import sys; from vsdsfn.cli import main; rc = main(sys.argv[1:]); "
            "assert not {'torch', 'vapoursynth'} & set(sys.modules); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "--sample", "-o", "/proc/x.y4m"], capture_output=True,
                          text=True, env=_env(), cwd=tmp_path, timeout=60)
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("vsdsfn: error: cannot create the output") and proc.stderr.count("\n") == 1


def test_cli_failing_later_removes_the_output(tmp_path, tiny_weights, monkeypatch, capsys):
    """A run that fails once the output file exists (input not a video, missing weights, ffmpeg
    failing, a frame failing while the output is written) leaves neither the output nor a
    partial file."""
    from vsdsfn import cli
    from vsdsfn import filter as flt

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"not a video\n" * 100)
    _fails(capsys, [str(junk), "-o", "a.y4m"], "cannot read")
    _fails(capsys, ["--sample", "--frames", "2", "--weights", str(tmp_path / "no.safetensors"), "-o", "b.y4m"],
           "does not exist")
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho fake ffmpeg gives up >&2\nexit 3\n")
    fake.chmod(0o755)
    with monkeypatch.context() as m:
        m.setattr(shutil, "which", lambda name: str(fake))
        _fails(capsys, ["--sample", "--frames", "2", "--weights", str(tiny_weights), "-q", "-o", "c.mkv"], "ffmpeg")
    real = flt.upscale

    def failing(clip, **kw):
        def frame(n, f):
            if n == 2:
                raise RuntimeError("boom")
            return f

        up = real(clip, **kw)
        return up.std.ModifyFrame(up, frame)

    monkeypatch.setattr(flt, "upscale", failing)
    _fails(capsys, ["--sample", "--frames", "2", "--weights", str(tiny_weights), "-q", "-o", "d.y4m"],
           "writing", "(RuntimeError: boom); ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "junk.mkv"]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_cli_through_ffmpeg(tmp_path, tiny_weights, monkeypatch):
    from vsdsfn import cli

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "out.mkv"
    assert cli.main(["--frames", "3", "-o", str(out), "--weights", str(tiny_weights), "-q",
                     "--ffmpeg-args", "-c:v ffv1"]) == 0
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height,nb_read_frames,r_frame_rate", "-of", "csv=p=0", str(out)],
                           capture_output=True, text=True, timeout=60)
    w, h, rate, frames = probe.stdout.strip().split(",")
    assert (w, h, frames) == ("352", "288", "6")
    num, den = map(int, rate.split("/"))  # Matroska stores ms timestamps: the rate is approximate
    assert abs(num / den - 60000 / 1001) < 0.5


def test_installed_package_finds_its_weights(tmp_path):
    # build from a copy of the project files so the checkout is not touched
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp")
    shutil.copytree(ROOT / "vsdsfn", src / "vsdsfn", ignore=ignore)
    shutil.copytree(ROOT / "models", src / "models", ignore=ignore)
    target = tmp_path / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(src)]
    try:
        import setuptools  # noqa: F401

        cmd.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code = textwrap.dedent("""
        import sys, vapoursynth as vs, vsdsfn
        from pathlib import Path
        from vsdsfn.weights import default_weights_path
        from vsdsfn.cli import SAMPLE
        site = Path(sys.argv[1]).resolve()
        assert Path(vsdsfn.__file__).resolve().is_relative_to(site), vsdsfn.__file__
        p = default_weights_path().resolve()
        assert p.is_relative_to(site) and p.is_file(), p
        assert SAMPLE.resolve().is_relative_to(site) and SAMPLE.is_file()
        clip = vs.core.std.BlankClip(format=vs.RGBS, width=16, height=16, length=2)
        out = vsdsfn.upscale(clip)
        assert (out.num_frames, out.width) == (4, 32)
        out.get_frame(1)
        print("OK", p)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    run = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("OK")

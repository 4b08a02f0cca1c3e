"""Rendering on a Ray cluster: one local cluster (127.0.0.1, 2 CPUs) started by this
module, tiny frames and the tiny test network. The output must be the single-process
output, whatever the chunks, lost workers, stops and resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, default_signals
from vsdsfn import cli
from vsdsfn.chunks import Job
from vsdsfn.store import folder_for

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def address():
    from vsdsfn.cluster import start_local

    saved = dict(os.environ)
    start_local(2, object_store_memory=100 << 20)
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    gcs = ray.get_runtime_context().gcs_address
    assert gcs.startswith("127.0.0.1:"), gcs      # the cluster listens on the loopback only
    assert os.environ.get("RAY_AUTH_MODE") == "token"   # with Ray's token authentication on
    yield gcs
    ray.shutdown()
    os.environ.clear()
    os.environ.update(saved)


def _run(argv: list[str]) -> None:
    assert cli.main([*argv, "-q"]) == 0


def _common(weights) -> list[str]:
    return ["--weights", str(weights), "--precision", "fp32", "--threads", "1"]


def test_y4m_is_byte_identical_with_any_chunks(tmp_path, tiny_weights, address):
    """5/2 in chunks of 7 output frames: cuts between source frames."""
    args = ["--sample", "--frames", "6", "--factor", "5/2", *_common(tiny_weights)]
    _run([*args, "-o", str(tmp_path / "one.y4m")])
    _run([*args, "-o", str(tmp_path / "many.y4m"), "--ray", address, "--chunk", "7"])
    one, many = (tmp_path / "one.y4m").read_bytes(), (tmp_path / "many.y4m").read_bytes()
    assert b"XLENGTH=15" in one[:100] and one == many
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.y4m", "one.y4m"]   # the chunk folder is gone


def _decoded(path: Path) -> bytes:
    return subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-f", "rawvideo", "-"],
                          check=True, capture_output=True).stdout


def _streams(path: Path) -> dict:
    """Each stream's codec, size, colour tags and duration, and each video frame's time."""
    keys = ("codec_type,codec_name,pix_fmt,width,height,color_space,color_transfer,color_primaries,color_range,"
            "duration")
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", f"stream={keys}:stream_tags=DURATION",
                            "-of", "json", str(path)], check=True, capture_output=True, text=True).stdout
    times = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time",
                            "-of", "csv=p=0", str(path)], check=True, capture_output=True, text=True).stdout
    return {"streams": json.loads(probe)["streams"], "times": sorted(map(float, times.split()))}


@pytest.mark.skipif(not all(map(shutil.which, ("ffmpeg", "ffprobe", "mkvmerge"))),
                    reason="needs ffmpeg, ffprobe and mkvmerge")
def test_encoded_chunks_are_joined_without_reencoding(tmp_path, tiny_weights, address):
    """A variable-rate input with audio (6 frames at 24 fps, 6 at 48) to FFV1 in Matroska,
    in chunks of 5 output frames: the same frames, timestamps, colour tags and audio as the
    single-process output."""
    src = tmp_path / "vfr.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=32x24:rate=48:duration=0.375",
                    "-f", "lavfi", "-i", "sine=sample_rate=48000:duration=0.375", "-vf",
                    "select='lt(n,12)*not(mod(n,2))+gte(n,12)',setpts='if(lt(N,6),N/24/TB,(6/24+(N-6)/48)/TB)'",
                    "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-colorspace", "smpte170m",
                    "-c:a", "aac", str(src)], check=True, timeout=60)
    args = [str(src), "--ffmpeg-args", "-c:v ffv1", *_common(tiny_weights)]
    _run([*args, "-o", str(tmp_path / "one.mkv")])
    _run([*args, "-o", str(tmp_path / "many.mkv"), "--ray", address, "--chunk", "5"])
    one, many = _streams(tmp_path / "one.mkv"), _streams(tmp_path / "many.mkv")
    assert [s["codec_type"] for s in one["streams"]] == ["video", "audio"] and len(one["times"]) == 24
    assert one == many
    assert _decoded(tmp_path / "one.mkv") == _decoded(tmp_path / "many.mkv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.mkv", "one.mkv", "vfr.mkv"]


@pytest.mark.skipif(not all(map(shutil.which, ("ffmpeg", "ffprobe", "mkvmerge"))),
                    reason="needs ffmpeg, ffprobe and mkvmerge")
def test_default_mp4_keeps_the_exact_constant_rate(tmp_path, tiny_weights, address):
    """The default encoder into .mp4 (each chunk encoded alone, so the frames differ a
    little): the same stream description and frame times as the single-process file."""
    args = ["--sample", "--frames", "4", "--factor", "5/2", *_common(tiny_weights)]
    _run([*args, "-o", str(tmp_path / "one.mp4")])
    _run([*args, "-o", str(tmp_path / "many.mp4"), "--ray", address, "--chunk", "4"])
    one, many = _streams(tmp_path / "one.mp4"), _streams(tmp_path / "many.mp4")
    assert len(one["times"]) == 10 and one["times"] == many["times"]       # 6 decimals: to the microsecond
    (a,), (b,) = one["streams"], many["streams"]
    assert float(a.pop("duration")) == pytest.approx(float(b.pop("duration")), abs=2e-6) and a == b


def _script(tmp_path: Path, weights: Path, body: str) -> Path:
    """A script: a moving RGBS pattern of 6 frames, upscaled 2x by the tiny network,
    ``body`` run on each output frame ``n`` (in a frame callback), YUV 4:2:0 10-bit."""
    path = tmp_path / "job.vpy"
    head = textwrap.dedent(f"""\
        import os, signal, time
        import numpy as np
        import vapoursynth as vs
        import vsdsfn
        core = vs.core
        clip = core.std.BlankClip(format=vs.RGBS, width=32, height=24, length=6, fpsnum=24, fpsden=1)
        def moving(n, f):
            out = f.copy()
            y, x = np.mgrid[0:24, 0:32].astype(np.float32)
            for p in range(3):
                np.asarray(out[p])[:] = 0.5 + 0.4 * np.sin(0.3 * x + 1.7 * n + p) * np.cos(0.25 * y - 0.5 * n)
            return out
        clip = core.std.ModifyFrame(clip, clip, moving)
        clip = vsdsfn.upscale(clip, weights={str(weights)!r}, precision="fp32", num_threads=1)
        def each(n, f):
    """)
    tail = textwrap.dedent("""\
            return f
        clip = core.std.ModifyFrame(clip, clip, each)
        clip = core.resize.Bicubic(clip, format=vs.YUV420P10, matrix_s="709")
        clip.set_output()
    """)
    path.write_text(head + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ") + tail)
    return path


def test_a_worker_killed_mid_chunk_changes_nothing(tmp_path, tiny_weights, address):
    """A .vpy input whose worker process is killed (SIGKILL) at output frame 5, once;
    rendered through the Python API."""
    marker = tmp_path / "killed"
    script = _script(tmp_path, tiny_weights, f"""
        if n == 5 and not os.path.exists({str(marker)!r}):
            open({str(marker)!r}, "x").close()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    marker.touch()
    _run([str(script), "-o", str(tmp_path / "one.y4m")])
    marker.unlink()
    import vsdsfn

    assert vsdsfn.render(script, tmp_path / "many.y4m", ray=address, chunk=4) == tmp_path / "many.y4m"   # the API
    assert marker.exists()                                  # a worker did die
    assert (tmp_path / "one.y4m").read_bytes() == (tmp_path / "many.y4m").read_bytes()


def test_a_chunk_that_keeps_failing_stops_the_job_with_its_own_error(tmp_path, tiny_weights, address, capsys):
    script = _script(tmp_path, tiny_weights, """
        if n == 9:
            raise ValueError("frame nine is cursed")
    """)
    out = tmp_path / "o.y4m"
    assert cli.main([str(script), "-o", str(out), "--ray", address, "--chunk", "4", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("vsdsfn: error: chunk 2 (output frames 8-11) failed 4 times: node ") and \
        err.endswith("frame nine is cursed"), err
    assert not out.exists()
    assert sorted(int(i) for i in _manifest(out)["done"]) == [0, 1]     # kept for a resume


def _manifest(out: Path) -> dict:
    try:
        return json.loads((folder_for(out) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _cli(argv: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "vsdsfn", *argv], env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)


def test_stopped_then_rerun_renders_only_what_is_missing(tmp_path, tiny_weights, address):
    """SIGTERM to the driver keeps the finished chunks; one of them is then corrupted;
    the same command again renders the missing chunks and the corrupted one, only."""
    log = tmp_path / "rendered.txt"
    script = _script(tmp_path, tiny_weights, f"""
        with open({str(log)!r}, "a") as fh:
            fh.write(f"{{n}}\\n")
        time.sleep(0.3)
    """)
    _run([str(script), "-o", str(tmp_path / "one.y4m")])
    out = tmp_path / "many.y4m"
    argv = [str(script), "-o", str(out), "--ray", address, "--chunk", "2"]
    log.unlink()
    proc = _cli(argv)
    deadline = time.monotonic() + 180
    while len(_manifest(out).get("done", {})) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, proc.stderr.read()
    assert not out.exists()
    kept = sorted(_manifest(out)["done"].values(), key=lambda e: e["index"])
    assert 2 <= len(kept) < 6, kept                          # 12 output frames, 6 chunks
    bad = folder_for(out) / kept[0]["file"]
    data = bytearray(bad.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(data)
    log.unlink()
    proc = _cli(argv)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0, err
    todo = 6 - len(kept) + 1
    assert f"in 6 chunks on 2 workers; rendering {todo} ({len(kept) - 1} kept from an earlier run)" in err
    rendered = sorted(set(map(int, log.read_text().split())))
    kept_frames = {n for e in kept[1:] for n in range(e["start"], e["stop"])}
    assert rendered == sorted(set(range(12)) - kept_frames)
    assert out.read_bytes() == (tmp_path / "one.y4m").read_bytes()
    assert not folder_for(out).exists()


def _ray_processes() -> set[int]:
    """The pids of the Ray cluster processes (GCS servers, raylets) on this machine."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and (b"gcs_server" in cmd or b"raylet" in cmd):
            pids.add(int(proc.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process list from /proc")
def test_workers_start_and_stop_their_own_local_cluster(tmp_path, tiny_weights):
    """--workers N in a fresh process: its own cluster (not $RAY_ADDRESS's), N workers,
    the single-process frames, and no Ray process left when the command ends."""
    args = ["--sample", "--frames", "4", *_common(tiny_weights)]
    _run([*args, "-o", str(tmp_path / "one.y4m")])
    before = _ray_processes()
    proc = _cli([*args, "-o", str(tmp_path / "own.y4m"), "--workers", "2", "--chunk", "3"])
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0, err
    assert "in 3 chunks on 2 workers; rendering 3" in err, err
    assert (tmp_path / "own.y4m").read_bytes() == (tmp_path / "one.y4m").read_bytes()
    deadline = time.monotonic() + 30
    while _ray_processes() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _ray_processes() - before


def test_worker_side_errors_name_the_node_and_the_fix(tmp_path, address):
    from vsdsfn.cluster import ClusterError, workers

    gone = Job(input=str(tmp_path / "gone.mkv"), args={}, suffix=".y4m")
    with pytest.raises(ClusterError, match=r"node .+: cannot read the input '.*gone\.mkv'; every node must see it"):
        with workers(ray, gone, 1, 1):
            pass
    cuda = Job(input=str(tmp_path / "gone.mkv"), args={"device": "cuda"}, suffix=".y4m")
    with pytest.raises(ClusterError, match="--device cuda needs a GPU for each worker, but the Ray cluster has none"):
        with workers(ray, cuda, 1, 1):
            pass
    with pytest.raises(ClusterError, match="room for 2 workers of 1 CPUs, not 3; use --workers 2"):
        with workers(ray, gone, 3, 1):
            pass

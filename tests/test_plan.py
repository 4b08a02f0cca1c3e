"""The job layer without a cluster: chunk plans, the film arithmetic, the chunk folder
(resume, checksums, settings), and the refusals made before any work."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from fractions import Fraction

import pytest

from vsdsfn import cli
from vsdsfn.plan import DEFAULT_CHUNK, chunks, default_size, estimate
from vsdsfn.store import Store, StoreError, folder_for


@pytest.mark.parametrize("length,size", [(1, 1), (1, 300), (20, 7), (21, 7), (431_568, 300), (10, 10)])
def test_chunks_cover_every_frame_once(length, size):
    plan = chunks(length, size)
    assert [c.index for c in plan] == list(range(len(plan)))
    assert plan[0].start == 0 and plan[-1].stop == length
    assert all(a.stop == b.start for a, b in zip(plan, plan[1:]))
    assert all(0 < c.frames <= size for c in plan)
    assert len(plan) == math.ceil(length / size)


def test_cuts_move_to_preferred_frames_within_a_quarter_chunk():
    plan = chunks(1000, 300, prefer=[290, 560, 940])
    # each nominal cut (300, 600, 900) moves to a preferred frame at most 300 // 4 = 75 frames away
    assert [(c.start, c.stop) for c in plan] == [(0, 290), (290, 560), (560, 940), (940, 1000)]
    far = chunks(1000, 300, prefer=[100, 700])    # none within 75 frames: the nominal cuts
    assert [(c.start, c.stop) for c in far] == [(0, 300), (300, 600), (600, 900), (900, 1000)]


def test_scene_changes_win_over_group_starts():
    groups = list(range(2, 1000, 2))            # batch 1 at 2x: every other output frame
    plan = chunks(1000, 300, prefer=groups, scenes=[251, 640, 980])
    # 251 and 640 lie within 75 frames of 300 and 600; 900 has no scene near: a group start
    assert [c.stop for c in plan] == [251, 640, 900, 1000]


def test_cut_frames_find_the_scene_changes_upscale_finds():
    vs = pytest.importorskip("vapoursynth")
    from vsdsfn.chunks import cut_frames
    from vsdsfn.schedule import Schedule

    core = vs.core
    shots = [core.std.BlankClip(format=vs.RGBS, width=64, height=48, length=n, color=c)
             for n, c in ((41, [0.1, 0.2, 0.3]), (40, [0.9, 0.8, 0.1]), (9, [0.1, 0.1, 0.9]))]
    clip = shots[0] + shots[1] + shots[2]        # cuts after source frames 40 and 80
    s = Schedule(clip.num_frames, Fraction(5, 2), 1)
    args = {"factor": (5, 2), "batch_size": 1, "scene_detect": True, "scene_threshold": 0.1}
    groups, scenes = cut_frames(clip, s.length, args, size=100)
    # nominal cuts at 100 and 200 (reach 25): the scenes start at output 103 (source 41) and 203 (source 81)
    assert scenes == [s.first_output(41), s.first_output(81)] == [103, 203]
    assert groups == [s.first_output(k) for k in range(1, clip.num_frames)]
    assert [c.stop for c in chunks(s.length, 100, groups, scenes)] == [103, 203, s.length]
    assert cut_frames(clip, s.length, {**args, "scene_detect": False}, size=100)[1] == []
    # props mark cuts as well (scene_detect on: the frames are read near the nominal cuts)
    marked = core.std.BlankClip(format=vs.RGBS, width=64, height=48, length=90).std.SetFrameProp(
        "_SceneChangePrev", intval=0)
    marked = marked[:60] + marked[60:61].std.SetFrameProp("_SceneChangePrev", intval=1) + marked[61:]
    assert cut_frames(marked, s.length - 10, {**args, "scene_threshold": 1.0}, size=150)[1] == [s.first_output(60)]


def test_default_chunk_length_bounds_raw_chunks():
    assert default_size(352 * 288 * 3, raw=True) == DEFAULT_CHUNK
    assert default_size(3840 * 2160 * 3, raw=True) * 3840 * 2160 * 3 <= 256 << 20
    assert default_size(1 << 30, raw=True) == 1


def test_film_arithmetic():
    """A 2-hour film at 24000/1001 fps raised to 60000/1001 fps (factor 5/2), with the
    per-frame and per-chunk costs measured by bench/cluster.py, on N GPUs."""
    frames = math.floor(math.floor(7200 * Fraction(24000, 1001)) * Fraction(5, 2))
    assert frames == 431_567
    per_frame, per_chunk, start = 0.05, 2.0, 30.0   # s: a GPU's output frame, a chunk's fixed cost, start-up
    one = estimate(frames, 1, per_frame, per_chunk, 300, start_s=start)
    # 1439 chunks of 300 frames (the last counted whole): 1439 * (2 + 15) s + 30 s
    assert one == pytest.approx(30 + 1439 * 17.0)
    eight = estimate(frames, 8, per_frame, per_chunk, 300, start_s=start)
    assert eight == pytest.approx(30 + 180 * 17.0)          # ceil(1439 / 8) = 180 rounds
    assert one / eight == pytest.approx(7.9, abs=0.05)


def _store(tmp_path, key, n=3):
    return Store(tmp_path / "out.y4m", key, chunks(3 * n, 3), ".y4m")


def test_store_keeps_matching_chunks_and_renders_the_rest(tmp_path):
    s = _store(tmp_path, {"a": 1, "options": ("-crf", "16")})   # a tuple is a list once in the manifest
    todo = s.open()
    assert [c.index for c in todo] == [0, 1, 2]
    s.add(todo[0], b"zero")
    s.add(todo[2], b"two")
    s.close()
    s = _store(tmp_path, {"a": 1, "options": ("-crf", "16")})
    assert [c.index for c in s.open()] == [1]
    s.close()
    # a corrupted chunk file is found by its checksum and rendered again
    (folder_for(tmp_path / "out.y4m") / "chunk-000002.y4m").write_bytes(b"tw0")
    s = _store(tmp_path, {"a": 1, "options": ("-crf", "16")})
    assert [c.index for c in s.open()] == [1, 2]
    s.close()
    # other settings: nothing is kept
    s = _store(tmp_path, {"a": 2})
    assert [c.index for c in s.open()] == [0, 1, 2]
    assert sorted(p.name for p in s.folder.iterdir()) == ["lock", "manifest.json"]
    for c in s.chunks:
        s.add(c, b"x")
    s.remove()
    assert not s.folder.exists() and list(tmp_path.iterdir()) == []


def test_store_is_locked_and_never_takes_a_foreign_folder(tmp_path):
    s = _store(tmp_path, {})
    s.open()
    with pytest.raises(StoreError, match="another vsdsfn"):
        _store(tmp_path, {}).open()
    s.close()
    other = tmp_path / "x"
    other.mkdir()
    folder_for(other / "o.y4m").mkdir()
    with pytest.raises(StoreError, match="not a vsdsfn chunk folder"):
        Store(other / "o.y4m", {}, chunks(3, 3), ".y4m").open()


def _cli_error(capsys, argv) -> str:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_clear_errors_before_any_work(tmp_path, capsys, monkeypatch):
    script = tmp_path / "s.vpy"
    script.write_text("raise SystemExit('not run')\n")
    out = str(tmp_path / "o.y4m")
    err = _cli_error(capsys, [str(script), "-o", out, "--batch-size", "2", "--factor", "5/2"])
    assert "--batch-size, --factor cannot be used with a script" in err and "in the script" in err
    assert "--workers N" in _cli_error(capsys, ["--sample", "-o", out, "--chunk", "7"])
    assert "--chunk must be in [1, " in _cli_error(capsys, ["--sample", "-o", out, "--workers", "1", "--chunk", "0"])
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` fails as where it is not installed
    assert "pip install 'vsdsfn[ray]'" in _cli_error(capsys, ["--sample", "-o", out, "--workers", "2"])
    assert list(tmp_path.iterdir()) == [script]


def test_unreachable_cluster_is_one_line(tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("this process is connected to a cluster")
    out = str(tmp_path / "o.y4m")
    err = _cli_error(capsys, ["--sample", "-o", out, "--ray", "127.0.0.1:1"])
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in err and "check the address" in err
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert "set it or give the address" in _cli_error(capsys, ["--sample", "-o", out, "--ray", "auto"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not shutil.which("ffprobe"), reason="needs ffmpeg and ffprobe")
def test_a_script_is_rendered_as_it_is_by_the_single_machine_command(tmp_path):
    """A .vpy INPUT: its output node written as it is (format, size, rate, colour tags)."""
    script = tmp_path / "s.vpy"
    script.write_text("import vapoursynth as vs\n"
                      "c = vs.core.std.BlankClip(format=vs.YUV420P10, width=64, height=64, length=5, fpsnum=30)\n"
                      "c = vs.core.std.SetFrameProps(c, _Matrix=9, _Transfer=16, _Primaries=9, _Range=1)\n"
                      "c.set_output()\n")
    out = tmp_path / "o.mkv"
    assert cli.main([str(script), "-o", str(out), "-q"]) == 0
    keys = "pix_fmt,width,height,r_frame_rate,color_space,color_transfer,color_primaries,nb_read_frames"
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries", f"stream={keys}", "-of",
                            "json", str(out)], check=True, capture_output=True, text=True).stdout
    s = json.loads(probe)["streams"][0]
    assert (s["pix_fmt"], s["width"], s["height"], s["r_frame_rate"], s["nb_read_frames"]) == \
        ("yuv420p10le", 64, 64, "30/1", "5")
    assert (s["color_space"], s["color_transfer"], s["color_primaries"]) == ("bt2020nc", "smpte2084", "bt2020")

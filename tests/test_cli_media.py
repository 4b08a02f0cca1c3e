"""The command line as a video tool, on small real ffmpeg-encoded inputs made here: audio,
subtitles and chapters kept and aligned, colour tags and range round-trip, variable frame
rates kept, default encoders that play, one-line errors before any work, no files left
behind. ffprobe checks the results."""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

# CI installs ffmpeg and mkvtoolnix (.ci/run fails without them), so these never skip there
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("mkvmerge")),
                                                   reason="needs ffmpeg and mkvmerge (apt-get install ffmpeg mkvtoolnix)")]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


def probe(path: Path, *entries: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", ",".join(entries), "-show_chapters",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def video_times(path: Path) -> list[Fraction]:
    """Each video frame's presentation time (s), in order."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True, timeout=60)
    return sorted(Fraction(v.strip(",")) for v in out.stdout.split() if v.strip(","))


def streams(path: Path) -> list[dict]:
    return probe(path, "stream=codec_type,codec_name,profile,pix_fmt,r_frame_rate,duration,start_time,color_space,"
                       "color_transfer,color_primaries,color_range")["streams"]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """av.mkv: 24 frames at 24000/1001 fps of H.264 BT.601, AAC audio, a subtitle and two
    chapters; vfr.mkv: 6 frames at 24 fps then 12 at 48 fps, with audio."""
    d = tmp_path_factory.mktemp("media")
    (d / "subs.srt").write_text("1\n00:00:00,100 --> 00:00:00,600\nhello\n")
    (d / "meta.txt").write_text(";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\ntitle=one\n"
                                "[CHAPTER]\nTIMEBASE=1/1000\nSTART=500\nEND=1000\ntitle=two\n")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=24000/1001:duration=1.001", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=48000:duration=1.001", "-i", str(d / "subs.srt"), "-i", str(d / "meta.txt"),
           "-map", "0", "-map", "1", "-map", "2", "-map_chapters", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m",
           "-color_range", "tv", "-c:a", "aac", "-c:s", "srt", str(d / "av.mkv"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=48:duration=0.5", "-f", "lavfi", "-i",
           "sine=sample_rate=48000:duration=0.5", "-vf",
           "select='lt(n,12)*not(mod(n,2))+gte(n,12)',setpts='if(lt(N,6),N/24/TB,(6/24+(N-6)/48)/TB)'",
           "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(d / "vfr.mkv"))
    return d


def cli(tmp_path, monkeypatch, *argv: str) -> int:
    from vsdsfn import cli as vcli

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return vcli.main(list(argv))


def fake_upscale(monkeypatch, calls: list | None = None):
    """upscale replaced by point resizing and each frame twice (fast; colours unchanged)."""
    import vapoursynth as vs

    from vsdsfn import filter as flt

    def fake(clip, **kw):
        if calls is not None:
            calls.append(kw)
        big = vs.core.resize.Point(clip, clip.width * 2, clip.height * 2)
        return vs.core.std.Interleave([big, big], modify_duration=True)

    monkeypatch.setattr(flt, "upscale", fake)


def test_audio_subtitles_and_chapters_are_copied_and_aligned(media, tmp_path, monkeypatch, capsys):
    fake_upscale(monkeypatch)
    out = tmp_path / "out.mkv"
    assert cli(tmp_path, monkeypatch, str(media / "av.mkv"), "-o", str(out)) == 0
    assert "1 audio, 1 subtitle stream(s) copied, 2 chapters" in capsys.readouterr().err
    src, got = streams(media / "av.mkv"), streams(out)
    assert [(s["codec_type"], s["codec_name"]) for s in got] == [(s["codec_type"], s["codec_name"]) for s in src]
    assert len(probe(out, "format=duration")["chapters"]) == 2
    vin, vout = video_times(media / "av.mkv"), video_times(out)
    assert len(vout) == 2 * len(vin) and abs(vout[0] - vin[0]) <= Fraction(1, 1000)  # starts where it started
    frame = Fraction(1001, 48000)
    assert abs((vout[-1] + frame) - (vin[-1] + 2 * frame)) <= frame   # and lasts as long


def test_frames_trims_the_audio_to_the_same_span(media, tmp_path, monkeypatch):
    fake_upscale(monkeypatch)
    out = tmp_path / "out.mkv"
    assert cli(tmp_path, monkeypatch, str(media / "av.mkv"), "-o", str(out), "--frames", "12", "-q") == 0
    assert [s["codec_type"] for s in streams(out)] == ["video", "audio", "subtitle"]
    frame = 1001 / 48000
    video_end = float(max(video_times(out))) + frame
    assert abs(video_end - float(video_times(media / "av.mkv")[12])) <= frame + 0.001
    audio = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                            "packet=pts_time,duration_time", "-of", "csv=p=0", str(out)], capture_output=True,
                           text=True, check=True).stdout.split()
    audio_end = max(sum(map(float, line.strip(",").split(","))) for line in audio)
    assert abs(audio_end - video_end) <= frame, (audio_end, video_end)


def test_video_only_and_streams_mp4_cannot_hold(media, tmp_path, monkeypatch, capsys):
    calls: list = []
    fake_upscale(monkeypatch, calls)
    monkeypatch.chdir(tmp_path)
    assert cli(tmp_path, monkeypatch, str(media / "av.mkv"), "-o", "a.mp4", "-q") == 1
    err = capsys.readouterr().err
    assert err.startswith("vsdsfn: error: copying the input's") and "subtitle (subrip)" in err and \
        "Could not find tag for codec subrip" in err and "--video-only" in err and err.count("\n") == 1, err
    assert not calls and sorted(p.name for p in tmp_path.iterdir()) == []   # refused before any work
    assert cli(tmp_path, monkeypatch, str(media / "av.mkv"), "-o", "a.mp4", "-q", "--video-only") == 0
    assert [s["codec_type"] for s in streams(tmp_path / "a.mp4")] == ["video"]


def test_y4m_says_it_holds_video_only(media, tmp_path, monkeypatch, capsys):
    fake_upscale(monkeypatch)
    assert cli(tmp_path, monkeypatch, str(media / "av.mkv"), "-o", str(tmp_path / "o.y4m"), "--frames", "2") == 0
    assert "video only: .y4m holds no audio" in capsys.readouterr().err


def test_variable_frame_rate_is_kept(media, tmp_path, monkeypatch, tiny_weights, capsys):
    """Each output frame's time is the sum of the filter's durations before it (the
    source's durations divided by the factor), from where the source started."""
    out = tmp_path / "out.mkv"
    assert cli(tmp_path, monkeypatch, str(media / "vfr.mkv"), "-o", str(out), "--weights", str(tiny_weights),
               "-q") == 0
    vin, vout = video_times(media / "vfr.mkv"), video_times(out)
    durations = [b - a for a, b in zip(vin, vin[1:])]
    durations.append(durations[-1])
    want = [vin[0]]
    for d in durations:
        want += [want[-1] + d / 2, want[-1] + d]
    assert len(vout) == 2 * len(vin)
    assert max(abs(a - b) for a, b in zip(vout, want)) <= Fraction(1, 1000)
    assert max(vout) - min(vout) > Fraction(1, 4)   # 12 frames at 48 fps and 24 at 96 fps, not one rate
    assert cli(tmp_path, monkeypatch, str(media / "vfr.mkv"), "-o", str(tmp_path / "x.mkv"), "--fps", "60") == 1
    err = capsys.readouterr().err
    assert "this one is variable); give the factor instead, e.g. --factor 5/2" in err and err.count("\n") == 1


def test_constant_rate_stays_exact(media, tmp_path, monkeypatch):
    fake_upscale(monkeypatch)
    out = tmp_path / "out.mp4"
    assert cli(tmp_path, monkeypatch, str(media / "av.mkv"), "-o", str(out), "-q", "--video-only") == 0
    assert streams(out)[0]["r_frame_rate"] == "48000/1001"
    times = video_times(out)
    assert all(abs(t - times[0] - Fraction(1001 * i, 48000)) < Fraction(1, 48000) for i, t in enumerate(times))


def test_default_encoder_plays_and_is_said(media, tmp_path, monkeypatch, capsys):
    """8-bit source: 8-bit 4:2:0 H.264 (what browsers decode); 10-bit: 10-bit HEVC or AV1."""
    fake_upscale(monkeypatch)
    assert cli(tmp_path, monkeypatch, str(media / "av.mkv"), "-o", str(tmp_path / "a.mp4"), "--video-only") == 0
    v = streams(tmp_path / "a.mp4")[0]
    assert (v["codec_name"], v["pix_fmt"], v["profile"]) == ("h264", "yuv420p", "High")
    assert "wrote " + str(tmp_path / "a.mp4") + " (H.264 (libx264) yuv420p," in capsys.readouterr().err
    deep = tmp_path / "deep.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=24:duration=0.25", "-c:v", "ffv1", "-pix_fmt",
           "yuv420p10le", str(deep))
    assert cli(tmp_path, monkeypatch, str(deep), "-o", str(tmp_path / "d.mkv"), "-q") == 0
    v = streams(tmp_path / "d.mkv")[0]
    assert v["codec_name"] in ("hevc", "av1") and v["pix_fmt"] == "yuv420p10le", v
    # --pix-fmt and --ffmpeg-args still decide
    assert cli(tmp_path, monkeypatch, str(deep), "-o", str(tmp_path / "e.mkv"), "-q", "--pix-fmt", "yuv444p",
               "--ffmpeg-args", "-c:v ffv1") == 0
    v = streams(tmp_path / "e.mkv")[0]
    assert (v["codec_name"], v["pix_fmt"]) == ("ffv1", "yuv444p")


def _yuv_means(path: Path, pix_fmt: str, w: int, h: int) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", pix_fmt, "-"], capture_output=True, check=True, timeout=60).stdout
    a = np.frombuffer(raw, np.uint16 if "10" in pix_fmt else np.uint8).astype(np.float64)
    return np.array([a[: w * h].mean(), a[w * h: w * h * 5 // 4].mean(), a[w * h * 5 // 4:].mean()])


@pytest.mark.parametrize("pix_fmt, tags", [
    ("yuv420p", ["-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m",
                 "-color_range", "tv"]),
    ("yuv420p", ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "pc"]),
    ("yuv420p10le", ["-colorspace", "bt2020nc", "-color_primaries", "bt2020", "-color_trc", "smpte2084",
                     "-color_range", "tv"]),
    ("yuv420p10le", ["-colorspace", "bt2020nc", "-color_primaries", "bt2020", "-color_trc", "arib-std-b67",
                     "-color_range", "pc"]),
])
def test_colour_tags_and_values_round_trip(tmp_path, monkeypatch, pix_fmt, tags):
    """The output carries the input's matrix, transfer, primaries and range, and a flat
    saturated colour comes back with the same YUV values: the conversion to RGB and back
    uses one matrix and range."""
    fake_upscale(monkeypatch)
    src = tmp_path / "in.mkv"
    ffmpeg("-f", "lavfi", "-i", "color=c=0xC03020:size=64x48:rate=24:duration=0.25", "-vf",
           f"scale=out_color_matrix={'bt2020' if 'bt2020nc' in tags else 'bt709' if 'bt709' in tags else 'bt601'}"
           f":out_range={'full' if 'pc' in tags else 'limited'}", "-c:v", "ffv1", "-pix_fmt", pix_fmt, *tags, str(src))
    out = tmp_path / "out.mkv"
    assert cli(tmp_path, monkeypatch, str(src), "-o", str(out), "-q", "--ffmpeg-args", "-c:v ffv1") == 0
    keys = ("color_space", "color_transfer", "color_primaries", "color_range", "pix_fmt")
    assert {k: streams(out)[0].get(k) for k in keys} == {k: streams(src)[0].get(k) for k in keys}
    a, b = _yuv_means(src, pix_fmt, 64, 48), _yuv_means(out, pix_fmt, 128, 96)
    assert np.abs(a - b).max() <= (4 if "10" in pix_fmt else 1), (a, b)


def test_untagged_hd_film_is_709_everywhere(tmp_path, monkeypatch):
    """One matrix rule: a 1280x544 film without tags decodes as BT.709 in the command line,
    the filter's hint and training's decoders."""
    import vapoursynth as vs

    from training import datasets
    from vsdsfn import colour, filter as flt
    from vsdsfn.source import open_source

    src = tmp_path / "film.mkv"
    ffmpeg("-f", "lavfi", "-i", "color=c=0xC03020:size=1280x544:rate=24:duration=0.08", "-vf",
           "scale=out_color_matrix=bt709:out_range=limited", "-c:v", "ffv1", "-pix_fmt", "yuv420p", str(src))
    assert open_source(src).colour.matrix == colour.BT709 == colour.guess_matrix(1280, 544)
    blank = vs.core.std.BlankClip(format=vs.YUV420P8, width=1280, height=544)
    assert 'matrix_in_s="709"' in flt._conversion_hint(blank)
    ref = np.array([0xC0, 0x30, 0x20])
    for decoder in ("ffmpeg", "vapoursynth"):
        monkeypatch.setenv("VSDSFN_CACHE", str(tmp_path / decoder))
        rgb = datasets.VideoSequence(src, decoder=decoder).frame(0)
        assert np.abs(rgb[200:300, 500:700].reshape(-1, 3).mean(0) - ref).max() <= 4, decoder  # BT.601: 20


def test_bad_ffmpeg_args_fail_before_the_model_loads(media, tmp_path, monkeypatch, capsys):
    calls: list = []
    fake_upscale(monkeypatch, calls)
    monkeypatch.chdir(tmp_path)
    for args, words in (('"unbalanced', "cannot be split into options (No closing quotation); balance its quotes"),
                        ("-c:v nosuchcodec", "ffmpeg with these options failed")):
        assert cli(tmp_path, monkeypatch, str(media / "av.mkv"), "-o", "x.mkv", "--ffmpeg-args", args) == 1
        err = capsys.readouterr().err
        assert err.startswith("vsdsfn: error: ") and err.count("\n") == 1 and words in err, err
    assert not calls and sorted(p.name for p in tmp_path.iterdir()) == []


def test_ffmpeg_failure_names_its_message(media, tmp_path, monkeypatch, capsys):
    """A failing ffmpeg's own last line is in the one-line error (nothing is "above")."""
    from vsdsfn import encode

    fake_upscale(monkeypatch)
    real = encode._run

    def failing(cmd, *a, **kw):
        if kw.get("feed") is not None:   # the encoder: ffmpeg that gives up
            cmd = ["sh", "-c", "cat >/dev/null; echo 'Conversion failed: disk full' >&2; exit 3"]
        return real(cmd, *a, **kw)

    monkeypatch.setattr(encode, "_run", failing)
    assert cli(tmp_path, monkeypatch, str(media / "av.mkv"), "-o", str(tmp_path / "o.mkv"), "-q") == 1
    err = capsys.readouterr().err
    assert "ffmpeg failed (exit 3: Conversion failed: disk full); " in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_no_index_or_cache_is_left_behind(media, tmp_path, monkeypatch):
    fake_upscale(monkeypatch)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cli(tmp_path, monkeypatch, str(media / "av.mkv"), "-o", str(tmp_path / "o.y4m"), "-q") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.y4m"]

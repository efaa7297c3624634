"""Media facts: the pure reading of ffprobe's JSON (tables), and the real ffprobe on real and hostile files.

Hostile files (truncated, random bytes, an HLS playlist and a concat script named .MP4, an MP4 whose header
claims a huge box on a large sparse file) must never hang, crash or read outside the file: each is recorded
as ``ok: false`` with a reason. ffprobe absent or timing out is a fact too.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from dockd.core import ijson, mediafacts
from dockd.evidence import mediaprobe

FFMPEG = shutil.which("ffmpeg") and shutil.which("ffprobe")
needs_ffmpeg = pytest.mark.skipif(not FFMPEG, reason="ffmpeg/ffprobe not installed (apt-get install ffmpeg)")


def ffmpeg_clip(path: Path, *, seconds: int = 1, size: str = "320x240", created: str | None = None,
                fmt: str = "mp4") -> Path:
    argv = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
            "-i", f"testsrc=duration={seconds}:size={size}:rate=10", "-c:v", "mpeg4", "-q:v", "10"]
    if created:
        argv += ["-metadata", f"creation_time={created}"]
    subprocess.run(argv + ["-f", fmt, str(path)], check=True, timeout=60)
    path.chmod(0o600)  # as staged copies are
    return path


# ------------------------------------------------------------------ pure: ffprobe JSON -> facts

GOOD = {
    "program_version": {"version": "5.1.9-0+deb12u1"},
    "streams": [{"codec_name": "h264", "codec_type": "video", "width": 1920, "height": 1080,
                 "tags": {"creation_time": "2026-03-04T05:06:07.000000Z"}},
                {"codec_name": "aac", "codec_type": "audio", "tags": {}}],
    "format": {"nb_streams": 2, "format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "12.345000",
               "tags": {"creation_time": "2026-03-04T05:06:07.250000Z"}},
}

FACTS = [
    ("good", GOOD, {"ok": True, "duration_s": 12.345, "created_at": "2026-03-04T05:06:07.250Z",
                    "format": "mov,mp4,m4a,3gp,3g2,mj2", "codecs": ["h264", "aac"], "width": 1920, "height": 1080,
                    "streams": 2, "probe": "ffprobe 5.1.9-0+deb12u1"}),
    ("empty: ffprobe printed {}", {}, {"ok": False, "reason": "unreadable",
                                       "detail": "ffprobe found no container format"}),
    ("offset time, stream tag only", {"format": {"format_name": "avi", "duration": "1"},
                                      "streams": [{"codec_type": "video", "width": 0, "height": 5,
                                                   "tags": {"creation_time": "2026-01-01T02:00:00+02:00"}}]},
     {"ok": True, "duration_s": 1.0, "created_at": "2026-01-01T00:00:00.000Z", "format": "avi",
      "codecs": ["video"], "width": None, "height": None, "streams": 1, "probe": "ffprobe"}),
    ("hostile values", {"format": {"format_name": "x" * 500, "nb_streams": -4,
                                   "tags": {"creation_time": "yesterday\u202e"}, "duration": "7.0000004"},
                        "streams": [{"codec_name": "c" * 100}] * 40 + ["not an object"]},
     {"ok": True, "duration_s": 7, "created_at": None, "format": "x" * 64 + "...",
      "codecs": ["c" * 64 + "..."] * 16, "width": None, "height": None, "streams": 41, "probe": "ffprobe"}),
    ("control characters shown as escapes", {"format": {"format_name": "mov\x1b[31m\x7f", "duration": "0.0004"}},
     {"ok": True, "duration_s": 0, "created_at": None, "format": "mov\\x1b[31m\\x7f", "codecs": [], "width": None,
      "height": None, "streams": 0, "probe": "ffprobe"}),
    ("nan duration", {"format": {"format_name": "mpegts", "duration": "nan"}},
     {"ok": True, "duration_s": None, "created_at": None, "format": "mpegts", "codecs": [], "width": None,
      "height": None, "streams": 0, "probe": "ffprobe"}),
    ("absurd duration", {"format": {"format_name": "mpegts", "duration": "1e300"}},
     {"ok": True, "duration_s": None, "created_at": None, "format": "mpegts", "codecs": [], "width": None,
      "height": None, "streams": 0, "probe": "ffprobe"}),
]


@pytest.mark.parametrize(("doc", "want"), [(d, w) for _, d, w in FACTS], ids=[n for n, _, _ in FACTS])
def test_facts_table(doc, want):
    assert mediafacts.facts(doc) == want


def test_failure_shape_is_bounded_and_reasons_are_closed():
    f = mediafacts.failure("timeout", "line one\nline\ttwo " + "y" * 1000)
    assert f["ok"] is False and f["reason"] == "timeout" and "\n" not in f["detail"] and len(f["detail"]) <= 203
    assert mediafacts.failure("unavailable") == {"ok": False, "reason": "unavailable"}
    with pytest.raises(ValueError):
        mediafacts.failure("crashed")


MAGIC = [
    (b"\0\0\0\x20ftypisom" + b"\0" * 20, "mov"),
    (b"\0\0\0\x08wide\0\0\0\x10mdat", "mov"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "matroska"),
    (b"RIFF\0\0\0\0AVI LIST", "avi"),
    (b"\x47" + b"\0" * 187 + b"\x47" + b"\0" * 10, "mpegts"),
    (b"\0\0\0\0\x47" + b"\0" * 191 + b"\x47", "mpegts"),
    (b"#EXTM3U\n#EXT-X-VERSION:3\n", None),
    (b"ffconcat version 1.0\nfile /etc/passwd\n", None),
    (b"RIFF\0\0\0\0WAVEfmt ", None),
    (b"", None),
]


@pytest.mark.parametrize(("head", "want"), MAGIC, ids=[repr(h[:12]) for h, _ in MAGIC])
def test_demuxer_from_first_bytes(head, want):
    assert mediafacts.demuxer(head) == want


def test_summary_lines():
    ok = mediafacts.facts(GOOD)
    assert mediafacts.summary(ok) == ("mov,mp4,m4a,3gp,3g2,mj2, 12.345 s, h264+aac, 1920x1080, "
                                      "created 2026-03-04T05:06:07.250Z")
    assert mediafacts.summary({"ok": False, "reason": "unavailable"}) == "not probed (unavailable)"
    assert mediafacts.summary(mediafacts.failure("unreadable", "moov atom not found")).startswith("not readable")


# ------------------------------------------------------------------ the real ffprobe

@needs_ffmpeg
def test_real_clip_facts(tmp_path):
    clip = ffmpeg_clip(tmp_path / "A.MP4", seconds=2, created="2025-12-29T09:20:00Z")
    m = mediaprobe.Prober().probe(clip)
    assert m["ok"] is True, m
    assert (m["duration_s"], m["created_at"], m["codecs"], m["width"], m["height"], m["streams"]) == \
        (2.0, "2025-12-29T09:20:00.000Z", ["mpeg4"], 320, 240, 1)
    assert m["format"].startswith("mov,mp4") and m["probe"].startswith("ffprobe ")
    assert ijson.loads(json.dumps(m)) == m  # fits the strict loader
    assert clip.stat().st_mode & 0o777 == 0o600  # the staged copy's mode is as it was


@needs_ffmpeg
def test_real_matroska_and_mpegts(tmp_path):
    for fmt, name in (("matroska", "B.MKV"), ("mpegts", "C.TS")):
        m = mediaprobe.Prober().probe(ffmpeg_clip(tmp_path / name, fmt=fmt))
        assert m["ok"] is True and m["width"] == 320 and m["codecs"] == ["mpeg4"], (fmt, m)


def _hostile(tmp_path: Path) -> dict[str, Path]:
    canary = tmp_path / "canary.txt"
    canary.write_text("SECRET-CANARY\n")
    good = ffmpeg_clip(tmp_path / "good.mp4")
    files = {
        "truncated": good.read_bytes()[: len(good.read_bytes()) // 3],
        "random": os.urandom(300_000),
        "hls playlist": f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:{canary}\n#EXT-X-ENDLIST\n".encode(),
        "concat script": f"ffconcat version 1.0\nfile {canary}\n".encode(),
        "ftyp then garbage": b"\0\0\0\x18ftypisom\0\0\0\0isom" + os.urandom(50_000),
        "box claims 4 GiB": b"\0\0\0\x18ftypisom\0\0\0\0isom" + struct.pack(">I4s", 0xFFFFFFFF, b"moov")
        + os.urandom(1000),
        "64-bit box size": b"\0\0\0\x18ftypisom\0\0\0\0isom" + struct.pack(">I4sQ", 1, b"moov", 1 << 62),
    }
    out = {}
    for name, data in files.items():
        p = tmp_path / (name.replace(" ", "_") + ".MP4")
        p.write_bytes(data)
        p.chmod(0o600)
        out[name] = p
    big = tmp_path / "oversized.MP4"  # 3 GiB, sparse: a real header, then holes
    with open(big, "wb") as f:
        f.write(b"\0\0\0\x18ftypisom\0\0\0\0isom" + struct.pack(">I4s", 3 << 30, b"mdat"))
        f.truncate(3 << 30)
    big.chmod(0o600)
    out["oversized sparse"] = big
    return out


@needs_ffmpeg
def test_hostile_files_are_facts_not_failures(tmp_path):
    prober = mediaprobe.Prober(timeout_s=10)
    for name, path in _hostile(tmp_path).items():
        m = prober.probe(path)
        assert m["ok"] is False and m["reason"] in ("unreadable", "limit"), (name, m)
        assert "SECRET-CANARY" not in str(m), name  # nothing read outside the file
        assert path.stat().st_mode & 0o777 == 0o600, name
    # the playlist and the concat script never reach ffprobe: their first bytes name no camera container
    assert "ffprobe not run" in prober.probe(tmp_path / "hls_playlist.MP4")["detail"]


@needs_ffmpeg
def test_timeout_kills_the_probe(tmp_path):
    m = mediaprobe.Prober(timeout_s=0.001).probe(ffmpeg_clip(tmp_path / "A.MP4"))
    assert m == {"ok": False, "reason": "timeout", "detail": "ffprobe killed after 0.001 s"}


def test_ffprobe_missing_is_unavailable(tmp_path, monkeypatch):
    clip = tmp_path / "A.MP4"
    clip.write_bytes(b"\0\0\0\x18ftypisom\0\0\0\0isom")
    assert mediaprobe.Prober(ffprobe=str(tmp_path / "no-ffprobe")).probe(clip)["reason"] == "unavailable"
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without ffprobe
    m = mediaprobe.Prober().probe(clip)
    assert m == {"ok": False, "reason": "unavailable", "detail": "ffprobe: not found"}


@needs_ffmpeg
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: checks the switch to an unprivileged user")
def test_runs_as_an_unprivileged_user_when_root(tmp_path):
    bindir = Path(tempfile.mkdtemp(prefix="dockd-fake-ffprobe-"))  # outside the 0700 pytest dir
    bindir.chmod(0o755)
    fake = bindir / "ffprobe"  # prints its identity and limits as ffprobe-shaped JSON
    fake.write_text("#!/bin/sh\nprintf '{\"format\": {\"format_name\": \"%s:%s:%s:%s\"}}' "
                    "\"$(/usr/bin/id -u)\" \"$(/usr/bin/id -G)\" \"$(ulimit -f)\" \"$(ulimit -n)\"\n")
    fake.chmod(0o755)
    clip = ffmpeg_clip(tmp_path / "A.MP4")
    try:
        m = mediaprobe.Prober(ffprobe=str(fake), user="nobody").probe(clip)
    finally:
        shutil.rmtree(bindir)
    assert m.get("ok") is True, m
    uid, groups, fsize, nofile = m["format"].split(":")
    assert int(uid) != 0 and "0" not in groups.split() and fsize == "0" and nofile == str(mediaprobe.NOFILE)
    assert clip.stat().st_mode & 0o777 == 0o600


VERDICTS = [
    ((-int(__import__("signal").SIGXCPU), b"", b"", None), ("limit", "ffprobe killed by SIGXCPU")),
    ((-int(__import__("signal").SIGSEGV), b"", b"", None), ("unreadable", "ffprobe killed by SIGSEGV")),
    ((1, b"", b"[mov @ 0x55d0] Cannot allocate memory\n", None), ("limit", "[mov] Cannot allocate memory")),
    ((1, b"", b"file:/proc/self/fd/7: Invalid data found when processing input\n", None),
     ("unreadable", "Invalid data found when processing input")),
    ((0, b'{"format": {"a": 1, "a": 2}}', b"", None), ("unreadable", "ffprobe output is not strict JSON: "
                                                                      'duplicate member name "a"')),
    ((None, b"{", b"", "limit"), ("limit", f"ffprobe output larger than {mediaprobe.MAX_OUT} bytes")),
    ((None, b"", b"", "timeout"), ("timeout", "ffprobe killed after 10 s")),
]


@pytest.mark.parametrize(("given", "want"), VERDICTS, ids=[w[1][:30] for _, w in VERDICTS])
def test_how_ffprobe_ended_table(given, want):
    m = mediaprobe._verdict(*given, 10.0)
    assert (m["ok"], m["reason"], m["detail"]) == (False, *want)


@needs_ffmpeg
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_root_without_capabilities_still_probes(tmp_path):
    """A daemon that is uid 0 but gave up every capability (no `dockd` user: a development machine, the demo)
    cannot switch to another user; ffprobe then runs as the daemon does, under the same limits, rather than
    every clip being recorded as `unavailable`."""
    clip = ffmpeg_clip(tmp_path / "A.MP4", seconds=2, created="2025-12-29T09:20:00Z")
    code = ("import json, sys; from pathlib import Path; from dockd.evidence import mediaprobe; "
            "print(json.dumps(mediaprobe.Prober().probe(Path(sys.argv[1]))))")
    out = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", os.sys.executable, "-c", code,
                          str(clip)], capture_output=True, text=True, timeout=60, check=True)
    m = json.loads(out.stdout)
    assert m["ok"] is True and m["duration_s"] == 2 and m["created_at"].startswith("2025-12-29T09:20:00")


def test_ffprobe_runs_under_its_limits_without_python_in_the_child():
    """The wrapper (prlimit, then setpriv) puts every limit on what it execs: CPU seconds, address space, no
    file writes, few descriptors, no core, no_new_privs, a parent-death signal."""
    wrap = mediaprobe.limits_argv(7)
    assert wrap is not None, "util-linux prlimit and setpriv are part of every Debian system"
    out = subprocess.run([*wrap, "sh", "-c", "ulimit -t; ulimit -v; ulimit -f; ulimit -n; ulimit -c; "
                          "grep -E '^NoNewPrivs' /proc/self/status"], capture_output=True, text=True,
                         timeout=30, check=True).stdout.split()
    assert out[:5] == ["7", str(mediaprobe.MEM_LIMIT // 1024), "0", str(mediaprobe.NOFILE), "0"]
    assert out[5:] == ["NoNewPrivs:", "1"]


def test_probes_from_many_threads_never_hang(tmp_path):
    """The daemon probes from several threads while others log, copy and commit: starting ffprobe must not
    depend on any lock another thread might hold at the fork (a preexec_fn did, and hung at random)."""
    import threading

    if not FFMPEG:
        pytest.skip("ffmpeg/ffprobe not installed")
    one = ffmpeg_clip(tmp_path / "C.MP4")
    clips = []
    for i in range(24):  # one probe per file at a time, as in the offloader (it opens the file's mode to the probe)
        clips.append(tmp_path / f"C{i}.MP4")
        shutil.copyfile(one, clips[-1])
    stop = threading.Event()

    def churn() -> None:  # other threads taking and releasing locks (imports, logging) all the time
        import logging

        while not stop.is_set():
            logging.getLogger("churn").debug("x")
            __import__("json").dumps({"a": 1})

    busy = [threading.Thread(target=churn, daemon=True) for _ in range(4)]
    for t in busy:
        t.start()
    try:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda c: mediaprobe.Prober(timeout_s=20).probe(c), clips))
    finally:
        stop.set()
    assert all(m["ok"] for m in results), [m for m in results if not m["ok"]][:1]

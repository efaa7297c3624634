#!/usr/bin/env python3
"""Offload benchmark: dockd's verified import vs. ``cp -r`` (+ sha256sum) on the same files, same run.

    scripts/bench offload [--reps N] [--no-4g] [--buffer-kb K] [--only SET] [--media-probe on|off|both]
                          [--tools dockd,dockd-noprobe,naive,cp,floor]

Data sets (random bytes, generated once and cached in $DOCKD_BENCH_DIR,
default /var/tmp/dockd-bench):

* ``mixed``: DCIM/100CAM/ with 3 clips of 512 MiB and 256 clips of 2 MiB (2 GiB)
* ``mixed2``: DCIM/100CAM/ with 8 clips of 300 MiB and 50 clips of 1 MiB (2.4 GiB; issue #12 part 3)
* ``single4g``: one 4 GiB clip (peak RSS must not grow with clip size)
* ``mixedmp4`` (only with ``--only mixedmp4``): the shapes of ``mixed``, each file a real MP4 (an
  ffmpeg-made clip whose trailing ISO-BMFF ``free`` box holds the random bytes), so ffprobe reads every
  clip; ``mixed``'s random bytes name no container and ffprobe is never started for them
* ``longmp4`` (only with ``--only longmp4``): the three 512 MiB clips of ``mixedmp4`` alone (hard links)

Tools, each writing to a fresh destination on the same filesystem:

* ``dockd``: ``dockd --config C import SRC --camera BENCH --json`` in a fresh
  data dir with ``[offload] verify = "reread"``, ``media_probe = true`` (copy+hash in one pass, fsync,
  drop the cache, re-read and hash again, rename, fsync the dir, sign a
  manifest, commit to the SQLite queue), as a child process (peak RSS).
* ``dockd-noprobe`` (``--media-probe both|off``): the same with ``media_probe = false``, in the
  same run, interleaved: the cost of the media step is dockd-noprobe's MB/s over dockd's.
* ``naive``: ``cp -r SRC DST && sync && sha256sum`` of every source and every
  copied file, then compare the lists (the careful manual procedure).
* ``cp``: ``cp -r SRC DST && sync`` (no verification at all; the speed limit).
* ``floor``: ``cp -r SRC DST && sync`` and then every copied file read back
  from the disk with O_DIRECT (scripts/benchlib/direct_read.py; no hashing):
  the least I/O any offload that verifies by re-reading must do. Shown for
  reference (no target): dockd/floor near 1 means dockd is as fast as the
  disk allows for a verified copy.

Targets: dockd >= 1.5x naive and >= 0.8x cp+sync; dockd peak RSS < 100 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402 - found through the sys.path entry above
    BENCH_DIR,
    REPO,
    VENV_BIN,
    GiB,
    MiB,
    Run,
    drop_caches,
    ensure_dataset,
    fmt_row,
    load1,
    machine,
    rm_tree,
    run_child,
    save_results,
    say,
    summary,
    wait_quiet,
)

TARGET_NAIVE, TARGET_CP, TARGET_RSS_MIB = 1.5, 0.8, 100

NAIVE_SH = r"""
set -eu
cp -r "$SRC" "$DST"
sync
(cd "$SRC" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > "$W/naive-src.sha256"
(cd "$DST" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > "$W/naive-dst.sha256"
cmp -s "$W/naive-src.sha256" "$W/naive-dst.sha256"
"""

FLOOR_SH = r"""
set -eu
cp -r "$SRC" "$DST"
sync
"$PY" "$REPO/scripts/benchlib/direct_read.py" "$DST" >/dev/null
"""

CP_SH = r"""
set -eu
cp -r "$SRC" "$DST"
sync
"""


def datasets(wd: Path, want_4g: bool, only: str | None = None) -> dict[str, tuple[Path, int, int]]:
    out = {}
    mixed = [(f"DCIM/100CAM/LONG{i:04d}.MP4", 512 * MiB) for i in range(1, 4)]
    mixed += [(f"DCIM/100CAM/CLIP{i:04d}.MP4", 2 * MiB) for i in range(1, 257)]
    root = wd / "src-offload-mixed"
    if only in (None, "mixed"):
        out["mixed"] = (root, *ensure_dataset(root, mixed))
    mixed2 = [(f"DCIM/100CAM/LONG{i:04d}.MP4", 300 * MiB) for i in range(1, 9)]
    mixed2 += [(f"DCIM/100CAM/CLIP{i:04d}.MP4", 1 * MiB) for i in range(1, 51)]
    root = wd / "src-offload-mixed2"
    if only in (None, "mixed2"):
        out["mixed2"] = (root, *ensure_dataset(root, mixed2))
    if want_4g:
        root = wd / "src-offload-4g"
        out["single4g"] = (root, *ensure_dataset(root, [("DCIM/100CAM/LONG0001.MP4", 4 * GiB)]))
    return out


def mp4_dataset(wd: Path) -> tuple[Path, int, int]:
    """``mixed``'s shapes as real MP4s: random files, then each one's head overwritten (in place) with a small
    ffmpeg clip followed by the header of a ``free`` box spanning the rest of the file."""
    import struct
    import subprocess

    root = wd / "src-offload-mixedmp4"
    files = [(f"DCIM/100CAM/LONG{i:04d}.MP4", 512 * MiB) for i in range(1, 4)]
    files += [(f"DCIM/100CAM/CLIP{i:04d}.MP4", 2 * MiB) for i in range(1, 257)]
    n, total = ensure_dataset(root, files)
    head_mp4 = wd / "mp4-head.mp4"
    if not head_mp4.exists():
        subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc=duration=1:size=320x240:rate=10", "-c:v", "mpeg4", "-q:v", "10", "-movflags",
                        "+faststart", "-metadata", "creation_time=2023-11-14T22:13:20Z", "-f", "mp4",
                        str(head_mp4)], check=True, timeout=120)
    head = head_mp4.read_bytes()
    for rel, size in files:
        p = root / rel
        with open(p, "r+b") as f:
            if f.read(len(head)) != head:
                f.seek(0)
                f.write(head + struct.pack(">I4s", size - len(head), b"free"))
        os.utime(p, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    return root, n, total


def long_mp4_dataset(wd: Path) -> tuple[Path, int, int]:
    """Only the three 512 MiB clips of ``mixedmp4`` (hard links): the media step on clips of a realistic size."""
    src, _, _ = mp4_dataset(wd)
    root = wd / "src-offload-longmp4"
    rm_tree(root)
    (root / "DCIM/100CAM").mkdir(parents=True)
    total = 0
    for i in range(1, 4):
        rel = f"DCIM/100CAM/LONG{i:04d}.MP4"
        os.link(src / rel, root / rel)
        total += (root / rel).stat().st_size
    return root, 3, total


def write_config(work: Path, buffer_kb: int | None, media_probe: bool = True) -> Path:
    cfg = work / ("dockd.toml" if media_probe else "dockd-noprobe.toml")
    extra = f"buffer_kb = {buffer_kb}\n" if buffer_kb else ""
    extra += f"media_probe = {'true' if media_probe else 'false'}\n"
    cfg.write_text(f'[station]\nid = "bench"\ndata_dir = "{work / "dockd-data"}"\n\n'
                   f'[offload]\nverify = "reread"\nreserve_free_mb = 64\n{extra}\n[metrics]\nlisten = ""\n')
    return cfg


def prepare() -> tuple[float, bool]:
    la = wait_quiet()
    cold = drop_caches()
    return la, cold


def run_dockd(work: Path, cfg: Path, src: Path, n_files: int, nbytes: int, tool: str = "dockd",
              tree: str | None = None) -> Run:
    rm_tree(work / "dockd-data")
    la, cold = prepare()
    argv = [str(VENV_BIN / "dockd"), "--config", str(cfg), "import", str(src), "--camera", "BENCH", "--json"]
    # --base-tree: another checkout's dockd package first on the path (the editable install's finder comes last)
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    c = run_child(argv, stdout_path=work / "dockd-import.json", env=env)
    if c.rc != 0:
        raise SystemExit(f"dockd import failed (exit {c.rc}): {c.stdout[-2000:]}")
    s = json.loads(c.stdout)
    if s["staged"] != n_files or s["bytes"] != nbytes:
        raise SystemExit(f"dockd import staged {s['staged']} clips / {s['bytes']} bytes, expected {n_files} / {nbytes}")
    probed = _media_outcomes(work / "dockd-data")
    rm_tree(work / "dockd-data")
    return Run(tool, c.seconds, nbytes, c.maxrss_kib, la, cold, c.cpu_s, {"internal_s": s["seconds"], "media": probed})


def _media_outcomes(data: Path) -> dict[str, int]:
    """How many manifests say what about the media (ok / a reason / absent): proof of what was measured."""
    out: dict[str, int] = {}
    for m in (data / "staging").glob("*.manifest.json"):
        media = json.loads(m.read_text()).get("media")
        k = "absent" if media is None else "ok" if media.get("ok") else media.get("reason", "?")
        out[k] = out.get(k, 0) + 1
    return out


def run_sh(tool: str, script: str, work: Path, src: Path, nbytes: int) -> Run:
    dst = work / f"{tool}-dst"
    rm_tree(dst)
    la, cold = prepare()
    env = dict(os.environ, SRC=str(src), DST=str(dst), W=str(work), LC_ALL="C", PY=sys.executable, REPO=str(REPO))
    c = run_child(["bash", "-c", script], env=env)
    if c.rc != 0:
        raise SystemExit(f"{tool} baseline failed (exit {c.rc})")
    rm_tree(dst)
    return Run(tool, c.seconds, nbytes, c.maxrss_kib, la, cold, c.cpu_s)


def report(name: str, nbytes: int, n_files: int, runs: dict[str, list[Run]]) -> dict:
    say(f"\n  {name}: {n_files} files, {nbytes / GiB:.2f} GiB (median of {len(next(iter(runs.values())))} runs)")
    w = [14, 10, 8, 10, 10, 22]
    say("  " + fmt_row(["tool", "median s", "MB/s", "peak RSS", "CPU", "runs s"], w))
    res = {}
    for tool, rs in runs.items():
        sm = summary(rs)
        res[tool] = sm
        say("  " + fmt_row([tool, f"{sm['median_s']:.2f}", f"{sm['median_mbps']:.0f}", f"{sm['max_rss_mib']:.0f} MiB",
                            f"{sm['median_cpu_s']:.2f} s", " ".join(f"{x:.2f}" for x in sm["runs_s"])], w))
    out = {"files": n_files, "bytes": nbytes, "tools": res, "ratios": {}}
    if "dockd" in res and "dockd-noprobe" in res:
        r = res["dockd"]["median_mbps"] / res["dockd-noprobe"]["median_mbps"]
        out["ratios"]["dockd/dockd-noprobe"] = r
        say(f"  media probe: dockd {res['dockd']['median_mbps']:.0f} MB/s with, "
            f"{res['dockd-noprobe']['median_mbps']:.0f} MB/s without = {r:.3f}x ({(1 - r) * 100:+.1f}% slower; "
            f"target <= 5%: {'met' if r >= 0.95 else 'MISSED'})")
    if "dockd-base" in res:
        for t in ("dockd", "dockd-noprobe"):
            if t in res:
                out["ratios"][f"{t}/dockd-base"] = r = res[t]["median_mbps"] / res["dockd-base"]["median_mbps"]
                say(f"  {t}/dockd-base = {r:.2f}x   (this tree against --base-tree, same run)")
        if "floor" in res:
            out["ratios"]["dockd-base/floor"] = r = res["dockd-base"]["median_mbps"] / res["floor"]["median_mbps"]
            say(f"  dockd-base/floor = {r:.2f}x")
    if "dockd-noprobe" in res and "floor" in res:
        out["ratios"]["dockd-noprobe/floor"] = r = res["dockd-noprobe"]["median_mbps"] / res["floor"]["median_mbps"]
        say(f"  dockd-noprobe/floor = {r:.2f}x")
    if "dockd" not in res:
        return out
    d = res["dockd"]["median_mbps"]
    for peer, target in (("naive", TARGET_NAIVE), ("cp", TARGET_CP), ("floor", None)):
        if peer in res and "dockd" in res:
            r = d / res[peer]["median_mbps"]
            out["ratios"][f"dockd/{peer}"] = r
            verdict = f"target >= {target}x: {'met' if r >= target else 'MISSED'}" if target else \
                "reference: cp + sync + O_DIRECT re-read of the copy, no hashing"
            say(f"  dockd/{peer:<5} = {r:.2f}x   ({verdict})")
    rss = max(res[t]["max_rss_mib"] for t in res if t.startswith("dockd"))
    say(f"  dockd peak RSS = {rss:.0f} MiB "
        f"(target < {TARGET_RSS_MIB} MiB: {'met' if rss < TARGET_RSS_MIB else 'MISSED'})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench offload", description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions per tool (median reported; default 3)")
    ap.add_argument("--no-4g", action="store_true", help="skip the single 4 GiB clip run")
    ap.add_argument("--buffer-kb", type=int, default=None, help="override [offload] buffer_kb for dockd")
    ap.add_argument("--only", choices=["mixed", "mixed2", "single4g", "mixedmp4", "longmp4"],
                    help="run one data set only")
    ap.add_argument("--media-probe", choices=["on", "off", "both"], default="on",
                    help="dockd with [offload] media_probe on (default), off (as dockd-noprobe), or both")
    ap.add_argument("--tools", help="comma-separated subset of dockd,dockd-noprobe,naive,cp,floor")
    ap.add_argument("--base-tree", help="also run `dockd-base`: dockd (probe as --media-probe on/both) from the "
                    "dockd package in this directory (e.g. `git archive OLD dockd | tar -x -C DIR`), in the same "
                    "run: a before/after pair under the same load")
    a = ap.parse_args(argv)

    wd = BENCH_DIR
    wd.mkdir(parents=True, exist_ok=True)
    work = wd / "offload-work"
    rm_tree(work)
    work.mkdir(parents=True)
    say(f"==> offload benchmark in {wd}  (machine: {json.dumps(machine())})")
    if a.only == "mixedmp4":
        sets = {"mixedmp4": mp4_dataset(wd)}
    elif a.only == "longmp4":
        sets = {"longmp4": long_mp4_dataset(wd)}
    else:
        sets = datasets(wd, not a.no_4g and a.only in (None, "single4g"), a.only)
        if a.only:
            sets = {a.only: sets[a.only]}
    cfgs = {"dockd": write_config(work, a.buffer_kb), "dockd-noprobe": write_config(work, a.buffer_kb, False)}
    mine = {"on": ["dockd"], "off": ["dockd-noprobe"], "both": ["dockd", "dockd-noprobe"]}[a.media_probe]
    if a.base_tree:
        mine.append("dockd-base")
        cfgs["dockd-base"] = cfgs["dockd-noprobe" if a.media_probe == "off" else "dockd"]
    say(f"    page cache dropped before each run: {drop_caches()}; load now {load1():.2f}")
    results = {"machine": machine(), "reps": a.reps, "buffer_kb": a.buffer_kb, "media_probe": a.media_probe,
               "sets": {}}
    try:
        for name, (src, n_files, nbytes) in sets.items():
            tools = mine + (["naive", "cp", "floor"] if name == "mixed" else ["cp", "floor"])
            if a.tools:
                tools = [t for t in tools if t in a.tools.split(",") or t == "dockd-base"]
            runs: dict[str, list[Run]] = {t: [] for t in tools}
            say(f"\n==> {name}: {', '.join(tools)} x {a.reps}")
            for rep in range(1, a.reps + 1):
                for tool in tools:
                    if tool in cfgs:
                        r = run_dockd(work, cfgs[tool], src, n_files, nbytes, tool,
                                      a.base_tree if tool == "dockd-base" else None)
                    else:
                        r = run_sh(tool, {"naive": NAIVE_SH, "cp": CP_SH, "floor": FLOOR_SH}[tool], work, src, nbytes)
                    runs[tool].append(r)
                    extra = f"  (in-process {r.extra['internal_s']:.2f} s, media {r.extra['media']})" \
                        if "internal_s" in r.extra else ""
                    say(f"    rep {rep} {tool:<13} {r.seconds:6.2f} s  {r.mbps:6.0f} MB/s"
                        f"  rss {r.maxrss_kib / 1024:5.0f} MiB"
                        f"  cpu {r.cpu_s:5.2f} s  load {r.load:.2f}  {'cold' if r.cold else 'WARM'}{extra}")
            results["sets"][name] = report(name, nbytes, n_files, runs)
            results["sets"][name]["runs"] = {t: [vars(r) for r in rs] for t, rs in runs.items()}
    finally:
        rm_tree(work)
    say(f"\n    results: {save_results('offload', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

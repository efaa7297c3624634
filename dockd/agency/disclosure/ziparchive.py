"""A bag as one zip file: written from the finished bag directory, and unpacked (hostile input) for
``verify``. Entries are stored uncompressed (video does not compress) under one top-level directory named
like the bag, the usual serialization of BagIt bags (bdbag, bagit-profile ``application/zip``).

Unpacking refuses anything but plain directories and regular files with plain names below that one
directory (no absolute path, no ``..``, no symlink, no device), more than :data:`MAX_ENTRIES` entries, or an
entry that inflates past its declared size (a zip bomb); files are copied in bounded chunks.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from dockd.agency.disclosure import DisclosureFailed, bagfmt
from dockd.evidence.durable import fsync_dir

CHUNK = 1 << 20
MAX_ENTRIES = 200_000


def write(bag_dir: Path, dest: Path) -> None:
    """Zip ``bag_dir`` into ``dest`` (temporary name, fsync, rename), top-level directory ``dest``'s stem."""
    tmp = write_sealed(bag_dir, dest)
    os.rename(tmp, dest)
    fsync_dir(dest.parent)


def write_sealed(bag_dir: Path, dest: Path) -> Path:
    """Zip ``bag_dir`` for ``dest`` under a hidden temporary name beside it, fsynced; return that name
    (the caller renames it into place: :meth:`.writer.BagWriter.publish`)."""
    top = dest.name[: -len(".zip")] if dest.name.endswith(".zip") else dest.name
    tmp = dest.with_name(f".{dest.name}.zip-partial-{os.getpid()}")
    try:
        with open(tmp, "xb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for root, dirs, files in os.walk(bag_dir):
                dirs.sort()
                for n in sorted(files):
                    p = Path(root) / n
                    rel = p.relative_to(bag_dir).as_posix()
                    info = zipfile.ZipInfo(f"{top}/{rel}", date_time=(1980, 1, 1, 0, 0, 0))
                    info.external_attr = (stat.S_IFREG | 0o644) << 16
                    with open(p, "rb") as src, zf.open(info, "w", force_zip64=True) as out:
                        shutil.copyfileobj(src, out, CHUNK)
            zf.close()
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def unpack(zpath: Path, into: Path) -> Path:
    """Extract the zipped bag ``zpath`` under the new directory ``into``; return the bag directory."""
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError) as e:
        raise DisclosureFailed(f"{zpath}: not a readable zip file ({e})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise DisclosureFailed(f"{zpath}: more than {MAX_ENTRIES} entries; not a dockd bag")
        tops = {i.filename.split("/", 1)[0] for i in infos}
        if len(tops) != 1 or not bagfmt.safe_path(next(iter(tops))):
            raise DisclosureFailed(f"{zpath}: a zipped bag holds exactly one plainly named top-level directory")
        top = next(iter(tops))
        for i in infos:
            mode = i.external_attr >> 16
            rel = i.filename[len(top) + 1:].rstrip("/")
            if i.is_dir():
                if rel and not bagfmt.safe_path(rel):
                    raise DisclosureFailed(f"{zpath}: entry {i.filename!r} is not a plain bag path")
                continue
            if (mode and not stat.S_ISREG(mode)) or not bagfmt.safe_path(rel):
                raise DisclosureFailed(f"{zpath}: entry {i.filename!r} is not a plain regular file of a bag")
            dest = into / top / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            n = 0
            with zf.open(i) as src, open(dest, "xb") as out:
                while b := src.read(CHUNK):
                    n += len(b)
                    if n > i.file_size:
                        raise DisclosureFailed(f"{zpath}: entry {i.filename!r} inflates past its declared size")
                    out.write(b)
    return into / top


class Unpacked:
    """``with Unpacked(zip) as bag_dir:`` a temporary extraction, removed afterwards."""

    def __init__(self, zpath: Path, within: Path | None = None):
        self.zpath, self.within = zpath, within  # within: where to extract (default: the temp directory)

    def __enter__(self) -> Path:
        self.tmp = Path(tempfile.mkdtemp(prefix=".dockd-bag-", dir=self.within))
        try:
            return unpack(self.zpath, self.tmp)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

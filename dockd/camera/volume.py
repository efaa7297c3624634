"""A camera volume, read as hostile input.

Everything goes through directory file descriptors: the root is opened with
``O_NOFOLLOW | O_DIRECTORY`` and every step below it with ``dir_fd=`` and
``O_NOFOLLOW``, so no symlink on the camera is ever followed and nothing
outside the volume can be reached by what is written on it. Only regular
files are opened, with ``O_NONBLOCK`` (a FIFO that slipped in by a race can't
hang us) and then checked by ``fstat`` to be the very inode the scan saw.

Names are never trusted: a name that is not valid UTF-8 is skipped, every
name is kept only as escaped metadata, and no local path is ever built from
it (the offloader names staged files by clip id).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from dockd.core import timefmt
from dockd.core.naming import safe_ext
from dockd.core.outcomes import SkipKind
from dockd.evidence.localfile import read_regular

# Sizes are recorded in JSON (manifest, queue JSON, audit) that jq and JavaScript read as
# doubles: above 2**53 - 1 a size would not be exact there (I-JSON, RFC 7493).
MAX_SIZE = (1 << 53) - 1

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class SourceChanged(Exception):
    """The file on the camera is not the one that was scanned (replaced, resized, touched or gone)."""


@dataclass(frozen=True)
class Entry:
    path: str  # relative, '/'-separated, valid UTF-8
    size: int
    mtime_ns: int
    dev: int
    ino: int

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))

    @property
    def ext(self) -> str:
        return safe_ext(self.path)




@dataclass(frozen=True)
class Skip:
    path: str  # escaped for display
    reason: str  # one line, for people
    kind: SkipKind = SkipKind.ENTRY  # for policy: INCOMPLETE if the scan stopped here


@dataclass
class Scan:
    clips: list[Entry] = field(default_factory=list)
    sidecars: dict[str, list[Entry]] = field(default_factory=dict)  # clip path -> its sidecars
    skipped: list[Skip] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """False if the scan stopped early (too many entries): a clip it did not see may still be there."""
        return not any(sk.kind is SkipKind.INCOMPLETE for sk in self.skipped)


@dataclass(frozen=True)
class Limits:
    max_file_size: int = 64 << 30
    max_depth: int = 16
    max_entries: int = 100_000  # per directory, and in total


def escape(name: str) -> str:
    """Printable, unambiguous form of an untrusted name (bad bytes as \\xNN, controls escaped)."""
    raw = name.encode("utf-8", "surrogateescape")
    s = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


def valid_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return name not in ("", ".", "..") and "/" not in name


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern:
    """Translate a '/'-separated glob (``*``, ``?``, ``[...]``, ``**`` for any depth) to a regex."""
    segs = pattern.strip("/").split("/")
    out = []
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        j, piece = 0, ""
        while j < len(seg):
            ch = seg[j]
            if ch == "*":
                piece += "[^/]*"
            elif ch == "?":
                piece += "[^/]"
            elif ch == "[" and (end := seg.find("]", j + (3 if seg[j + 1:j + 2] == "!" else 2))) > 0:
                # a ']' first in the class is a member; an unterminated '[' is literal
                neg = seg[j + 1:j + 2] == "!"
                body = re.sub(r"([\\\[\]^&~|])", r"\\\1", seg[j + (2 if neg else 1):end].replace("/", ""))
                # a class never matches the separator
                piece += f"[^/{body}]" if neg else f"[{body}]" if body else "(?!)"
                j = end
            else:
                piece += re.escape(ch)
            j += 1
        out.append(piece + ("" if last else "/"))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def matches(path: str, globs: tuple[str, ...] | list[str]) -> bool:
    return any(glob_regex(g).match(path) for g in globs)


def _stem(path: str) -> str:
    d, _, name = path.rpartition("/")
    return f"{d}/{name.rsplit('.', 1)[0]}".lower() if "." in name else f"{d}/{name}".lower()


class Volume:
    """An opened camera volume. Close it (or use ``with``) to release the root fd."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.fd = os.open(self.root, O_DIR)
        self.dev = os.fstat(self.fd).st_dev

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scanning

    def scan(self, clip_globs: tuple[str, ...], sidecar_globs: tuple[str, ...] = (), limits: Limits = Limits()) -> Scan:
        """Walk the volume; return clips, their sidecars, and every entry skipped with the reason."""
        out = Scan()
        side: list[Entry] = []
        total = 0

        def listing(dfd: int, rel: str, depth: int) -> list:
            """Visit one directory's entries; return its subdirectories still to enter (not yet opened)."""
            nonlocal total
            subdirs: list = []
            seen = 0
            with os.scandir(dfd) as it:
                for de in it:
                    seen += 1
                    total += 1
                    if seen > limits.max_entries:
                        out.skipped.append(Skip(
                            escape(rel or "."), f"directory too wide (more than {limits.max_entries} entries); "
                            "rest not scanned", SkipKind.INCOMPLETE))
                        break
                    if total > limits.max_entries:
                        out.skipped.append(Skip(
                            escape(rel or "."), f"volume too large (more than {limits.max_entries} entries); "
                            "rest not scanned", SkipKind.INCOMPLETE))
                        break
                    self._visit(dfd, rel, depth, de, clip_globs, sidecar_globs, limits, out, side, subdirs)
            subdirs.reverse()
            return subdirs

        # Depth first, holding one fd per level (never one per pending directory: a
        # camera with thousands of sibling directories must not exhaust descriptors).
        root = os.dup(self.fd)
        try:
            top = listing(root, "", 0)
        except BaseException:
            os.close(root)
            raise
        frames: list[tuple[int, str, int, list]] = [(root, "", 0, top)]
        try:
            while frames and total <= limits.max_entries:
                dfd, rel, depth, pending = frames[-1]
                if not pending:
                    os.close(frames.pop()[0])
                    continue
                name, path, st = pending.pop()
                shown = escape(path)
                try:
                    sub = os.open(name, O_DIR, dir_fd=dfd)
                except OSError as e:
                    out.skipped.append(Skip(shown, f"cannot open directory: {e.strerror}"))
                    continue
                fst = os.fstat(sub)
                if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                    os.close(sub)
                    out.skipped.append(Skip(shown, "directory changed during scan"))
                    continue
                try:
                    subs = listing(sub, path, depth + 1)
                except BaseException:
                    os.close(sub)
                    raise
                frames.append((sub, path, depth + 1, subs))
        finally:
            for dfd, _, _, _ in frames:
                os.close(dfd)
        stems = {_stem(c.path): c.path for c in out.clips}
        for s in side:
            owner = stems.get(_stem(s.path))
            if owner is None:
                out.skipped.append(Skip(escape(s.path), "sidecar without a clip of the same name; left on camera"))
            else:
                out.sidecars.setdefault(owner, []).append(s)
        out.clips.sort(key=lambda e: e.path)
        return out

    def _visit(self, dfd, rel, depth, de, clip_globs, sidecar_globs, limits, out, side, stack) -> None:
        name = de.name
        shown = escape(f"{rel}/{name}" if rel else name)
        if not valid_name(name):
            out.skipped.append(Skip(shown, "name is not valid UTF-8"))
            return
        path = f"{rel}/{name}" if rel else name
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError as e:
            out.skipped.append(Skip(shown, f"cannot stat: {e.strerror}"))
            return
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            out.skipped.append(Skip(shown, "symbolic link (never followed)"))
        elif stat.S_ISDIR(mode):
            if st.st_dev != self.dev:
                out.skipped.append(Skip(shown, "directory on another filesystem"))
            elif depth + 1 > limits.max_depth:
                out.skipped.append(Skip(shown, f"directory nested deeper than {limits.max_depth} levels"))
            else:
                stack.append((name, path, st))  # opened by scan() when it is entered
        elif stat.S_ISREG(mode):
            is_clip = matches(path, clip_globs)
            is_side = not is_clip and matches(path, sidecar_globs)
            if not (is_clip or is_side):
                return
            if st.st_size > limits.max_file_size:
                out.skipped.append(Skip(shown, f"larger than the limit ({st.st_size} > {limits.max_file_size} bytes)"))
                return
            if st.st_size > MAX_SIZE:
                out.skipped.append(Skip(shown, f"size out of range ({st.st_size} > {MAX_SIZE} bytes)"))
                return
            if (why := timefmt.check_ns(st.st_mtime_ns)) is not None:
                # one bad timestamp skips that file, not the camera (it could not be queued or dated)
                out.skipped.append(Skip(shown, why))
                return
            found = Entry(path, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)
            (out.clips if is_clip else side).append(found)
        else:
            kind = ("FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode)
                    else "device node" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file")
            out.skipped.append(Skip(shown, f"{kind} (not a regular file; never opened)"))

    # -- per-file access

    def _parent(self, entry: Entry) -> tuple[int, str]:
        """Open the entry's parent directory step by step without following links; return (fd, name)."""
        *dirs, name = entry.parts
        fd = os.dup(self.fd)
        try:
            for d in dirs:
                nfd = os.open(d, O_DIR, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except OSError as e:
            os.close(fd)
            raise SourceChanged(f"{escape(entry.path)}: parent directory gone or replaced ({e.strerror})") from None
        return fd, name

    def open(self, entry: Entry) -> int:
        """Open ``entry`` for reading; raise SourceChanged unless it is still the same regular file."""
        pfd, name = self._parent(entry)
        try:
            try:
                fd = os.open(name, O_FILE, dir_fd=pfd)
            except OSError as e:
                raise SourceChanged(f"{escape(entry.path)}: cannot open ({e.strerror})") from None
        finally:
            os.close(pfd)
        try:
            self.check_same(entry, os.fstat(fd))
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def check_same(entry: Entry, st: os.stat_result, *, same_inode: bool = True) -> None:
        """Raise SourceChanged unless ``st`` is still the scanned regular file with its size and mtime.

        ``same_inode=False`` skips the device/inode comparison: FUSE and FAT may
        renumber inodes across mounts (the wipe runs on a fresh read-write mount).
        """
        if not stat.S_ISREG(st.st_mode):
            raise SourceChanged(f"{escape(entry.path)}: no longer a regular file")
        if same_inode and (st.st_dev, st.st_ino) != (entry.dev, entry.ino):
            raise SourceChanged(f"{escape(entry.path)}: replaced by another file")
        if st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
            raise SourceChanged(f"{escape(entry.path)}: size or mtime changed "
                                f"({entry.size}->{st.st_size} bytes, mtime {entry.mtime_ns}->{st.st_mtime_ns})")

    def read_small(self, path: str, limit: int) -> bytes | None:
        """The bytes of the regular file at ``path`` on the volume (no link followed, no FIFO opened), or
        None if it holds more than ``limit`` bytes. OSError or UsageError if it cannot be read as one."""
        pfd, name = self._parent(Entry(path, 0, 0, 0, 0))
        try:
            return read_regular(name, limit, dir_fd=pfd)
        finally:
            os.close(pfd)

    def lstat(self, path: str) -> os.stat_result:
        e = Entry(path, 0, 0, 0, 0)
        pfd, name = self._parent(e)
        try:
            return os.stat(name, dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(pfd)

    def present(self, path: str) -> bool:
        """Whether anything is at ``path`` on the volume (links not followed).

        False only when the file or one of its directories does not exist (ENOENT);
        any other failure (a directory replaced by a link or a file, EIO) raises
        OSError: absence is then not proven."""
        *dirs, name = path.split("/")
        fd = os.dup(self.fd)
        try:
            for d in dirs:
                try:
                    nfd = os.open(d, O_DIR, dir_fd=fd)
                except FileNotFoundError:
                    return False
                os.close(fd)
                fd = nfd
            try:
                os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            return True
        finally:
            os.close(fd)

    def unlink(self, entry: Entry, *, sync: bool = True) -> None:
        """Delete ``entry`` from the camera (the wipe); the caller has passed the wipe gate.

        ``sync=False`` leaves the directory fsync to the caller (:meth:`sync_parent`), so a
        wipe can tell "unlinked" from "unlink durable"."""
        pfd, name = self._parent(entry)
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            self.check_same(entry, st, same_inode=False)
            os.unlink(name, dir_fd=pfd)
            if sync:
                os.fsync(pfd)
        finally:
            os.close(pfd)

    def sync_parent(self, path: str) -> bool:
        """fsync the directory holding ``path`` (makes an unlink in it durable).

        Returns False when this filesystem cannot fsync a directory (EINVAL, ENOTSUP:
        tolerated, nothing more can be done); raises OSError for a real failure (EIO)
        and SourceChanged if the directory is gone or replaced."""
        pfd, _ = self._parent(Entry(path, 0, 0, 0, 0))
        try:
            os.fsync(pfd)
            return True
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                return False
            raise
        finally:
            os.close(pfd)

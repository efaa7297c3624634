"""ffprobe on a staged clip, as hostile input: what the container says about itself.

:meth:`Prober.probe` runs Debian's ``ffprobe`` on the **staged** copy (never
the camera: the camera is read once, by the copier) and returns the ``media``
facts of :mod:`dockd.core.mediafacts` for the signed manifest. It never
raises: a file ffprobe cannot read, a probe that hangs or grows, a missing
ffprobe are all recorded as ``{"ok": false, "reason": ...}``.

The clip is a file from a camera, so ffprobe (a large C program) reads it as
an attacker's file:

* **Unprivileged.** The daemon already runs as ``[sources] user`` with no
  capabilities (:mod:`dockd.camera.privileges`); ffprobe inherits that. When
  this process is root (a development machine, ``dockd import`` run by root
  on a data dir root owns), ffprobe runs as ``[sources] user`` if it exists,
  else ``nobody``, with no supplementary groups and no_new_privs.
  The file is handed over as an open descriptor and named
  ``/proc/self/fd/N``: the staging directory stays 0700 and the child never
  gets a path into it. Reopening through ``/proc`` checks the file's own mode,
  so for a different uid the staged copy is made readable by "other" (0604)
  for the probe and set back to 0600 after; nobody else can reach it (the
  directory is 0700, the descriptor is the child's alone), and a crash in
  between leaves a ``copying`` clip whose files recovery deletes.
* **Bounded.** A wall-clock timeout (the process group is killed),
  ``RLIMIT_CPU`` (timeout + 1 s), ``RLIMIT_AS`` (1 GiB: ffprobe maps ~215
  libraries, ~500 MiB), ``RLIMIT_FSIZE = 0`` (it writes no file),
  ``RLIMIT_NOFILE`` 64, ``RLIMIT_CORE`` 0, set by util-linux's ``prlimit``;
  then ``setpriv`` sets no_new_privs and a parent-death SIGKILL (the thread
  that started it dies: so does ffprobe) and execs ffprobe. No Python runs
  between fork and exec (a ``preexec_fn`` in a multi-threaded daemon can
  deadlock the child, and ``Popen`` with it). stdin is /dev/null; stdout read
  up to 256 KiB (more is a ``limit``), stderr kept to 2 KiB; the environment
  emptied (``LC_ALL=C`` only).
* **Only this file.** ``-protocol_whitelist file`` (no network, no ``pipe``,
  ``subfile``, ``data``, ...). The demuxer is chosen here from the file's
  first bytes (:func:`dockd.core.mediafacts.demuxer`: mov/mp4, matroska/webm,
  avi, mpegts, the containers a body-worn camera writes) and named with
  ``-f``, with ``-format_whitelist`` (:data:`FORMATS`) as a second lock:
  ffprobe's own detection never runs over the hostile bytes, and demuxers
  that follow references to other files or URLs (hls, dash, concat, image2
  patterns, tee, ...) are never used: a playlist or concat script named
  ``.MP4`` is ``unreadable`` without ffprobe being started. The mov
  demuxer's external data references stay off (``enable_drefs`` defaults to
  0; not passed explicitly because ffprobe refuses an option the chosen
  demuxer does not know). The working directory is ``/``.
* **Parsed strictly.** The output (``-show_entries`` naming only the fields
  used, so a hostile file cannot fill it with huge numbers or tags) is
  decoded with replacement of invalid UTF-8 and parsed with the I-JSON loader
  (:mod:`dockd.core.ijson`); every value is then bounded by
  :func:`dockd.core.mediafacts.facts`.

Residual risk, stated: as the daemon's own user an exploited ffprobe could
read what that user can read; it cannot write files (RLIMIT_FSIZE) and is
killed at the timeout.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import selectors
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from dockd.core import ijson, mediafacts

FORMATS = ("mov", "mp4", "m4a", "3gp", "matroska", "webm", "avi", "mpegts")
ENTRIES = ("program_version=version:format=format_name,duration,nb_streams:format_tags=creation_time"
           ":stream=codec_name,codec_type,width,height:stream_tags=creation_time")
MAX_OUT = 256 << 10
MAX_ERR = 2 << 10
MEM_LIMIT = 1 << 30
NOFILE = 64
def argv(ffprobe: str, fd: int, fmt: str) -> list[str]:
    """The ffprobe command line for the staged file open as ``fd``, read with demuxer ``fmt``."""
    return [ffprobe, "-hide_banner", "-v", "error", "-print_format", "json", "-show_entries", ENTRIES,
            "-protocol_whitelist", "file", "-format_whitelist", ",".join(FORMATS), "-f", fmt,
            f"file:/proc/self/fd/{fd}"]


_SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"  # the wrappers come from the system, never from $PATH


def limits_argv(cpu_s: int) -> list[str] | None:
    """The wrapper that puts ffprobe under its limits: ``prlimit`` (CPU seconds, address space, no file
    writes, few descriptors, no core) then ``setpriv`` (no_new_privs, SIGKILL when the daemon's thread that
    started it dies), each exec'ing the next. None if either tool is missing."""
    prlimit, setpriv = shutil.which("prlimit", path=_SYSTEM_PATH), shutil.which("setpriv", path=_SYSTEM_PATH)
    if prlimit is None or setpriv is None:
        return None
    return [prlimit, f"--cpu={cpu_s}", f"--as={MEM_LIMIT}", "--fsize=0", f"--nofile={NOFILE}", "--core=0", "--",
            setpriv, "--no-new-privs", "--pdeathsig", "KILL", "--"]


def resolve(ffprobe: str, path_env: str | None = None) -> str | None:
    """The executable for ``[offload] ffprobe``: a path as given, a bare name found on PATH; None if absent."""
    if "/" in ffprobe:
        p = Path(ffprobe)
        try:
            st = p.stat()
        except OSError:
            return None
        return str(p) if stat.S_ISREG(st.st_mode) and os.access(p, os.X_OK) else None
    return shutil.which(ffprobe, path=path_env if path_env is not None else os.environ.get("PATH", os.defpath))


def _privileged() -> bool:
    """Root that can still change identity (CAP_SETUID and CAP_SETGID effective). A daemon that is uid 0 after
    giving up every capability (no ``dockd`` user on a development machine) cannot, and is no more privileged
    than ffprobe would be as itself."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            eff = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), None)
    except (OSError, ValueError):
        return True  # cannot tell: assume root can switch (and fail closed below if it cannot)
    return eff is None or bool(eff >> 7 & 1 and eff >> 6 & 1)  # CAP_SETUID = 7, CAP_SETGID = 6


def probe_user(name: str) -> tuple[int, int] | None:
    """(uid, gid) to run ffprobe as when this process is privileged root: ``name``'s, else nobody's; None if
    not (ffprobe runs as we do, under the limits below) or if neither exists."""
    if not _privileged():
        return None
    for n in (name, "nobody"):
        try:
            pw = pwd.getpwnam(n) if n else None
        except KeyError:
            continue
        if pw is not None and pw.pw_uid != 0:
            return pw.pw_uid, pw.pw_gid
    return None


def open_staged(path: Path) -> int:
    """Open a staged file for :meth:`Prober.probe_fd`: read only, no final symlink, never blocking."""
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)


class Prober:
    """Runs ffprobe with the limits above; one instance per offloader, used from its probe threads."""

    def __init__(self, ffprobe: str = "ffprobe", timeout_s: float = 10.0, user: str = "nobody"):
        self.ffprobe, self.timeout_s, self.user = ffprobe, timeout_s, user

    def probe(self, path: Path) -> dict[str, Any]:
        """The ``media`` facts of the staged file ``path`` (see :mod:`dockd.core.mediafacts`). Never raises."""
        try:
            fd = open_staged(path)
        except OSError as e:
            return mediafacts.failure("unreadable", f"staged copy: {e.strerror}")
        try:
            return self.probe_fd(fd)
        finally:
            os.close(fd)

    def probe_fd(self, fd: int) -> dict[str, Any]:
        """:meth:`probe` of the file open as ``fd`` (the caller keeps and closes it). Never raises."""
        exe = resolve(self.ffprobe)
        if exe is None:
            return mediafacts.failure("unavailable", f"{self.ffprobe}: not found")
        as_user = probe_user(self.user)
        if as_user is None and _privileged():
            return mediafacts.failure("unavailable", "no unprivileged user to run ffprobe as")
        mode = None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return mediafacts.failure("unreadable", "staged copy is not a regular file")
            fmt = mediafacts.demuxer(os.pread(fd, mediafacts.HEAD_BYTES, 0))
            if fmt is None:
                return mediafacts.failure("unreadable", "not a container a camera writes (mov/mp4, matroska, "
                                                        "avi, mpeg-ts): ffprobe not run")
            if as_user is not None and as_user[0] != st.st_uid:
                mode = stat.S_IMODE(st.st_mode)
                os.fchmod(fd, mode | stat.S_IROTH)
            return self._run(exe, fd, fmt, as_user)
        except OSError as e:
            return mediafacts.failure("unreadable", f"ffprobe: {e.strerror or e}")
        finally:
            if mode is not None:
                try:
                    os.fchmod(fd, mode)
                except OSError:
                    pass  # the file is about to be signed for as it is; its mode is not evidence

    def _run(self, exe: str, fd: int, fmt: str, as_user: tuple[int, int] | None) -> dict[str, Any]:
        # The limits are set by util-linux's prlimit and setpriv between the fork and ffprobe, never by a
        # preexec_fn: Python code in the child of a multi-threaded daemon can deadlock on a lock another
        # thread held at the fork, and Popen() itself would then wait for ever for the child's exec.
        wrap = limits_argv(int(self.timeout_s) + 1)
        if wrap is None:
            return mediafacts.failure("unavailable", "prlimit/setpriv (util-linux) not found: ffprobe is never "
                                                     "run without its limits")
        kw: dict[str, Any] = {}
        if as_user is not None:  # done by subprocess in C, before the exec
            kw = {"user": as_user[0], "group": as_user[1], "extra_groups": []}
        try:
            p = subprocess.Popen([*wrap, *argv(exe, fd, fmt)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, pass_fds=(fd,), cwd="/", env={"LC_ALL": "C"},
                                 start_new_session=True, **kw)
        except (OSError, subprocess.SubprocessError) as e:  # not executable (for that user), exec refused
            return mediafacts.failure("unavailable", f"{exe}: {getattr(e, 'strerror', None) or e}")
        try:
            out, err, why = self._collect(p)
        finally:
            if p.poll() is None:
                _kill(p)
            p.wait()
            for s in (p.stdout, p.stderr):
                if s is not None:
                    s.close()
        return _verdict(p.returncode, out, err, why, self.timeout_s)

    def _collect(self, p: subprocess.Popen) -> tuple[bytes, bytes, str | None]:
        """Read stdout (bounded) and stderr (kept short) until both close or the deadline; kill on excess."""
        assert p.stdout is not None and p.stderr is not None
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + self.timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(p.stdout, selectors.EVENT_READ, out)
            sel.register(p.stderr, selectors.EVENT_READ, err)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    _kill(p)
                    return bytes(out), bytes(err), "timeout"
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                    elif key.data is out:
                        if len(out) + len(chunk) > MAX_OUT:
                            _kill(p)
                            return bytes(out), bytes(err), "limit"
                        out += chunk
                    else:
                        err += chunk[:max(0, MAX_ERR - len(err))]
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill(p)
            return bytes(out), bytes(err), "timeout"
        return bytes(out), bytes(err), None


def _kill(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise


_FD_NAME = re.compile(r"(?:file:)?/proc/self/fd/\d+:?\s*|\s@ 0x[0-9a-f]+")  # our own names, not facts
_LIMIT_SIGNALS = {signal.SIGXCPU, signal.SIGXFSZ, signal.SIGKILL}


def _verdict(rc: int | None, out: bytes, err: bytes, why: str | None, timeout_s: float) -> dict[str, Any]:
    """The ``media`` facts from how ffprobe ended and what it printed."""
    lines = [_FD_NAME.sub("", x).strip() for x in err.decode("utf-8", "replace").splitlines() if x.strip()]
    said = "; ".join(lines)
    if why == "timeout":
        return mediafacts.failure("timeout", f"ffprobe killed after {timeout_s:g} s")
    if why == "limit":
        return mediafacts.failure("limit", f"ffprobe output larger than {MAX_OUT} bytes")
    if rc is not None and rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:
            sig = f"signal {-rc}"
        reason = "limit" if -rc in _LIMIT_SIGNALS else "unreadable"
        return mediafacts.failure(reason, f"ffprobe killed by {sig}")
    if rc != 0:
        low = said.lower()
        if "cannot allocate memory" in low or "error while loading shared libraries" in low:
            return mediafacts.failure("limit", said or f"ffprobe exit {rc}")
        return mediafacts.failure("unreadable", said or f"ffprobe exit {rc}")
    try:
        doc = ijson.loads(out.decode("utf-8", "replace"), max_bytes=MAX_OUT * 2)
    except ijson.Invalid as e:
        return mediafacts.failure("unreadable", f"ffprobe output is not strict JSON: {e}")
    return mediafacts.facts(doc)

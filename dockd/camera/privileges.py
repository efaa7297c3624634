"""Giving up identity and capabilities: the daemon keeps none, the mount helper keeps CAP_SYS_ADMIN.

The helper stays uid 0. The daemon switches to an unprivileged user (``[sources]
user``, "dockd") when it exists: uid 0 without capabilities would still own
every root-owned file and device node (raw block devices of the cameras and
of the station's own disk included), an unprivileged uid owns only its data
dir and the camera volumes, which the helper mounts with that uid as the
owner of every file. Where no such user exists (a development machine) the
daemon stays uid 0 without capabilities, as before, and says so.

:func:`limit_to` sets ``PR_SET_NO_NEW_PRIVS`` (an exec'd child, such as a
state hook, can never gain capabilities back: for uid 0 execve would
otherwise grant the whole bounding set), drops the rest of the bounding set
when it may (CAP_SETPCAP), clears the ambient set and then capset()s the
effective/permitted sets down to ``keep`` and the inheritable set to nothing.
Capabilities belong to threads: it must run before the process starts any,
and it checks every thread afterwards. With ``user=(uid, gid)`` it switches
real, effective and saved uid and gid and clears the supplementary groups
after the bounding set is dropped and before the capset.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pwd
import stat
from pathlib import Path

from dockd.core.errors import DockdError

CAP_SETPCAP = 8
CAP_SYS_ADMIN = 21
PR_CAPBSET_READ, PR_CAPBSET_DROP = 23, 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class PrivilegeError(DockdError):
    """could not drop privileges: {} (to run without privilege separation set [sources] drop_privileges = false)"""


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        _libc.capset.argtypes = [ctypes.POINTER(_Header), ctypes.POINTER(_Data)]
    return _libc


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    r = _c().prctl(option, arg2, arg3, 0, 0)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def status(pid: int | str = "self") -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of ``pid`` (its main thread) from /proc, as integers."""
    return _parse(Path(f"/proc/{pid}/status").read_text())


def _parse(text: str) -> dict[str, int]:
    return {k: int(v.strip(), 16) for k, _, v in (line.partition(":") for line in text.splitlines())
            if k.startswith("Cap")}


def has(cap: int) -> bool:
    return bool(status()["CapEff"] >> cap & 1)


def last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


def target_user(name: str) -> tuple[int, int] | None:
    """(uid, gid) the daemon should switch to: ``name``'s, or None (no such user, or we are not root)."""
    if os.geteuid() != 0 or not name:
        return None
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    return (pw.pw_uid, pw.pw_gid) if pw.pw_uid != 0 else None


def check_owned(data_dir: Path, user: tuple[int, int], name: str) -> None:
    """PrivilegeError unless ``data_dir`` is a directory owned by ``user`` (checked before switching to it)."""
    try:
        st = os.lstat(data_dir)
    except OSError as e:
        raise PrivilegeError(f"data dir {data_dir}: {e.strerror} (scripts/install creates it, owned by {name})") \
            from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != user[0]:
        raise PrivilegeError(f"data dir {data_dir} is owned by uid {st.st_uid}, not by {name} (uid {user[0]}): "
                             f"chown -R {name}: {data_dir} (scripts/install does)")


def carry_credentials() -> None:
    """Keep root's storage credentials file readable after the uid switch.

    systemd's LoadCredential= files (``$CREDENTIALS_DIRECTORY/aws-credentials``)
    belong to the unit's User= (root, who starts the mount helper), mode 0400;
    an operator's are in root's home. Before switching, the file is copied
    into a memfd of this process only, and ``AWS_SHARED_CREDENTIALS_FILE``
    points at it (a process may always open its own ``/proc/self/fd``); the
    secret never touches a disk or the environment.
    """
    if os.environ.get("AWS_SHARED_CREDENTIALS_FILE"):
        return
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    src = Path(cred_dir) / "aws-credentials" if cred_dir else Path("~/.aws/credentials").expanduser()
    try:
        data = src.read_bytes()
    except FileNotFoundError:
        return
    except OSError as e:
        raise PrivilegeError(f"{src}: {e.strerror}") from None
    fd = os.memfd_create("aws-credentials", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = f"/proc/self/fd/{fd}"


def become_data_dir_owner(data_dir: Path, name: str) -> bool:
    """For a command run by root on a station: act as ``name`` if it owns ``data_dir`` (True if switched).

    Whatever the command creates there (queue journal files, staged clips of
    ``dockd import``) then stays the daemon user's, who could not use root's
    files. A data dir that user does not own (a development machine, or before
    scripts/install) is left as it is.
    """
    user = target_user(name)
    if user is None:
        return False
    try:
        if os.lstat(data_dir).st_uid != user[0]:
            return False
    except OSError:
        return False
    carry_credentials()
    try:
        os.setgroups([])
        os.setresgid(user[1], user[1], user[1])
        os.setresuid(user[0], user[0], user[0])
    except OSError as e:
        raise PrivilegeError(f"switching to {name}: {e.strerror}") from None
    return True


def limit_to(keep: frozenset[int] = frozenset(), *, user: tuple[int, int] | None = None) -> dict[str, int]:
    """Keep only ``keep`` (effective + permitted) in every thread of this process; returns /proc's view.

    ``user``: become that (uid, gid) for good on the way (real, effective,
    saved; no supplementary groups); ``keep`` must then be empty.
    """
    want = sum(1 << c for c in keep)
    try:
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        if has(CAP_SETPCAP):
            for cap in range(last_cap() + 1):
                if cap not in keep and _prctl(PR_CAPBSET_READ, cap) == 1:
                    _prctl(PR_CAPBSET_DROP, cap)
        try:
            _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        except OSError as e:
            if e.errno != errno.EINVAL:  # kernels before 4.3 have no ambient set
                raise
        if user is not None:
            uid, gid = user
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)  # all three leave 0: the kernel clears permitted and effective
            if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
                raise OSError(errno.EPERM, f"still {os.getresuid()}/{os.getresgid()} after switching to {uid}:{gid}")
        mask = want & status()["CapPrm"]
        hdr = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_Data * 2)(_Data(mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, 0), _Data(mask >> 32, mask >> 32, 0))
        if _c().capset(ctypes.byref(hdr), data) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"capset: {os.strerror(err)}")
    except OSError as e:
        raise PrivilegeError(e.strerror or str(e)) from None
    for task in Path("/proc/self/task").iterdir():
        caps = _parse((task / "status").read_text())
        if caps["CapEff"] & ~want or caps["CapPrm"] & ~want:
            raise PrivilegeError(f"thread {task.name} still holds capabilities {caps['CapEff']:016x}")
    return status()

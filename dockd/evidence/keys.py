"""The station's Ed25519 signing key.

Generated on first use as ``data_dir/keys/station.ed25519`` (PKCS#8 PEM, mode
0600, written atomically). The key id is ``ed25519:`` plus the first 16 hex
digits of the SHA-256 of the public key's SubjectPublicKeyInfo DER, so anyone
holding the PEM can recompute it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dockd.core.errors import KeyError_
from dockd.evidence.durable import write_atomic
from dockd.evidence.localfile import read_regular

KEY_NAME = "station.ed25519"


def key_path(data_dir: Path) -> Path:
    return Path(data_dir) / "keys" / KEY_NAME


def key_id_of(pub: Ed25519PublicKey) -> str:
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "ed25519:" + hashlib.sha256(der).hexdigest()[:16]


def public_pem(pub: Ed25519PublicKey) -> str:
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_pem(data: bytes) -> Ed25519PublicKey:
    try:
        k = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise KeyError_(f"not a PEM public key: {e}") from None
    if not isinstance(k, Ed25519PublicKey):
        raise KeyError_("public key is not Ed25519")
    return k


@dataclass(frozen=True)
class StationKey:
    private: Ed25519PrivateKey
    path: Path

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public)

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.private.sign(data)).decode("ascii")


def verify(pub: Ed25519PublicKey, data: bytes, sig_b64: str) -> bool:
    try:
        pub.verify(base64.b64decode(sig_b64, validate=True), data)
        return True
    except (InvalidSignature, ValueError, TypeError):  # TypeError: a non-text signature from hostile JSON
        return False


def load_private(p: Path) -> Ed25519PrivateKey:
    """A private key file: regular (no symlink, no FIFO), not readable by group or others, Ed25519, at most
    16 KiB; KeyError_ (or UsageError for a name that is no regular file) otherwise."""
    p = Path(p)
    try:
        st = os.stat(p, follow_symlinks=False)
    except FileNotFoundError:
        raise KeyError_(f"{p} does not exist") from None
    except OSError as e:
        raise KeyError_(f"{p}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyError_(f"{p} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyError_(f"{p} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600")
    pem = read_regular(p, 16 << 10)
    if pem is None:
        raise KeyError_(f"{p} is bigger than 16 KiB, not a key")
    try:
        k = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise KeyError_(f"{p} cannot be loaded: {e}") from None
    if not isinstance(k, Ed25519PrivateKey):
        raise KeyError_(f"{p} is not an Ed25519 key")
    return k


def load(data_dir: Path) -> StationKey:
    """Load the station key; raise KeyError_ if missing, unreadable or not private to its owner."""
    p = key_path(data_dir)
    if not (p.exists() or p.is_symlink()):
        raise KeyError_(f"{p} does not exist (it is created by the first `dockd run` or `dockd import`)")
    return StationKey(load_private(p), p)


def load_or_create(data_dir: Path) -> tuple[StationKey, bool]:
    """Return the station key, generating it on first run; ``(key, created)``. Never overwrites."""
    p = key_path(data_dir)
    if p.exists() or p.is_symlink():
        return load(data_dir), False
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(p.parent, 0o700)
    k = Ed25519PrivateKey.generate()
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_atomic(p, pem, mode=0o600)
    write_atomic(p.with_suffix(".pub.pem"), public_pem(k.public_key()).encode(), mode=0o644)
    return StationKey(k, p), True

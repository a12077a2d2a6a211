"""The VAPID key pair (RFC 8292): the service publishes its public key, the worker signs with it.

The private key is a P-256 key in a PEM file (FLASHWIRE_VAPID_PRIVATE_KEY_FILE); `flashwire dev`
makes one on first start and keeps it with the dev data. Browsers take the public key as
`applicationServerKey` in PushManager.subscribe(): the uncompressed point (65 bytes), base64url
without padding (RFC 8292 section 3.2).
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def generate_private_key_pem() -> str:
    """A new P-256 private key as PKCS#8 PEM text."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def load_private_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key of a PEM text; ValueError if it is not one."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("a VAPID key must be a P-256 (secp256r1) private key")
    return key


def public_key_b64url(pem: str) -> str:
    """The applicationServerKey of a private key: base64url of the uncompressed public point."""
    point = (
        load_private_key(pem)
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return base64.urlsafe_b64encode(point).decode().rstrip("=")


def ensure_key_file(path: Path) -> Path:
    """Create a private key file (mode 0600) at `path` unless one is there; return the path."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(generate_private_key_pem())
    return path

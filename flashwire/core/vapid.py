"""The VAPID key pair (RFC 8292): the service publishes its public key, the worker signs with it.

The private key is a P-256 key in a PEM file (FLASHWIRE_VAPID_PRIVATE_KEY_FILE); `flashwire dev`
makes one on first start and keeps it with the dev data. Browsers take the public key as
`applicationServerKey` in PushManager.subscribe(): the uncompressed point (65 bytes), base64url
without padding (RFC 8292 section 3.2).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def generate_vapid_key_pem() -> str:
    """A new P-256 private key as PKCS#8 PEM text."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def load_vapid_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key of a PEM text; ValueError if it is not one."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("a VAPID key must be a P-256 (secp256r1) private key")
    return key


def vapid_public_key(pem: str) -> str:
    """The applicationServerKey of a private key: base64url of the uncompressed public point."""
    point = (
        load_vapid_key(pem)
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return base64.urlsafe_b64encode(point).decode().rstrip("=")


def ensure_key_file(path: Path) -> Path:
    """Create a private key file (mode 0600) at `path` unless one is there; return the path."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(generate_vapid_key_pem())
    return path


# Names that are never a real contact (RFC 2606, RFC 6761): a push service operator cannot reach
# anyone there, and Apple refuses them.
_RESERVED_SUFFIXES = (".invalid", ".test", ".localhost", ".local", ".example", ".example.com",
                      ".example.net", ".example.org")  # fmt: skip
_RESERVED_NAMES = {"localhost", "example.com", "example.net", "example.org"}
_MAILBOX = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)$")


def _reserved_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in _RESERVED_NAMES or any(host.endswith(suffix) for suffix in _RESERVED_SUFFIXES):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "." not in host
    return True


def validate_subject(subject: str) -> str:
    """`subject` if it is a VAPID `sub` of the right form (RFC 8292 §2.1): `mailto:<address>` or an
    `https:` URL with a host. ValueError naming the fault otherwise."""
    if subject.startswith("mailto:"):
        if _MAILBOX.match(subject.removeprefix("mailto:")) is None:
            raise ValueError(f"VAPID subject must be mailto:<address>, got {subject!r}")
    elif subject.startswith("https://"):
        if not urlsplit(subject).hostname:
            raise ValueError(f"VAPID subject https: URL has no host: {subject!r}")
    else:
        raise ValueError(f"VAPID subject must be a mailto: or https: URI, got {subject!r}")
    return subject


def subject_warning(subject: str) -> str | None:
    """Why Apple's push service will refuse this subject, or None: a reserved or local name, an IP
    address (../shared/PITFALLS.md 1.4). Chrome's and Firefox's services do not check, so this is a
    warning (`flashwire dev` runs with a placeholder), not a refusal."""
    if subject.startswith("mailto:"):
        match = _MAILBOX.match(subject.removeprefix("mailto:"))
        host = match.group(1) if match else ""
    else:
        host = urlsplit(subject).hostname or ""
    if _reserved_host(host):
        return (
            f"VAPID subject {subject!r} is not a reachable public contact: Apple's push service answers"
            " 403 BadJwtToken to it (Safari and iOS web apps get no pushes); set FLASHWIRE_VAPID_SUBJECT"
        )
    return None

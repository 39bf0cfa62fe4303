"""Ed25519 keys and signatures for administration commands (the ``cryptography`` package).

The signature covers the envelope's canonical bytes: the JSON of every field except ``signature``, with
sorted keys, no spaces, UTF-8 (``ensure_ascii=False``). Signer and device both re-serialise the parsed
object, so whitespace or key order on the wire never matters, and any change to any field breaks it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.errors import ConfigError, EdgeError

SIGNATURE_FIELD = "signature"


class SignatureError(EdgeError):
    """A signature is missing, malformed, or does not verify with any admin key."""


def canonical_bytes(envelope: Mapping[str, Any]) -> bytes:
    unsigned = {key: value for key, value in envelope.items() if key != SIGNATURE_FIELD}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: Ed25519PublicKey) -> str:
    """What goes into ``mqtt.commands.admin_keys``: base64 of the 32 raw bytes."""
    return base64.b64encode(raw_public_bytes(key)).decode("ascii")


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key (first 16 hex digits of its sha256), so a device can pick the key."""
    return hashlib.sha256(raw_public_bytes(key)).hexdigest()[:16]


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """PKCS#8 PEM, created with mode 0600; refuses to overwrite an existing key."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # includes a parent that is a file (FileExistsError)
        raise EdgeError(f"cannot write the private key {path}: {path.parent} is not a folder that can be "
                        f"made ({exc.strerror or exc})") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise EdgeError(f"{path} already exists: refusing to overwrite a private key") from None
    except OSError as exc:
        raise EdgeError(f"cannot write the private key {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise EdgeError(f"cannot read private key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise EdgeError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EdgeError(f"{path} is not an Ed25519 key")
    return key


# Edwards25519 (RFC 8032 section 5.1): only used to refuse weak public keys, never to sign or verify.
_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P
_L = 2**252 + 27742317777372353535851937790883648493  # the prime order of the base point
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _point_add(a: tuple, b: tuple) -> tuple:
    """Sum of two points in extended coordinates (X, Y, Z, T)."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    p, q = (y1 - x1) * (y2 - x2) % _P, (y1 + x1) * (y2 + x2) % _P
    r, s = 2 * t1 * t2 * _D % _P, 2 * z1 * z2 % _P
    e, f, g, h = q - p, s - r, s + r, q + p
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _scalar_mult(n: int, point: tuple) -> tuple:
    result = (0, 1, 1, 0)
    while n:
        if n & 1:
            result = _point_add(result, point)
        point, n = _point_add(point, point), n >> 1
    return result


def is_weak_public_key(raw: bytes) -> bool:
    """True for 32 bytes that are not a point of Ed25519's prime-order group: not a point at all, a
    non-canonical encoding, or a point of small or mixed order. A key made by Ed25519 key generation is
    never weak. A small-order key (all zero bytes, the identity ``AQAA…``) lets a forged signature made
    without any private key verify, so such a key must never be trusted."""
    if len(raw) != 32:
        return True
    y, sign = int.from_bytes(raw, "little") & ((1 << 255) - 1), raw[31] >> 7
    if y >= _P:
        return True
    x2 = (y * y - 1) * pow(_D * y * y + 1, -1, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P or (x == 0 and sign):
        return True
    if x & 1 != sign:
        x = _P - x
    point = (x, y, 1, x * y % _P)
    small = _scalar_mult(8, point)
    if small[0] == 0 and small[1] == small[2]:  # [8]P is the identity: P has order 1, 2, 4 or 8
        return True
    full = _scalar_mult(_L, point)
    return not (full[0] == 0 and full[1] == full[2])  # [L]P must be the identity


def _checked(key: Ed25519PublicKey, shown: str) -> Ed25519PublicKey:
    if is_weak_public_key(raw_public_bytes(key)):
        raise ConfigError(f"mqtt.commands.admin_keys: {shown} is a weak Ed25519 key (a small-order or "
                          "non-canonical point) that would accept forged signatures: use a key from "
                          "`edge admin keygen`")
    return key


def load_public_key(spec: str) -> Ed25519PublicKey:
    """An admin key from config: base64 of the 32 raw bytes, or the path of a PEM public key file. Keys
    that would accept forged signatures (``is_weak_public_key``) are refused."""
    text = spec.strip()
    if len(text) == 44 and text.endswith("="):  # base64 of 32 bytes; may contain '/', so test this first
        try:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            pass
        else:
            return _checked(key, f"{text[:12]}…")
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"mqtt.commands.admin_keys: {text[:12]}… is neither the base64 of a 32-byte Ed25519 "
                          "public key nor a readable PEM file")
    return _public_key_from_pem(path)


def _public_key_from_pem(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"mqtt.commands.admin_keys: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"mqtt.commands.admin_keys: {path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"mqtt.commands.admin_keys: {path} is not an Ed25519 public key")
    return _checked(key, str(path))


def load_admin_keys(specs: list[str]) -> dict[str, Ed25519PublicKey]:
    """The configured admin keys by key id."""
    keys = [load_public_key(spec) for spec in specs]
    return {key_id(key): key for key in keys}


def sign_envelope(envelope: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of ``envelope`` with ``key_id`` and ``signature`` (base64) added."""
    signed = {key: value for key, value in envelope.items() if key != SIGNATURE_FIELD}
    signed["key_id"] = key_id(private_key.public_key())
    signed[SIGNATURE_FIELD] = base64.b64encode(private_key.sign(canonical_bytes(signed))).decode("ascii")
    return signed


def verify_envelope(envelope: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> str:
    """The id of the admin key that signed ``envelope``; ``SignatureError`` saying why not otherwise."""
    signature = envelope.get(SIGNATURE_FIELD)
    if signature is None:
        raise SignatureError("unsigned command")
    if not isinstance(signature, str):
        raise SignatureError("signature must be a base64 string")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature is not valid base64") from None
    if len(raw) != 64:
        raise SignatureError("signature must be 64 bytes (Ed25519)")
    if not keys:
        raise SignatureError("this device has no admin keys configured (mqtt.commands.admin_keys)")
    wanted = envelope.get("key_id")
    if wanted is not None and wanted not in keys:
        raise SignatureError("signed with a key this device does not trust")
    candidates = {wanted: keys[wanted]} if wanted is not None else keys
    try:
        message = canonical_bytes(envelope)
    except UnicodeEncodeError:  # JSON may carry lone surrogates ("\ud800"), which no signer could have encoded
        raise SignatureError("malformed: the command contains text that is not valid Unicode") from None
    for kid, key in candidates.items():
        try:
            key.verify(raw, message)
            return kid
        except InvalidSignature:
            continue
    raise SignatureError("bad signature")

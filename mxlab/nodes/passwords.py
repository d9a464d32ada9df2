"""Password hashes with the stdlib's scrypt, so nodes carry no plaintext passwords.

The hashes are written in libxcrypt's ``$7$`` form (scrypt, as crypt(3) on Debian
reads it), so real software checks the same hashes through crypt(3): Dovecot's
``{CRYPT}`` scheme, for a dovecot node or Postfix's SASL.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

_N_LOG2, _R, _P = 14, 8, 1
_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SALT_CHARS = 16  # 96 bits


def _encode_uint(value: int, bits: int) -> str:
    """libxcrypt's little-endian base-64 of a ``bits``-wide number."""
    out = ""
    for _ in range(0, bits, 6):
        out += _ITOA64[value & 0x3F]
        value >>= 6
    return out


def _encode_bytes(data: bytes) -> str:
    """Each 3 bytes (fewer at the end) as a little-endian number of 24 (or 8*n) bits."""
    return "".join(
        _encode_uint(int.from_bytes(data[i : i + 3], "little"), 8 * len(data[i : i + 3]))
        for i in range(0, len(data), 3)
    )


def _decode_uint(text: str) -> int:
    return sum(_ITOA64.index(c) << (6 * i) for i, c in enumerate(text))


def _crypt(password: str, setting: str) -> str:
    """``$7$`` + N (log2) + r + p + salt, then ``$`` + the 32-byte scrypt key."""
    n_log2, r, p = (
        _ITOA64.index(setting[3]),
        _decode_uint(setting[4:9]),
        _decode_uint(setting[9:14]),
    )
    salt = setting[14:]
    key = hashlib.scrypt(
        password.encode(), salt=salt.encode(), n=1 << n_log2, r=r, p=p, maxmem=1 << 28, dklen=32
    )
    return f"{setting}${_encode_bytes(key)}"


def hash_password(password: str, *, salt: str | None = None) -> str:
    """Return ``$7$...`` (libxcrypt scrypt: N=2^14, r=8, p=1, 96-bit salt)."""
    salt = (
        salt if salt is not None else "".join(secrets.choice(_ITOA64) for _ in range(_SALT_CHARS))
    )
    setting = f"$7${_ITOA64[_N_LOG2]}{_encode_uint(_R, 30)}{_encode_uint(_P, 30)}{salt}"
    return _crypt(password, setting)


@functools.lru_cache(maxsize=1024)
def verify_password(stored: str, password: str) -> bool:
    """Check a password; cached because mail clients log in again and again."""
    setting, sep, _ = stored.rpartition("$")
    if not stored.startswith("$7$") or not sep or len(setting) < 15:
        return False
    try:
        got = _crypt(password, setting)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got.encode(), stored.encode())

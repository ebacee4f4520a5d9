"""API key format: `rb_<prefix>_<secret>`. Only the prefix and the SHA-256 of the whole key are stored.

A fast hash is right here (as for GitHub tokens): the secret has 240 bits of entropy, so there is nothing to
brute-force, and verification stays on the hot path's budget.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX_BYTES = 4  # 8 hex characters: public, shown in the admin, used to find the row
SECRET_BYTES = 30


@dataclass(frozen=True)
class NewKey:
    prefix: str
    plaintext: str
    key_hash: str


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate() -> NewKey:
    prefix = secrets.token_hex(PREFIX_BYTES)
    plaintext = f"rb_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return NewKey(prefix=prefix, plaintext=plaintext, key_hash=hash_key(plaintext))


def parse_prefix(plaintext: str) -> str | None:
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != "rb" or len(parts[1]) != PREFIX_BYTES * 2 or not parts[2]:
        return None
    return parts[1]


def matches(plaintext: str, key_hash: str) -> bool:
    return hmac.compare_digest(hash_key(plaintext), key_hash)

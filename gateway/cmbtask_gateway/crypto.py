"""Encryption at rest for users' provider keys, keyed by the gateway's secret.

One secret already protects the gateway (it signs runner tokens), so the
encryption key is derived from it rather than configured beside it: HKDF-SHA256
with a purpose label gives a key that is useless for signing tokens and vice
versa. Each value is sealed with AES-256-GCM under a fresh 96-bit nonce, with
the owner and provider as associated data, so a ciphertext copied into another
user's row (or another provider's) fails to open instead of leaking.

Changing the gateway's secret makes stored keys unreadable: users set them again.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["KeyBox", "SealedValueError"]

_INFO = b"cmbtask provider keys v1"
_NONCE_BYTES = 12


class SealedValueError(Exception):
    """A stored value cannot be opened (another secret, or tampered with)."""


class KeyBox:
    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the gateway secret must not be empty")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
        self._aead = AESGCM(key)

    @staticmethod
    def _context(user: str, provider: str) -> bytes:
        return b"\0".join((user.encode(), provider.encode()))

    def seal(self, user: str, provider: str, value: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, value.encode(), self._context(user, provider))

    def open(self, user: str, provider: str, sealed: bytes) -> str:
        nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, body, self._context(user, provider)).decode()
        except (InvalidTag, ValueError):
            raise SealedValueError(f"the stored {provider} key cannot be decrypted; set it again") from None

    def __repr__(self) -> str:
        return "KeyBox(<secret>)"

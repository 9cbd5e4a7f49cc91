"""Secrets at rest: AES-256-GCM under one master key, from `signing.master_key` or
else a key file `<data_dir>/master.key` made (mode 0600) on first use.

A blob is `version byte | 12-byte random nonce | ciphertext + tag`; the caller's
AAD (the owning row's id) binds it to its row, so a blob copied into another row
does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dispatcher.config import Config
from dispatcher.errors import ConfigError

VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_FILE = "master.key"
MASTER_KEY_FIELD = "signing.master_key"


class SecretDecryptionError(ConfigError):
    """A stored secret does not decrypt: wrong master key, or the blob was altered
    or moved to another row."""

    code = "secret_decryption_error"


class SecretBox:
    """Encrypts and decrypts secret text with AES-256-GCM."""

    def __init__(self, key: bytes, source: str = "master key") -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(
                f"{MASTER_KEY_FIELD}: must be {KEY_BYTES} bytes, got {len(key)}",
                field=MASTER_KEY_FIELD,
            )
        self._aead = AESGCM(key)
        self._source = source
        # Keys for other purposes (e.g. signing portal links) come from the same master
        # key, so every process of a deployment agrees on them with nothing more to set.
        self._derivation_root = hmac.new(key, b"dispatcher key derivation", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"SecretBox(source={self._source!r})"

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for `purpose`, stable for a master key, independent across
        purposes."""
        return hmac.new(self._derivation_root, purpose.encode(), hashlib.sha256).digest()

    def encrypt(self, plaintext: str, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return bytes([VERSION]) + nonce + self._aead.encrypt(nonce, plaintext.encode(), aad)

    def decrypt(self, blob: bytes, aad: bytes) -> str:
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[0] != VERSION:
            raise SecretDecryptionError(
                "stored secret is not a recognised encrypted blob", field=MASTER_KEY_FIELD
            )
        nonce, ciphertext = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            plaintext = self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag as exc:
            raise SecretDecryptionError(
                f"cannot decrypt a stored secret with the {self._source}: it is not the key "
                "the secret was encrypted with (check signing.master_key / "
                "DISPATCHER_MASTER_KEY and <data_dir>/master.key), or the stored value was altered",
                field=MASTER_KEY_FIELD,
            ) from exc
        return plaintext.decode()


def generate_master_key() -> str:
    """A new master key as base64 text, the form `signing.master_key` takes."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        # Never echo the value: it is (meant to be) a secret.
        raise ConfigError(
            f"{where}: must be base64 of {KEY_BYTES} random bytes "
            "(make one with: python -c \"import os, base64; "
            "print(base64.b64encode(os.urandom(32)).decode())\")",
            field=MASTER_KEY_FIELD,
        )
    return key


def _create_key_file(path: Path) -> None:
    """Write a new key to `path` atomically; if another process won the race its
    file is kept. Readers never see a partly written file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".master.key.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(generate_master_key() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def load_key_file(path: Path) -> bytes:
    """The master key in `path`, creating the file on first use."""
    if not path.exists():
        _create_key_file(path)
    return _decode_key(path.read_text(), f"{MASTER_KEY_FIELD} (key file {path})")


def load_secret_box(config: Config) -> SecretBox:
    """The SecretBox for this deployment: `signing.master_key` when set, else the key
    file `<database.data_dir>/master.key` (created on first use)."""
    if config.signing.master_key:
        return SecretBox(_decode_key(config.signing.master_key, MASTER_KEY_FIELD),
                         source=MASTER_KEY_FIELD)
    path = Path(config.database.data_dir) / KEY_FILE
    return SecretBox(load_key_file(path), source=f"key file {path}")

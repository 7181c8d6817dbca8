"""Encryption at rest: envelope encryption of robustlab's artifacts.

Each file gets its own random 256-bit *data key*, which encrypts the file with AES-256-GCM
(random 96-bit nonce). The data key is *wrapped* (encrypted) by a key-encryption key (KEK)
held by a :class:`KeyProvider` and stored, wrapped, in the file's header. Rotating the KEK
(:func:`rewrap`) re-wraps the data key and leaves the encrypted body as it is.

File format, version 1 (all integers big-endian)::

    offset      size  field
    0           8     magic  89 52 4C 45 0D 0A 1A 0A  ("\\x89RLE\\r\\n\\x1a\\n")
    8           1     format version (1)
    9           2     k: length of the key id
    11          k     key id (UTF-8): which KEK wrapped the data key
    11+k        2     w: length of the wrapped data key
    13+k        w     wrapped data key (the provider's format; the built-in providers:
                      nonce(12) | AES-256-GCM(KEK, data key) | tag(16), 60 bytes)
    13+k+w      12    nonce of the body
    25+k+w      n     body: AES-256-GCM(data key, plaintext), n = plaintext length
    25+k+w+n    16    tag of the body

The body's tag authenticates the ciphertext and, as associated data, the magic and the
version. The key id and the wrapped key are authenticated by the wrap: the built-in
providers encrypt the data key with AES-GCM under the KEK with the magic, the version and
the key id as associated data (so a changed key id or wrapped key fails to unwrap, and a
wrong data key fails the body's tag). They are not in the body's associated data because
rotation replaces them without touching the body. Flipping any byte, truncating or extending
the file is a :class:`~robustlab.errors.DecryptionError` naming the file.

Keys come from, in this order: an explicit ``key=`` argument (a :class:`KeyProvider` or the
path of a key file), a provider installed with :func:`set_key_provider`, the environment
variable ``ROBUSTLAB_KEY`` (the key itself, base64) or ``ROBUSTLAB_KEY_FILE`` (the path of a
key file written by ``robustlab keygen``). With none of these, robustlab writes plaintext;
reading an encrypted file then raises :class:`~robustlab.errors.KeyRequiredError`.
Encrypted files are recognised by their magic, so plaintext files stay readable when a key
is configured.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import secrets
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

from robustlab import _io
from robustlab.errors import DecryptionError, InputTypeError, KeyRequiredError, ValidationError

__all__ = ["MAGIC", "VERSION", "KEY_ENV", "KEY_FILE_ENV", "KeyProvider", "LocalKey",
           "KeyFileProvider", "EnvKeyProvider", "Key", "key_from_env", "resolve_key",
           "set_key_provider", "looks_encrypted", "header_info", "encrypt", "decrypt",
           "rewrap", "decrypt_in_place", "read_bytes", "read_text", "read_buffer",
           "read_stored", "MemoryFile", "write_bytes", "write_text", "write_json",
           "encrypt_file", "decrypt_file", "rewrap_file", "generate_key", "write_key_file"]

MAGIC = b"\x89RLE\r\n\x1a\n"
VERSION = 1
KEY_ENV = "ROBUSTLAB_KEY"
KEY_FILE_ENV = "ROBUSTLAB_KEY_FILE"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_PREFIX = MAGIC + bytes([VERSION])  # the body's associated data
_CHUNK = 1 << 24  # AES-GCM works through large files in 16 MiB pieces (no 2 GiB limit)
_CONFIGURE = (f"set {KEY_FILE_ENV} to a key file (make one with `robustlab keygen KEYFILE`) "
              f"or {KEY_ENV} to a key, or pass key=")


@runtime_checkable
class KeyProvider(Protocol):
    """Holds a key-encryption key (KEK) and wraps/unwraps data keys with it.

    Implement these three members to keep KEKs in a cloud KMS or Vault (e.g. ``wrap`` calls
    AWS KMS ``Encrypt`` / Vault transit ``encrypt``, ``unwrap`` the matching decrypt; store
    what they return as bytes). ``wrap`` must authenticate what it returns (a changed byte
    must make ``unwrap`` fail), and ``unwrap`` raises when ``key_id`` is not a key it holds.
    Any exception from ``unwrap`` becomes a :class:`~robustlab.errors.DecryptionError`
    naming the file.
    """

    @property
    def key_id(self) -> str:
        """A short, non-secret name of the KEK, stored in each file's header (1-65535 bytes
        of UTF-8)."""
        ...

    def wrap(self, data_key: bytes) -> bytes:
        """Encrypt a 32-byte data key under the KEK (at most 65535 bytes)."""
        ...

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        """Decrypt ``wrapped`` (made by ``wrap`` of the KEK named ``key_id``): the data key."""
        ...


Key: TypeAlias = "KeyProvider | str | os.PathLike[str]"


def _shown(key_id: str) -> str:
    """A key id for a message: quoted and escaped (it comes from the file), at most 80."""
    return repr(key_id if len(key_id) <= 80 else key_id[:77] + "...")


def _wrap_aad(key_id: str) -> bytes:
    return b"robustlab data key\x00" + _PREFIX + key_id.encode("utf-8")


class LocalKey:
    """A KEK held in this process (32 bytes). Its key id is derived from the key
    (``local:`` and 16 hex digits of a SHA-256), so the same key read from a file or from
    ``ROBUSTLAB_KEY`` has the same id, and a wrong key is named as such. The key never
    appears in ``repr`` or in error messages."""

    def __init__(self, kek: bytes, source: str = "a key in memory") -> None:
        if not isinstance(kek, bytes) or len(kek) != KEY_BYTES:
            raise ValidationError(f"expected a key of {KEY_BYTES} bytes from {source}")
        self._kek = kek
        self.source = source
        digest = hashlib.sha256(b"robustlab key id\x00" + kek).hexdigest()
        self._key_id = f"local:{digest[:16]}"

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, data_key: bytes) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self._kek).encrypt(nonce, data_key, _wrap_aad(self.key_id))

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if key_id != self.key_id:
            raise DecryptionError(f"it was encrypted with key {_shown(key_id)}, but the key "
                                  f"configured is {_shown(self.key_id)} ({self.source})")
        if len(wrapped) <= NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("its wrapped data key is too short")
        try:
            return AESGCM(self._kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                             _wrap_aad(key_id))
        except InvalidTag:
            raise DecryptionError(f"its wrapped data key does not open with key "
                                  f"{_shown(self.key_id)} ({self.source}): the header was "
                                  f"changed, or the key is not the one it was encrypted "
                                  f"with") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self.key_id!r}, source={self.source!r})"


def _parse_key(text: str, source: str) -> bytes:
    """The 32 bytes that ``text`` (base64) holds; never echoes ``text`` in an error."""
    try:
        kek = base64.b64decode("".join(text.split()), validate=True)
    except ValueError:
        kek = b""
    if len(kek) != KEY_BYTES:
        raise ValidationError(f"expected {source} to hold a robustlab key (base64 of "
                              f"{KEY_BYTES} random bytes, as `robustlab keygen` writes), but "
                              f"it does not")
    return kek


class KeyFileProvider(LocalKey):
    """The KEK in a key file: base64 of 32 random bytes (``robustlab keygen KEYFILE``).
    A key file that other users can read is used with a warning."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        source = f"key file {str(self.path)!r}"
        try:
            text = self.path.read_text("ascii")
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            raise ValidationError(f"expected {source} to exist; make a key with `robustlab "
                                  f"keygen {self.path}`") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"could not read {source}: "
                                  f"{getattr(exc, 'strerror', None) or exc}") from None
        if os.name == "posix" and mode & 0o077:
            warnings.warn(f"{source} can be read by other users (mode {mode & 0o777:04o}); "
                          f"`chmod 600 {self.path}`", UserWarning, stacklevel=2)
        super().__init__(_parse_key(text, source), source)


class EnvKeyProvider(LocalKey):
    """The KEK in an environment variable (default ``ROBUSTLAB_KEY``), base64."""

    def __init__(self, name: str = KEY_ENV, environ: Mapping[str, str] | None = None) -> None:
        value = (os.environ if environ is None else environ).get(name, "")
        source = f"environment variable {name}"
        if not value.strip():
            raise ValidationError(f"expected {source} to hold a key; it is not set")
        super().__init__(_parse_key(value, source), source)


_configured: KeyProvider | None = None


def set_key_provider(provider: KeyProvider | None) -> KeyProvider | None:
    """Make ``provider`` this process's key (ahead of the environment; None: back to the
    environment) and return the previous one. Notebook kernels started by ``robustlab run``
    are other processes: they see the environment variables, not this setting."""
    global _configured
    if provider is not None and not isinstance(provider, KeyProvider):
        raise InputTypeError(f"expected a KeyProvider (key_id, wrap, unwrap), got "
                             f"{type(provider).__name__}")
    previous, _configured = _configured, provider
    return previous


def key_from_env(environ: Mapping[str, str] | None = None) -> KeyProvider | None:
    """The key the environment configures: ``ROBUSTLAB_KEY`` (the key, base64) or
    ``ROBUSTLAB_KEY_FILE`` (a key file); None when neither is set; both is an error."""
    env = os.environ if environ is None else environ
    inline, file = env.get(KEY_ENV, "").strip(), env.get(KEY_FILE_ENV, "").strip()
    if inline and file:
        raise ValidationError(f"expected one of {KEY_ENV} and {KEY_FILE_ENV} to be set, got "
                              f"both; unset one")
    if inline:
        return EnvKeyProvider(KEY_ENV, env)
    if file:
        return KeyFileProvider(file)
    return None


def resolve_key(key: Key | None = None) -> KeyProvider | None:
    """The provider to use: ``key`` (a provider, or a key file's path), else the one set
    with :func:`set_key_provider`, else the environment's (:func:`key_from_env`); None when
    no key is configured."""
    if key is None:
        return _configured if _configured is not None else key_from_env()
    if isinstance(key, (str, os.PathLike)):
        return KeyFileProvider(key)
    if isinstance(key, KeyProvider):
        return key
    raise InputTypeError(f"expected key to be a KeyProvider or the path of a key file, got "
                         f"{type(key).__name__}")


def _require(key: Key | None, what: str) -> KeyProvider:
    provider = resolve_key(key)
    if provider is None:
        raise KeyRequiredError(f"{what}: a key is needed and none is configured; "
                               f"{_CONFIGURE}")
    return provider


# ------------------------------------------------------------------------------- the format


def looks_encrypted(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` (a file's bytes, or at least its first 8) is in robustlab's
    encrypted format. Also true for a damaged one (one byte of the magic changed, or cut
    inside the magic), so that reading it is a DecryptionError, not a parse of ciphertext."""
    head = bytes(data[:len(MAGIC)])
    if not head:
        return False
    if len(head) < len(MAGIC):
        return MAGIC.startswith(head)
    return sum(a == b for a, b in zip(head, MAGIC, strict=True)) >= len(MAGIC) - 1


@dataclass(frozen=True)
class _Envelope:
    key_id: str
    wrapped: bytes
    body: int  # offset of the body's nonce


def _damaged(source: str, why: str) -> DecryptionError:
    return DecryptionError(f"cannot decrypt {source}: {why}")


def _parse(blob: bytes | bytearray | memoryview, source: str) -> _Envelope:
    if bytes(blob[:len(MAGIC)]) != MAGIC:
        if looks_encrypted(blob) and len(blob) >= len(MAGIC):
            raise _damaged(source, "its header is damaged (the robustlab magic has a changed "
                                   "byte)")
        if looks_encrypted(blob):
            raise _damaged(source, "the file is truncated (it ends inside the header)")
        raise ValidationError(f"expected {source} to be encrypted by robustlab (starting "
                              f"with its magic), but it is not")
    at = len(MAGIC)

    def take(size: int, what: str) -> bytes:
        nonlocal at
        if at + size > len(blob):
            raise _damaged(source, f"the file is truncated (it ends inside the {what})")
        piece = bytes(blob[at:at + size])
        at += size
        return piece

    version = take(1, "header")[0]
    if version != VERSION:
        raise _damaged(source, f"its format version is {version}; this robustlab reads "
                               f"version {VERSION} (a newer robustlab wrote it, or the header "
                               f"is damaged)")
    (k,) = struct.unpack(">H", take(2, "header"))
    raw_id = take(k, "key id")
    (w,) = struct.unpack(">H", take(2, "header"))
    wrapped = take(w, "wrapped data key")
    try:
        key_id = raw_id.decode("utf-8")
    except UnicodeDecodeError:
        raise _damaged(source, "its key id is not UTF-8 (the header is damaged)") from None
    if not key_id or not wrapped:
        raise _damaged(source, "its header names no key (the header is damaged)")
    if len(blob) - at < NONCE_BYTES + TAG_BYTES:
        raise _damaged(source, "the file is truncated (it ends before the body's tag)")
    return _Envelope(key_id, wrapped, at)


def header_info(blob: bytes) -> dict[str, Any]:
    """What an encrypted file's header says (no key needed): version, key id, sizes."""
    env = _parse(blob, "data")
    return {"version": VERSION, "key_id": env.key_id, "wrapped_key_bytes": len(env.wrapped),
            "body_offset": env.body,
            "plaintext_bytes": len(blob) - env.body - NONCE_BYTES - TAG_BYTES}


def _header(provider: KeyProvider, data_key: bytes, source: str) -> bytes:
    key_id = str(provider.key_id)
    raw_id = key_id.encode("utf-8")
    wrapped = bytes(provider.wrap(data_key))
    if not 0 < len(raw_id) <= 0xFFFF or not 0 < len(wrapped) <= 0xFFFF:
        raise ValidationError(f"cannot encrypt {source}: the key provider's key id "
                              f"({len(raw_id)} bytes) and wrapped key ({len(wrapped)} bytes) "
                              f"must each be 1-65535 bytes")
    return (_PREFIX + struct.pack(">H", len(raw_id)) + raw_id + struct.pack(">H", len(wrapped))
            + wrapped)


def _gcm(data_key: bytes, nonce: bytes, data: memoryview, tag: bytes | None) -> list[bytes]:
    """AES-256-GCM over ``data`` in pieces: encrypt (``tag`` None; the tag is the last
    piece) or decrypt and verify ``tag`` (raises InvalidTag)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    cipher = Cipher(algorithms.AES(data_key), modes.GCM(nonce, tag))
    pieces = range(0, len(data), _CHUNK)
    if tag is None:
        encryptor = cipher.encryptor()
        encryptor.authenticate_additional_data(_PREFIX)
        parts = [encryptor.update(data[i:i + _CHUNK]) for i in pieces]
        parts += [encryptor.finalize(), encryptor.tag]
    else:
        decryptor = cipher.decryptor()
        decryptor.authenticate_additional_data(_PREFIX)
        parts = [decryptor.update(data[i:i + _CHUNK]) for i in pieces]
        parts.append(decryptor.finalize())
    return [part for part in parts if part]  # a single piece joins without a copy


def encrypt(data: bytes, key: Key | None = None, *, source: str = "data") -> bytes:
    """``data`` in robustlab's encrypted format, under a fresh data key wrapped by ``key``
    (default: the configured key; none is a KeyRequiredError)."""
    provider = _require(key, f"cannot encrypt {source}")
    data_key = secrets.token_bytes(KEY_BYTES)
    nonce = secrets.token_bytes(NONCE_BYTES)
    header = _header(provider, data_key, source)
    return b"".join([header, nonce, *_gcm(data_key, nonce, memoryview(data), None)])


def _data_key(env: _Envelope, provider: KeyProvider, source: str) -> bytes:
    try:
        data_key = bytes(provider.unwrap(env.wrapped, env.key_id))
    except DecryptionError as exc:
        raise _damaged(source, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any provider failure; name the file
        raise _damaged(source, f"the key provider could not unwrap its data key "
                               f"({type(exc).__name__}: {exc})") from exc
    if len(data_key) != KEY_BYTES:
        raise _damaged(source, "its data key did not unwrap to 32 bytes")
    return data_key


def _open(blob: bytes, env: _Envelope, data_key: bytes, source: str) -> bytes:
    from cryptography.exceptions import InvalidTag

    view = memoryview(blob)
    nonce = bytes(view[env.body:env.body + NONCE_BYTES])
    tag = bytes(view[len(view) - TAG_BYTES:])
    try:
        return b"".join(_gcm(data_key, nonce, view[env.body + NONCE_BYTES:-TAG_BYTES], tag))
    except InvalidTag:
        raise _damaged(source, "its content does not match its authentication tag: the file "
                               "was truncated, extended or changed after it was written"
                       ) from None


def decrypt(blob: bytes, key: Key | None = None, *, source: str = "data") -> bytes:
    """The plaintext of ``blob`` (robustlab's encrypted format). Raises
    :class:`~robustlab.errors.KeyRequiredError` when no key is configured and
    :class:`~robustlab.errors.DecryptionError` (naming ``source``) for a wrong key or a
    damaged file; nothing is returned unless every byte is authentic."""
    env = _parse(blob, source)
    provider = resolve_key(key)
    if provider is None:
        raise KeyRequiredError(f"{source} is encrypted (with key {_shown(env.key_id)}): a "
                               f"key is needed to read it; {_CONFIGURE}")
    return _open(blob, env, _data_key(env, provider, source), source)


def rewrap(blob: bytes, new_key: Key, key: Key | None = None, *,
           source: str = "data") -> bytes:
    """``blob`` with its data key re-wrapped by ``new_key`` (key rotation): the body (nonce,
    ciphertext, tag) is kept byte for byte, after checking that ``key`` (default: the
    configured key) opens it. The old KEK no longer opens the result."""
    env = _parse(blob, source)
    old = _require(key, f"cannot rewrap {source} (encrypted with key {_shown(env.key_id)})")
    new = _require(new_key, f"cannot rewrap {source}")
    data_key = _data_key(env, old, source)
    _open(blob, env, data_key, source)  # refuse to re-wrap a damaged or forged file
    return _header(new, data_key, source) + bytes(memoryview(blob)[env.body:])


def decrypt_in_place(buffer: bytearray, key: Key | None = None, *,
                     source: str = "data") -> bytearray:
    """Decrypt ``buffer`` (robustlab's encrypted format) in place and return it, now holding
    only the plaintext: no second buffer of the file's size is made (the body is decrypted
    piece by piece over its own ciphertext). Errors as :func:`decrypt`; after one, the
    buffer's content is undefined (unauthenticated) and must not be used."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    with memoryview(buffer) as view:
        env = _parse(view, source)
        provider = resolve_key(key)
        if provider is None:
            raise KeyRequiredError(f"{source} is encrypted (with key {_shown(env.key_id)}): a "
                                   f"key is needed to read it; {_CONFIGURE}")
        data_key = _data_key(env, provider, source)
        start, end = env.body + NONCE_BYTES, len(view) - TAG_BYTES
        decryptor = Cipher(algorithms.AES(data_key),
                           modes.GCM(bytes(view[env.body:start]), bytes(view[end:]))
                           ).decryptor()
        decryptor.authenticate_additional_data(_PREFIX)
        # each piece's plaintext overwrites its own ciphertext; the output view may run on
        # into the tag, which gives the 15 spare bytes the API asks for
        for at in range(start, end, _CHUNK):
            decryptor.update_into(view[at:min(at + _CHUNK, end)], view[at:])
        try:
            decryptor.finalize()
        except InvalidTag:
            raise _damaged(source, "its content does not match its authentication tag: the "
                                   "file was truncated, extended or changed after it was "
                                   "written") from None
    del buffer[end:]
    del buffer[:start]  # CPython drops a bytearray's head without moving the rest
    return buffer


# ---------------------------------------------------------------------------------- files


class MemoryFile(io.RawIOBase):
    """A read-only, seekable binary file over bytes in memory that never copies them whole
    (``io.BytesIO`` copies a ``bytearray``). It has no ``name``, so a library that puts
    temporary files beside the file it reads (Keras does, for large models) cannot."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET and offset < 0:
            raise ValueError(f"negative seek value {offset}")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)  # as io.BytesIO: before the start is the start
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else self._pos + size
        data = bytes(self._view[self._pos:end])
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read()

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as target, target.cast("B") as flat:
            data = self._view[self._pos:self._pos + flat.nbytes]
            flat[:len(data)] = data
        self._pos += len(data)
        return len(data)


def read_stored(path: str | os.PathLike[str]) -> bytearray:
    """A file's bytes as stored, in one mutable buffer of their size (read with
    ``readinto``, so nothing is copied and :func:`decrypt_in_place` can follow)."""
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        buffer = bytearray(size)
        got = 0
        with memoryview(buffer) as view:
            while got < size:
                n = handle.readinto(view[got:])
                if not n:
                    break
                got += n
        rest = handle.read()  # the file grew while it was read: that is part of it too
    del buffer[got:]
    buffer += rest
    return buffer


def read_buffer(path: str | os.PathLike[str], key: Key | None = None) -> bytearray:
    """Like :func:`read_bytes`, for large files: one buffer, decrypted in place (open it
    with :class:`MemoryFile` to hand it to a library that wants a file)."""
    buffer = read_stored(path)
    if looks_encrypted(buffer):
        decrypt_in_place(buffer, key, source=repr(str(path)))
    return buffer



def read_bytes(path: str | os.PathLike[str], key: Key | None = None) -> bytes:
    """A file's bytes, decrypted in memory when it is encrypted (plaintext files are
    returned as they are, whether or not a key is configured)."""
    raw = Path(path).read_bytes()
    return decrypt(raw, key, source=repr(str(path))) if looks_encrypted(raw) else raw


def read_text(path: str | os.PathLike[str], key: Key | None = None) -> str:
    """:func:`read_bytes` as UTF-8 text."""
    return read_bytes(path, key).decode("utf-8")


def write_bytes(path: str | os.PathLike[str], data: bytes, key: Key | None = None) -> Path:
    """Write ``data`` atomically; encrypted when a key is given or configured, else
    plaintext. On any error nothing is written."""
    provider = resolve_key(key)
    if provider is not None:
        data = encrypt(data, provider, source=repr(str(path)))
    return _io.write_bytes(path, data)


def write_text(path: str | os.PathLike[str], text: str, key: Key | None = None) -> Path:
    """:func:`write_bytes` of UTF-8 ``text``."""
    return write_bytes(path, text.encode("utf-8"), key)


def write_json(path: str | os.PathLike[str], obj: Any, key: Key | None = None) -> Path:
    """:func:`write_bytes` of ``obj`` as JSON, formatted as :func:`robustlab._io.write_json`."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n",
                      key)


def _read_input(path: str | os.PathLike[str]) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"expected {str(path)!r} to be a file, but "
                              f"{'it is a directory' if path.is_dir() else 'it does not exist'}")
    return path.read_bytes()


def encrypt_file(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                 key: Key | None = None) -> Path:
    """Encrypt the file ``path`` into ``out`` (default: in place), atomically. A file that
    is already encrypted is refused."""
    raw = _read_input(path)
    if looks_encrypted(raw):
        raise ValidationError(f"expected {str(path)!r} to be plaintext; it is already "
                              f"encrypted")
    return _io.write_bytes(out or path, encrypt(raw, key, source=repr(str(path))))


def decrypt_file(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                 key: Key | None = None) -> Path:
    """Decrypt the file ``path`` into ``out`` (default: in place), atomically; nothing is
    written unless the whole file is authentic."""
    raw = _read_input(path)
    if not looks_encrypted(raw):
        raise ValidationError(f"expected {str(path)!r} to be encrypted; it is not")
    return _io.write_bytes(out or path, decrypt(raw, key, source=repr(str(path))))


def rewrap_file(path: str | os.PathLike[str], new_key: Key,
                out: str | os.PathLike[str] | None = None, key: Key | None = None) -> Path:
    """Re-wrap the file's data key with ``new_key`` into ``out`` (default: in place)."""
    raw = _read_input(path)
    if not looks_encrypted(raw):
        raise ValidationError(f"expected {str(path)!r} to be encrypted; it is not")
    return _io.write_bytes(out or path, rewrap(raw, new_key, key, source=repr(str(path))))


# ----------------------------------------------------------------------------------- keys


def generate_key() -> bytes:
    """32 random bytes from the operating system's CSPRNG: a new KEK."""
    return secrets.token_bytes(KEY_BYTES)


def write_key_file(path: str | os.PathLike[str], *, overwrite: bool = False) -> LocalKey:
    """Write a new random key to ``path`` (base64, one line, mode 0600 from the start),
    atomically; an existing file is refused unless ``overwrite`` (a lost key is lost data).
    Returns the key as a provider (its ``key_id`` names it)."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValidationError(f"expected {str(target)!r} to be a key file name, got a "
                              f"directory")
    if target.exists() and not overwrite:
        raise ValidationError(f"{str(target)!r} exists; robustlab does not overwrite a key "
                              f"(files encrypted with it would be lost): choose another name, "
                              f"or --force")
    kek = generate_key()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _io.write_secret(target, base64.b64encode(kek) + b"\n", 0o600, overwrite=overwrite)
    except FileExistsError:  # the name appeared meanwhile: never clobbers
        raise ValidationError(f"{str(target)!r} exists; robustlab does not overwrite a "
                              f"key") from None
    return LocalKey(kek, f"key file {str(target)!r}")

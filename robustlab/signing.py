"""Signed blessings: the gate signs ``blessing.json`` with Ed25519; deployment checks it.

A blessing is a JSON object (see :mod:`robustlab.gate`). The fields this module adds and
checks::

    blessing_format      1
    blessed, verdict     true, "blessed"  (or false, "not blessed")
    report_sha256        the judged report.json's SHA-256
    model, model_sha256  the model file the report evaluated and its SHA-256 (as stored on
                         disk: an encrypted model's digest is that of the encrypted file);
                         both null for a blessing made with ``--no-model``
    policy               the policy it was judged against
    signed               true when signed
    signature_algorithm  "ed25519"
    key_id               the signer's key id: the first 16 hex digits of the SHA-256 of the
                         raw 32-byte Ed25519 public key
    signature            base64 of the 64-byte Ed25519 signature; the only field not signed

The signed message is the canonical serialisation of every field except ``signature``::

    json.dumps(blessing_without_signature, sort_keys=True, separators=(",", ":"),
               ensure_ascii=True, allow_nan=False).encode("ascii")

so the verdict, both digests, the policy, the reasons, the time and the key id are all
covered, and any change to them (or an added or removed field) breaks the signature. The
``blessing_format`` field inside it keeps a signature over some other JSON document from
passing as a blessing. A blessing made without a key says so (``signed: false``,
``signature: null``) and is refused by every check.

Keys: ``robustlab signing-keygen PRIVATE PUBLIC`` (:func:`generate_keypair`) writes a
PKCS#8 PEM private key (mode 0600 from the start) and a SubjectPublicKeyInfo PEM public key,
and refuses to overwrite either. A private key file that group or others can read is
refused, as ssh does.

Checks: :func:`verify_blessing` (``robustlab verify-blessing`` and
``load_model(path, require_blessing=(blessing, public_key))``) accepts a model only when the
blessing is well formed, signed by the given public key, says "blessed" and names the
model's digest; otherwise it raises :class:`BlessingRefusedError` with one line saying why
(``reason`` is one of :data:`REASONS`). Inputs that cannot be read at all (a missing model,
blessing or key file, a key file that is not an Ed25519 key) raise :class:`SigningError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robustlab._io import sha256_file, write_secret
from robustlab.errors import ModelNotFoundError, RobustlabError, UnsafeModelError, ValidationError

__all__ = ["ALGORITHM", "BLESSING_FORMAT", "REASONS", "SigningError", "BlessingRefusedError",
           "generate_keypair", "load_private_key", "load_public_key", "key_id",
           "canonical_bytes", "seal", "resolve_model", "read_blessing", "check_blessing",
           "verify_blessing"]

ALGORITHM = "ed25519"
BLESSING_FORMAT = 1
_KEY_ID_HEX = 16
# Why a blessing is refused (BlessingRefusedError.reason).
REASONS = ("malformed", "unsigned", "wrong key", "bad signature", "not blessed", "no model",
           "digest mismatch")
_HEX = frozenset("0123456789abcdef")


class SigningError(RobustlabError, ValueError):
    """A signing or verification input cannot be used: a key, model or blessing file that
    is missing or unreadable, or a key file that is not an Ed25519 key of the right kind
    (``robustlab verify-blessing`` exits 2)."""


class BlessingRefusedError(UnsafeModelError):
    """The blessing does not let this model through; ``reason`` (one of :data:`REASONS`)
    says why, the message says it in one line (``robustlab verify-blessing`` exits 1)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def _ed25519() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


def _is_hex(value: Any, length: int = 64) -> bool:
    return isinstance(value, str) and len(value) == length and set(value) <= _HEX


# ------------------------------------------------------------------------------ keys

def key_id(key: Any) -> str:
    """The id of an Ed25519 key (private or public): the first 16 hex digits of the SHA-256
    of the raw 32-byte public key."""
    from cryptography.hazmat.primitives import serialization

    ed = _ed25519()
    if isinstance(key, ed.Ed25519PrivateKey):
        key = key.public_key()
    if not isinstance(key, ed.Ed25519PublicKey):
        raise SigningError(f"expected an Ed25519 key, got {type(key).__name__}")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:_KEY_ID_HEX]


def generate_keypair(private_path: str | os.PathLike[str],
                     public_path: str | os.PathLike[str]) -> str:
    """Write a new Ed25519 key pair: the private key as PKCS#8 PEM (mode 0600 from the
    start) and the public key as SubjectPublicKeyInfo PEM. An existing file at either path
    is refused (nothing is written). Returns the key id."""
    from cryptography.hazmat.primitives import serialization

    private, public = Path(private_path).expanduser(), Path(public_path).expanduser()
    if private.resolve() == public.resolve():
        raise ValidationError(f"expected two different files for the private and the "
                              f"public key, got {str(private)!r} twice")
    for path in (private, public):
        if path.is_dir():
            raise ValidationError(f"expected {str(path)!r} to be a key file name, got a "
                                  f"directory")
        if os.path.lexists(path):
            raise ValidationError(f"{str(path)!r} exists; robustlab does not overwrite a "
                                  f"signing key: choose another name")
        path.parent.mkdir(parents=True, exist_ok=True)
    key = _ed25519().Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write_secret(private, private_pem, 0o600)
    except FileExistsError:
        raise ValidationError(f"{str(private)!r} exists; robustlab does not overwrite a "
                              f"signing key") from None
    try:
        write_secret(public, public_pem, 0o644 & ~umask)
    except BaseException as exc:
        private.unlink(missing_ok=True)  # no half pair left behind
        if isinstance(exc, FileExistsError):
            raise ValidationError(f"{str(public)!r} exists; robustlab does not overwrite a "
                                  f"signing key") from None
        raise
    return key_id(key)


def _read_key_file(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the {what} {str(path)!r}: "
                           f"{exc.strerror or exc}") from None


def load_private_key(path: str | os.PathLike[str]) -> Any:
    """The Ed25519 private key in the PEM file ``path`` (written by
    :func:`generate_keypair`). Refused: a file group or others can read (POSIX), an
    encrypted key, a key of another type, anything that is not a PEM private key."""
    from cryptography.hazmat.primitives import serialization

    data = _read_key_file(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted
        raise SigningError(f"signing key {str(path)!r} is encrypted; robustlab reads "
                           f"unencrypted PKCS#8 PEM keys (robustlab signing-keygen)") from None
    except (ValueError, binascii.Error):
        raise SigningError(f"expected {str(path)!r} to be a PEM private key (robustlab "
                           f"signing-keygen writes one)") from None
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise SigningError(f"expected {str(path)!r} to hold an Ed25519 private key, got "
                           f"{type(key).__name__}")
    if os.name == "posix":
        mode = os.stat(Path(path).expanduser()).st_mode & 0o777
        if mode & 0o077:
            raise SigningError(f"signing key {str(path)!r} is readable by others (mode "
                               f"{mode:04o}); a private key must be mode 0600: "
                               f"chmod 600 {path}")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Any:
    """The Ed25519 public key in the PEM file ``path``. A private key file is refused too:
    verifiers should not hold it."""
    from cryptography.hazmat.primitives import serialization

    data = _read_key_file(path, "public key")
    if b"PRIVATE KEY" in data:
        raise SigningError(f"{str(path)!r} is a private key; verify with the public key "
                           f"(the second file robustlab signing-keygen wrote)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, binascii.Error):
        raise SigningError(f"expected {str(path)!r} to be a PEM public key (robustlab "
                           f"signing-keygen writes one)") from None
    if not isinstance(key, _ed25519().Ed25519PublicKey):
        raise SigningError(f"expected {str(path)!r} to hold an Ed25519 public key, got "
                           f"{type(key).__name__}")
    return key


# ------------------------------------------------------------------------------ signing

def canonical_bytes(blessing: Mapping[str, Any]) -> bytes:
    """The signed message: every field except ``signature`` as sorted-key compact ASCII
    JSON (NaN refused)."""
    content = {key: value for key, value in blessing.items() if key != "signature"}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def seal(blessing: Mapping[str, Any], private_key: Any | None) -> dict[str, Any]:
    """A copy of ``blessing`` with the signature fields set: signed with ``private_key`` (an
    Ed25519 private key, or the path of its PEM file), or marked unsigned when it is None.
    The verdict field ``verdict`` is derived from ``blessed``."""
    out = {key: value for key, value in blessing.items() if key != "signature"}
    out["blessing_format"] = BLESSING_FORMAT
    out["verdict"] = "blessed" if out.get("blessed") is True else "not blessed"
    if private_key is None:
        out.update(signed=False, signature_algorithm=None, key_id=None, signature=None)
        return out
    if isinstance(private_key, (str, os.PathLike)):
        private_key = load_private_key(private_key)
    out.update(signed=True, signature_algorithm=ALGORITHM, key_id=key_id(private_key))
    signature = private_key.sign(canonical_bytes(out))
    out["signature"] = base64.b64encode(signature).decode("ascii")
    return out


def resolve_model(report: str | os.PathLike[str], model: str | os.PathLike[str] | None = None,
                  *, no_model: bool = False) -> dict[str, str | None]:
    """The blessing's model fields, ``{"model": path, "model_sha256": digest}``: the model
    file the report evaluated is ``model``, by default ``model.keras`` beside the report.
    A missing model is refused (a blessing that names no model cannot be checked at
    deployment) unless ``no_model``, which gives ``None`` for both."""
    if no_model:
        if model is not None:
            raise ValidationError("expected either a model (--model) or --no-model, got both")
        return {"model": None, "model_sha256": None}
    path = Path(model) if model is not None else Path(report).with_name("model.keras")
    if not path.is_file():
        default = "" if model is not None else " (the default: model.keras beside the report)"
        raise ValidationError(
            f"expected the model the report evaluated at {str(path)!r}{default}, which does "
            f"not exist; name it with --model PATH, or pass --no-model to bless the report "
            f"without a model (deployment then cannot check a model against the blessing)")
    return {"model": str(path), "model_sha256": sha256_file(path)}


# ------------------------------------------------------------------------------ checking

def _refuse(reason: str, message: str) -> BlessingRefusedError:
    return BlessingRefusedError(reason, message)


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # two parsers could read two different verdicts from one file
            raise ValueError(f"duplicate field {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_blessing(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse the blessing file ``path`` strictly. A file that cannot be read is a
    :class:`SigningError`; one that is not a single JSON object without duplicate fields
    or NaN, or lacks the fields a signed blessing has, is refused as "malformed"."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the blessing {name!r}: "
                           f"{exc.strerror or exc}") from None
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_strict_object,
                          parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refuse("malformed", f"blessing {name!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _refuse("malformed", f"blessing {name!r} is not a JSON object but a "
                                   f"{type(data).__name__}")
    _check_fields(data, repr(name))
    return data


def _check_fields(data: Mapping[str, Any], name: str) -> None:
    """Refuse, as "malformed", a blessing without the fields a signed blessing has."""
    if data.get("blessing_format") != BLESSING_FORMAT:
        raise _refuse("malformed", f"blessing {name} has blessing_format "
                                   f"{data.get('blessing_format')!r}, expected "
                                   f"{BLESSING_FORMAT} (written by an older robustlab gate?)")
    problems = []
    for field, ok in (("blessed", isinstance(data.get("blessed"), bool)),
                      ("verdict", isinstance(data.get("verdict"), str)),
                      ("signed", isinstance(data.get("signed"), bool)),
                      ("report_sha256", _is_hex(data.get("report_sha256"))),
                      ("model_sha256", data.get("model_sha256") is None
                       or _is_hex(data.get("model_sha256"))),
                      ("policy", isinstance(data.get("policy"), dict))):
        if field not in data:
            problems.append(f"no {field}")
        elif not ok:
            problems.append(f"{field} is {data[field]!r}")
    if problems:
        raise _refuse("malformed", f"blessing {name}: " + "; ".join(problems))


def check_blessing(blessing: str | os.PathLike[str] | Mapping[str, Any], public_key: Any,
                   model_sha256: str, *, model_name: str = "the model") -> dict[str, Any]:
    """Check that ``blessing`` (a path or a parsed blessing) is signed by ``public_key`` (an
    Ed25519 public key or the path of its PEM file), says "blessed" and names
    ``model_sha256``; return the blessing. Raises :class:`BlessingRefusedError` (``reason`` one
    of :data:`REASONS`) or :class:`SigningError` (an input that cannot be read).

    The checks run in this order, so nothing unsigned is trusted: well formed, signed, by
    this key, signature valid, verdict, model digest.
    """
    if isinstance(public_key, (str, os.PathLike)):
        public_key = load_public_key(public_key)
    expected_id = key_id(public_key)
    if isinstance(blessing, Mapping):
        name, data = "(in memory)", dict(blessing)
        _check_fields(data, name)
    else:
        name, data = repr(str(blessing)), read_blessing(blessing)
    if data.get("signed") is not True or data.get("signature") is None:
        raise _refuse("unsigned", f"blessing {name} is not signed (the gate ran without "
                                  f"--signing-key): refusing an unsigned verdict")
    if data.get("signature_algorithm") != ALGORITHM:
        raise _refuse("malformed", f"blessing {name} has signature_algorithm "
                                   f"{data.get('signature_algorithm')!r}, expected "
                                   f"{ALGORITHM!r}")
    if data.get("key_id") != expected_id:
        raise _refuse("wrong key", f"blessing {name} was signed by key "
                                   f"{data.get('key_id')!r}, not by the given public key "
                                   f"{expected_id}")
    try:
        signature = base64.b64decode(str(data["signature"]), validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    from cryptography.exceptions import InvalidSignature

    try:
        if len(signature) != 64:
            raise InvalidSignature
        public_key.verify(signature, canonical_bytes(data))
    except (InvalidSignature, ValueError, TypeError):
        raise _refuse("bad signature", f"blessing {name} was changed after it was signed, or "
                                       f"was not signed by key {expected_id}"
                      ) from None
    if data.get("blessed") is not True or data.get("verdict") != "blessed":
        why = "; ".join(str(r) for r in data.get("reasons") or []) or "no reason given"
        raise _refuse("not blessed", f"the gate did not bless the report "
                                     f"({why[:300]})")
    recorded = data.get("model_sha256")
    if recorded is None:
        raise _refuse("no model", f"blessing {name} names no model (the gate ran with "
                                  f"--no-model): it cannot let {model_name} through")
    actual = str(model_sha256).lower()
    if not hmac.compare_digest(str(recorded), actual):
        raise _refuse("digest mismatch", f"{model_name} has sha256 "
                                         f"{actual[:16]}..., the blessing names "
                                         f"{str(recorded)[:16]}... (the model changed after "
                                         f"it was blessed, or is another model)")
    return data


def verify_blessing(model: str | os.PathLike[str], blessing: str | os.PathLike[str],
                    public_key: Any) -> dict[str, Any]:
    """Check that the model file ``model`` is the one ``blessing`` blesses, and that
    ``blessing`` is signed by ``public_key`` (a path or an Ed25519 public key): see
    :func:`check_blessing`. Returns the blessing. A missing model file is a
    :class:`~robustlab.errors.ModelNotFoundError`."""
    path = Path(model)
    if isinstance(public_key, (str, os.PathLike)):
        public_key = load_public_key(public_key)  # an unusable key before anything else
    try:
        digest = sha256_file(path)
    except FileNotFoundError:
        raise ModelNotFoundError(f"model file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise SigningError(f"cannot read the model {str(path)!r}: "
                           f"{exc.strerror or exc}") from None
    return check_blessing(blessing, public_key, digest, model_name=f"model {str(path)!r}")

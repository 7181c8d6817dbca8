"""Encryption at rest (robustlab.crypto): the format and its keys, every kind of tampering,
key rotation, the readers and writers that use it (models, npz datasets, reports) and the
CLI. Timings live in benchmarks/CRYPTO.md, never here."""

import base64
import io
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import warnings
import zipfile

import numpy as np
import pytest
from conftest import ROOT

from robustlab import crypto
from robustlab.crypto import MAGIC, LocalKey
from robustlab.errors import (
    DecryptionError,
    InputTypeError,
    KeyRequiredError,
    UnsafeModelError,
    ValidationError,
)

REGIONS = ("magic", "version", "key id length", "key id", "wrapped key length", "wrapped key",
           "nonce", "body", "tag")


@pytest.fixture(autouse=True)
def no_configured_key(monkeypatch):
    """Each test starts with no key configured (whatever the environment running it has)."""
    monkeypatch.delenv(crypto.KEY_ENV, raising=False)
    monkeypatch.delenv(crypto.KEY_FILE_ENV, raising=False)
    previous = crypto.set_key_provider(None)
    yield
    crypto.set_key_provider(previous)


@pytest.fixture()
def key():
    return LocalKey(os.urandom(32))


@pytest.fixture()
def key_file(tmp_path):
    path = tmp_path / "keys" / "robustlab.key"
    crypto.write_key_file(path)
    return path


def _regions(blob):
    """Byte ranges of each field of an encrypted blob (the format in robustlab/crypto.py)."""
    info = crypto.header_info(blob)
    k, w, body = len(info["key_id"].encode()), info["wrapped_key_bytes"], info["body_offset"]
    return {"magic": range(0, 8), "version": range(8, 9), "key id length": range(9, 11),
            "key id": range(11, 11 + k), "wrapped key length": range(11 + k, 13 + k),
            "wrapped key": range(13 + k, 13 + k + w), "nonce": range(body, body + 12),
            "body": range(body + 12, len(blob) - 16), "tag": range(len(blob) - 16, len(blob))}


def _flip(blob, i, mask=0x01):
    bad = bytearray(blob)
    bad[i] ^= mask
    return bytes(bad)


# ------------------------------------------------------------------------------- the format


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1000, 300_000])
def test_bytes_round_trip(key, size):
    data = os.urandom(size)
    blob = crypto.encrypt(data, key)
    assert blob.startswith(MAGIC) and blob[8] == crypto.VERSION
    assert crypto.looks_encrypted(blob) and not crypto.looks_encrypted(b"PK\x03\x04" + data)
    assert crypto.decrypt(blob, key) == data
    assert crypto.encrypt(data, key) != blob  # a fresh data key and nonce every time
    info = crypto.header_info(blob)
    assert info["key_id"] == key.key_id and info["plaintext_bytes"] == size
    assert len(blob) == info["body_offset"] + 12 + size + 16


@pytest.mark.parametrize("size", [0, 1, 1000, 300_000])
def test_in_place_decryption_and_the_memory_file(key, tmp_path, monkeypatch, size):
    """Large files are read into one buffer and decrypted over themselves (no second copy);
    MemoryFile reads that buffer as io.BytesIO would, without copying it first."""
    monkeypatch.setattr(crypto, "_CHUNK", 4096)  # several pieces, each decrypted in place
    data = os.urandom(size)
    if data and crypto.MAGIC.startswith(data[:len(crypto.MAGIC)]):
        # a plaintext cut inside the magic (b"\x89" one run in 256) reads as a truncated
        # encrypted file, by design (looks_encrypted): not the plaintext this test needs
        data = bytes([data[0] ^ 0xFF]) + data[1:]
    enc = crypto.write_bytes(tmp_path / "enc.bin", data, key)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(data)
    buffer = crypto.read_stored(enc)
    assert bytes(buffer) == enc.read_bytes()
    assert crypto.decrypt_in_place(buffer, key) is buffer and buffer == data
    assert crypto.read_buffer(enc, key) == data == crypto.read_buffer(plain, key)
    assert crypto.read_buffer(plain) == data  # no key needed for plaintext
    reference, memory = io.BytesIO(data), crypto.MemoryFile(bytearray(data))
    rng = np.random.default_rng(size)
    for _ in range(200):
        whence = int(rng.integers(0, 3))
        offset = int(rng.integers(-size - 5, size + 5)) if whence else int(
            rng.integers(0, size + 5))
        assert memory.seek(offset, whence) == reference.seek(offset, whence)
        n = int(rng.integers(-1, 64))
        assert memory.read(n) == reference.read(n) and memory.tell() == reference.tell()
        target_a, target_b = bytearray(7), bytearray(7)
        assert memory.readinto(target_a) == reference.readinto(target_b)
        assert target_a == target_b
    with pytest.raises(ValueError, match="negative seek"):
        memory.seek(-1)
    assert isinstance(memory, io.IOBase) and not hasattr(memory, "name")


def test_layout_is_the_documented_one(key):
    blob = crypto.encrypt(b"hello", key)
    regions = _regions(blob)
    assert sum(len(r) for r in regions.values()) == len(blob)  # every byte is in a field
    assert blob[:8] == b"\x89RLE\r\n\x1a\n"
    kid = key.key_id.encode()
    assert int.from_bytes(blob[9:11], "big") == len(kid) and blob[11:11 + len(kid)] == kid
    assert len(regions["wrapped key"]) == 12 + 32 + 16  # nonce | wrapped data key | tag
    assert key.key_id.startswith("local:") and len(key.key_id) == len("local:") + 16


@pytest.mark.parametrize("region", REGIONS)
def test_every_changed_byte_is_a_named_error(key, region):
    """AES-GCM authenticates the body (and magic, version); the wrap authenticates the key id
    and the wrapped key. Any byte changed anywhere, in either of two ways, is refused."""
    blob = crypto.encrypt(b"robust accuracy 0.42 at eps 0.1; " * 3, key)
    positions = _regions(blob)[region]
    assert len(positions) > 0
    for i in positions:
        for mask in (0x01, 0xFF):
            bad = _flip(blob, i, mask)
            assert crypto.looks_encrypted(bad), (region, i)
            with pytest.raises(DecryptionError, match=r"cannot decrypt 'report\.json': "):
                crypto.decrypt(bad, key, source="'report.json'")
            with pytest.raises(DecryptionError, match=r"cannot decrypt 'report\.json': "):
                crypto.decrypt_in_place(bytearray(bad), key, source="'report.json'")


def test_every_truncation_and_extension_is_a_named_error(key):
    blob = crypto.encrypt(b"x" * 40, key)
    for n in range(1, len(blob)):
        with pytest.raises(DecryptionError, match="cannot decrypt"):
            crypto.decrypt(blob[:n], key)
        with pytest.raises(DecryptionError, match="cannot decrypt"):
            crypto.decrypt_in_place(bytearray(blob[:n]), key)
    for extra in (b"\0", b"\0" * 16, blob):
        with pytest.raises(DecryptionError, match="authentication tag"):
            crypto.decrypt(blob + extra, key)


def test_wrong_key_is_named(key):
    blob = crypto.encrypt(b"secret", key)
    other = LocalKey(os.urandom(32), source="the other key")
    with pytest.raises(DecryptionError, match=rf"encrypted with key '{key.key_id}', but the "
                                              rf"key configured is '{other.key_id}' \(the other "
                                              rf"key"):
        crypto.decrypt(blob, other)

    class Impostor(LocalKey):  # claims the right key id, holds another key
        @property
        def key_id(self):
            return key.key_id

    with pytest.raises(DecryptionError, match="does not open"):
        crypto.decrypt(blob, Impostor(os.urandom(32)))


def test_missing_key_says_a_key_is_needed(key, tmp_path):
    path = crypto.write_bytes(tmp_path / "data.bin", b"payload", key)
    with pytest.raises(KeyRequiredError, match=r"'.*data\.bin' is encrypted \(with key "
                                               r"'local:\w+'\): a key is needed to read it; set "
                                               r"ROBUSTLAB_KEY_FILE"):
        crypto.read_bytes(path)
    with pytest.raises(KeyRequiredError, match="cannot encrypt .* a key is needed"):
        crypto.encrypt(b"payload")
    assert issubclass(KeyRequiredError, DecryptionError)


def test_plaintext_reads_as_it_is_with_a_key_configured(key, tmp_path):
    path = tmp_path / "plain.json"
    path.write_bytes(b'{"a": 1}')
    assert crypto.read_bytes(path, key) == b'{"a": 1}'
    crypto.set_key_provider(key)
    assert crypto.read_text(path) == '{"a": 1}'


def test_writes_are_atomic_and_leave_nothing_on_error(tmp_path):
    class Broken:
        key_id = "broken"

        def wrap(self, data_key):
            raise RuntimeError("KMS unreachable")

        def unwrap(self, wrapped, key_id):
            raise RuntimeError("KMS unreachable")

    with pytest.raises(RuntimeError, match="KMS unreachable"):
        crypto.write_bytes(tmp_path / "out.bin", b"data", Broken())
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "keep.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        crypto.write_json(tmp_path / "keep.bin", {"new": 1}, Broken())
    assert (tmp_path / "keep.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.bin"]


# ----------------------------------------------------------------------------- providers


class ToyKms:
    """What a KMS/Vault client looks like to robustlab: it implements the Protocol without
    inheriting from anything (here the 'service' is a dict of keys in memory)."""

    def __init__(self):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.key_id = "arn:aws:kms:eu-west-1:111122223333:key/toy-1"
        self._service = {self.key_id: AESGCM(os.urandom(32))}

    def wrap(self, data_key):
        nonce = os.urandom(12)
        return nonce + self._service[self.key_id].encrypt(nonce, data_key,
                                                          self.key_id.encode())

    def unwrap(self, wrapped, key_id):
        return self._service[key_id].decrypt(wrapped[:12], wrapped[12:], key_id.encode())


def test_a_custom_provider_plugs_in(tmp_path):
    kms = ToyKms()
    assert isinstance(kms, crypto.KeyProvider)
    path = crypto.write_bytes(tmp_path / "m.bin", b"weights", kms)
    assert crypto.header_info(path.read_bytes())["key_id"] == kms.key_id
    assert crypto.read_bytes(path, kms) == b"weights"
    crypto.set_key_provider(kms)
    assert crypto.read_bytes(path) == b"weights"
    kms._service.clear()  # the KMS no longer has the key: its client raises (KeyError here)
    with pytest.raises(DecryptionError, match=r"m\.bin.*could not unwrap its data key "
                                              r"\(KeyError"):
        crypto.read_bytes(path, kms)
    with pytest.raises(InputTypeError, match="KeyProvider"):
        crypto.set_key_provider(object())
    with pytest.raises(InputTypeError, match="KeyProvider or the path"):
        crypto.read_bytes(path, key=42)


def test_key_file_and_environment_variable(tmp_path, monkeypatch, key_file):
    provider = crypto.KeyFileProvider(key_file)
    text = key_file.read_text()
    assert text.endswith("\n") and len(base64.b64decode(text.strip(), validate=True)) == 32
    assert text.strip() not in repr(provider) and "key_id=" in repr(provider)
    blob = crypto.encrypt(b"data", key_file)  # a path is a key file
    monkeypatch.setenv(crypto.KEY_FILE_ENV, str(key_file))
    assert crypto.key_from_env().key_id == provider.key_id
    assert crypto.decrypt(blob) == b"data"
    monkeypatch.setenv(crypto.KEY_ENV, text.strip())
    with pytest.raises(ValidationError, match="got both"):
        crypto.decrypt(blob)
    monkeypatch.delenv(crypto.KEY_FILE_ENV)
    assert crypto.key_from_env().key_id == provider.key_id  # same key, same id
    assert crypto.decrypt(blob) == b"data"
    monkeypatch.setenv(crypto.KEY_ENV, "not-a-key-SECRETVALUE")
    with pytest.raises(ValidationError, match="ROBUSTLAB_KEY to hold a robustlab key") as info:
        crypto.decrypt(blob)
    assert "SECRETVALUE" not in str(info.value)  # a bad key is never echoed
    with pytest.raises(ValidationError, match="keygen"):
        crypto.KeyFileProvider(tmp_path / "nowhere.key")
    (tmp_path / "short.key").write_text(base64.b64encode(b"x" * 16).decode())
    (tmp_path / "short.key").chmod(0o600)
    with pytest.raises(ValidationError, match="base64 of 32 random bytes"):
        crypto.KeyFileProvider(tmp_path / "short.key")


def test_key_file_permissions(tmp_path):
    old_umask = os.umask(0)  # even with a permissive umask the key is private from the start
    try:
        crypto.write_key_file(tmp_path / "a.key")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "a.key").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["a.key"]  # no temporary file left
    first = crypto.KeyFileProvider(tmp_path / "a.key").key_id
    with pytest.raises(ValidationError, match="does not overwrite a key"):
        crypto.write_key_file(tmp_path / "a.key")
    assert crypto.KeyFileProvider(tmp_path / "a.key").key_id == first
    assert crypto.write_key_file(tmp_path / "a.key", overwrite=True).key_id != first
    assert stat.S_IMODE((tmp_path / "a.key").stat().st_mode) == 0o600
    (tmp_path / "a.key").chmod(0o644)
    with pytest.warns(UserWarning, match="can be read by other users"):
        crypto.KeyFileProvider(tmp_path / "a.key")


def test_a_private_key_file_loads_without_a_warning(key_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crypto.KeyFileProvider(key_file)


# ---------------------------------------------------------------------------- key rotation


def test_rewrap_keeps_the_body_and_retires_the_old_key(key):
    data = os.urandom(5000)
    blob = crypto.encrypt(data, key)
    new = LocalKey(os.urandom(32))
    rewrapped = crypto.rewrap(blob, new, key)
    old_body = blob[crypto.header_info(blob)["body_offset"]:]
    assert rewrapped[crypto.header_info(rewrapped)["body_offset"]:] == old_body
    assert crypto.header_info(rewrapped)["key_id"] == new.key_id
    assert crypto.decrypt(rewrapped, new) == data
    with pytest.raises(DecryptionError, match="encrypted with key"):
        crypto.decrypt(rewrapped, key)
    with pytest.raises(DecryptionError):  # the wrong old key cannot rewrap
        crypto.rewrap(blob, new, LocalKey(os.urandom(32)))
    with pytest.raises(DecryptionError, match="authentication tag"):  # nor a damaged body
        crypto.rewrap(_flip(blob, len(blob) - 20), new, key)
    with pytest.raises(KeyRequiredError):
        crypto.rewrap(blob, new)


# --------------------------------------------------------------------------------- models


def test_encrypted_model_round_trip(tiny_model, tmp_path, batch, monkeypatch, key_file):
    from robustlab._io import sha256_file
    from robustlab.models import load_model, save_model

    monkeypatch.setenv(crypto.KEY_FILE_ENV, str(key_file))
    path = save_model(tiny_model, tmp_path / "m.keras")
    raw = path.read_bytes()
    assert raw.startswith(MAGIC) and b"config.json" not in raw and b"small_cnn" not in raw
    assert [p.name for p in tmp_path.iterdir() if p.name != "keys"] == ["m.keras"]
    expected = np.asarray(tiny_model(batch[0]))
    np.testing.assert_allclose(np.asarray(load_model(path)(batch[0])), expected, atol=1e-6)
    pinned = load_model(path, sha256=sha256_file(path))  # the pin is of the file as stored
    assert pinned.count_params() == tiny_model.count_params()
    monkeypatch.delenv(crypto.KEY_FILE_ENV)
    with pytest.raises(KeyRequiredError, match=r"m\.keras' is encrypted .* a key is needed"):
        load_model(path)
    assert load_model(path, key=key_file).count_params() == tiny_model.count_params()
    other = tmp_path / "other.key"
    crypto.write_key_file(other)
    with pytest.raises(DecryptionError, match=r"cannot decrypt '.*m\.keras': it was encrypted "
                                              r"with key"):
        load_model(path, key=other)
    plain = save_model(tiny_model, tmp_path / "plain.keras")  # no key: plaintext, as before
    assert zipfile.is_zipfile(plain)
    assert load_model(plain, key=key_file).count_params() == tiny_model.count_params()


@pytest.mark.parametrize("region", REGIONS)
def test_tampered_model_is_refused_naming_the_file(tiny_model, tmp_path, key, region):
    from robustlab.models import load_model, save_model

    blob = save_model(tiny_model, tmp_path / "m.keras", key=key).read_bytes()
    positions = _regions(blob)[region]
    bad = tmp_path / "bad.keras"
    bad.write_bytes(_flip(blob, positions[len(positions) // 2]))
    with pytest.raises(DecryptionError, match=r"cannot decrypt '.*bad\.keras'"):
        load_model(bad, key=key)
    bad.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(DecryptionError, match=r"bad\.keras.*truncated|bad\.keras.*tag"):
        load_model(bad, key=key)


def _rewrite_config(data, edit):
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            member = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(member)
                edit(config)
                member = json.dumps(config).encode()
            zout.writestr(item, member)
    return out.getvalue()


def test_safe_loading_checks_run_on_the_decrypted_bytes(tiny_model, tmp_path, key):
    """Encryption hides nothing from the allowlist: hostile content inside a well-encrypted
    file is refused with the same messages as in plaintext."""
    import pickle

    from robustlab.models import load_model, save_model

    good = save_model(tiny_model, tmp_path / "good.keras").read_bytes()
    lam = _rewrite_config(good, lambda c: c["config"]["layers"][1].update(class_name="Lambda"))
    cases = {"lambda.keras": (lam, "uses 'Lambda'"),
             "pickle.keras": (pickle.dumps({"a": 1}), "is a pickle"),
             "h5.keras": (b"\x89HDF\r\n\x1a\n" + b"\0" * 64, "HDF5"),
             "empty.keras": (b"", "is empty"),
             "cut.keras": (good[:len(good) // 2], "not a .keras archive"),
             "zip.keras": (_zip_without_config(), "missing config.json")}
    for name, (content, match) in cases.items():
        path = crypto.write_bytes(tmp_path / name, content, key)
        assert path.read_bytes().startswith(MAGIC)
        with pytest.raises(UnsafeModelError, match=rf"{re.escape(name)}.*{match}"):
            load_model(path, key=key)


def _zip_without_config():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("payload.txt", "x")
    return out.getvalue()


def _spy_tempfile(monkeypatch):
    """Record every temporary file or directory made through the tempfile module."""
    calls = []
    for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile",
                 "TemporaryDirectory", "SpooledTemporaryFile"):
        original = getattr(tempfile, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(tempfile, name, spy)
    return calls


def test_no_plaintext_temporary_file_while_loading_or_saving(tiny_model, tmp_path, batch, key,
                                                              monkeypatch):
    """Keras extracts the weights of a .keras file next to it into a temporary directory
    when it thinks memory is short; robustlab hands Keras the decrypted archive as an
    in-memory file object, so even then nothing is written: not in the model's directory,
    not in the temporary directory, and tempfile is never asked."""
    from keras.src.saving import saving_lib

    from robustlab import _io
    from robustlab.models import load_model, save_model

    models, temp = tmp_path / "models", tmp_path / "tmp"
    models.mkdir()
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setattr(saving_lib, "is_memory_sufficient", lambda model: False)
    written = []
    real_write = _io.write_bytes

    def record(path, data):
        written.append(bytes(data[:8]))
        return real_write(path, data)

    monkeypatch.setattr(_io, "write_bytes", record)
    assets = []
    monkeypatch.setattr(saving_lib.DiskIOStore, "make", lambda self, p: assets.append(p))
    calls = _spy_tempfile(monkeypatch)
    path = save_model(tiny_model, models / "m.keras", key=key)
    # Saving: Keras makes its asset directory (mkdtemp, probed with a TemporaryFile) and
    # writes nothing into it (no layer has assets); the weights never spill into a
    # NamedTemporaryFile; the one file robustlab writes (atomic: mkstemp) is ciphertext.
    assert written == [MAGIC] and assets == []
    assert "NamedTemporaryFile" not in calls and calls.count("mkstemp") == 1
    assert list(temp.iterdir()) == []
    calls.clear()
    before = sorted(p.name for p in models.iterdir())
    loaded = load_model(path, key=key)
    assert calls == []
    assert sorted(p.name for p in models.iterdir()) == before == ["m.keras"]
    assert list(temp.iterdir()) == []
    np.testing.assert_allclose(np.asarray(loaded(batch[0])), np.asarray(tiny_model(batch[0])),
                               atol=1e-6)


def test_models_with_assets_are_not_encrypted(tmp_path, key, tiny_model):
    """Keras writes assets (vocabularies) to a temporary directory when saving and extracts
    them to one when loading: robustlab refuses both rather than put plaintext on disk."""
    import keras

    from robustlab.models import load_model, save_model

    lookup = keras.Sequential([keras.Input((1,), dtype="string"),
                               keras.layers.StringLookup(vocabulary=["a", "b"], name="vocab")])
    with pytest.raises(ValidationError, match="vocab store assets"):
        save_model(lookup, tmp_path / "lookup.keras", key=key)
    assert list(tmp_path.iterdir()) == []
    good = save_model(tiny_model, tmp_path / "good.keras").read_bytes()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item.filename))
        zout.writestr("assets/vocab/vocabulary.txt", "a\nb\n")
    path = crypto.write_bytes(tmp_path / "assets.keras", out.getvalue(), key)
    with pytest.raises(UnsafeModelError, match=r"assets\.keras' holds assets"):
        load_model(path, key=key)


# ------------------------------------------------------------------------ datasets (npz:)


def _npz_bytes(n=30):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x_train=rng.integers(0, 256, (n, 8, 8), dtype=np.uint8),
             y_train=rng.integers(0, 10, n), x_test=rng.integers(0, 256, (10, 8, 8),
                                                                  dtype=np.uint8),
             y_test=np.arange(10))
    return buf.getvalue()


def test_encrypted_npz_round_trip(tmp_path, monkeypatch, key_file):
    import robustlab as rl

    plain = tmp_path / "plain.npz"
    plain.write_bytes(_npz_bytes())
    enc = crypto.write_bytes(tmp_path / "enc.npz", _npz_bytes(), key_file)
    assert enc.read_bytes().startswith(MAGIC)
    expected = rl.load(f"npz:{plain}")
    got = rl.load(f"npz:{enc}", key=key_file)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    with pytest.raises(KeyRequiredError, match=r"enc\.npz' is encrypted"):
        rl.load(f"npz:{enc}")
    monkeypatch.setenv(crypto.KEY_FILE_ENV, str(key_file))
    assert rl.load(f"npz:{enc}").x_train.shape == expected.x_train.shape
    assert rl.load(f"npz:{plain}").x_train.shape == expected.x_train.shape  # plaintext too
    blob = enc.read_bytes()
    for positions in _regions(blob).values():
        enc.write_bytes(_flip(blob, positions[0]))
        with pytest.raises(DecryptionError, match=r"cannot decrypt '.*enc\.npz'"):
            rl.load(f"npz:{enc}")


# -------------------------------------------------------------------------------- reports


@pytest.fixture(scope="module")
def small_result(tiny_model, digits):
    from robustlab.evaluate import evaluate

    return evaluate(tiny_model, digits, "fgsm", "0, 0.1", n=20, checks=False, seed=0)


def test_encrypted_report_round_trip(small_result, tmp_path, key_file):
    from robustlab.manifest import verify
    from robustlab.report import write_report

    paths = write_report(small_result, tmp_path / "enc", key=key_file)
    for kind in ("json", "html"):
        assert paths[kind].read_bytes().startswith(MAGIC)
    report = json.loads(crypto.read_text(paths["json"], key_file))
    assert report == json.loads(json.dumps(small_result.to_dict()))
    html = crypto.read_text(paths["html"], key_file)
    assert html.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in html
    assert json.loads(paths["manifest"].read_text())["files"]  # plaintext: verify needs no key
    assert verify(tmp_path / "enc").ok
    with pytest.raises(KeyRequiredError, match=r"report\.json' is encrypted"):
        crypto.read_text(paths["json"])
    plain = write_report(small_result, tmp_path / "plain")  # no key: plaintext, as before
    assert json.loads(plain["json"].read_text()) == report


def test_encrypted_comparison_with_a_configured_key(small_result, tmp_path, monkeypatch,
                                                    key_file):
    from robustlab.evaluate import compare
    from robustlab.report import write_comparison

    monkeypatch.setenv(crypto.KEY_FILE_ENV, str(key_file))
    comparison = compare({"a": small_result, "b": small_result})
    paths = write_comparison(comparison, tmp_path)
    assert paths["json"].read_bytes().startswith(MAGIC)
    assert json.loads(crypto.read_text(paths["json"])) == \
        json.loads(json.dumps(comparison.to_dict()))
    assert "<html" in crypto.read_text(paths["html"])


# ------------------------------------------------------------------------------------ CLI


def test_cli_commands_and_exit_codes(tmp_path, capsys):
    from robustlab.cli import main

    k1, k2 = tmp_path / "k1.key", tmp_path / "k2.key"
    assert main(["keygen", str(k1)]) == 0 and main(["keygen", str(k2)]) == 0
    assert stat.S_IMODE(k1.stat().st_mode) == 0o600
    assert main(["keygen", str(k1)]) == 2  # never overwrites a key ...
    assert main(["keygen", str(k1), "--force"]) == 0  # ... unless told to
    assert "mode 0600" in capsys.readouterr().out
    f = tmp_path / "report.json"
    f.write_text('{"accuracy": 0.9}')
    assert main(["encrypt", str(f)]) == 2  # no key configured
    assert "a key is needed" in capsys.readouterr().err
    assert main(["encrypt", str(f), "--key", str(k1)]) == 0
    assert f.read_bytes().startswith(MAGIC)
    assert main(["encrypt", str(f), "--key", str(k1)]) == 2  # already encrypted
    assert main(["decrypt", str(f)]) == 2  # no key
    out = tmp_path / "plain.json"
    assert main(["decrypt", str(f), "--key", str(k2), "--out", str(out)]) == 1  # wrong key
    assert not out.exists()
    assert main(["decrypt", str(f), "--key", str(k1), "--out", str(out)]) == 0
    assert out.read_text() == '{"accuracy": 0.9}'
    assert main(["decrypt", str(out), "--key", str(k1)]) == 2  # not encrypted
    before = f.read_bytes()
    body = before[crypto.header_info(before)["body_offset"]:]
    assert main(["rewrap", str(f), "--key", str(k1), "--new-key", str(k2)]) == 0
    after = f.read_bytes()
    assert after[crypto.header_info(after)["body_offset"]:] == body
    assert main(["decrypt", str(f), "--key", str(k1), "--out", str(out)]) == 1  # old key: no
    assert main(["decrypt", str(f), "--key", str(k2), "--out", str(out)]) == 0
    tampered = _flip(after, len(after) - 1)
    f.write_bytes(tampered)
    assert main(["decrypt", str(f), "--key", str(k2)]) == 1
    assert f.read_bytes() == tampered  # nothing written over it
    assert main(["rewrap", str(f), "--key", str(k2), "--new-key", str(k1)]) == 1
    assert main(["decrypt", str(tmp_path / "missing.json"), "--key", str(k1)]) == 2
    assert main(["encrypt", str(out), "--key", str(tmp_path / "missing.key")]) == 2
    err = capsys.readouterr().err
    assert "cannot decrypt" in err and "missing.json" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1.key", "k2.key", "plain.json",
                                                          "report.json"]


def test_cli_in_place_round_trip_keeps_the_bytes(tmp_path, monkeypatch, key_file, capsys):
    from robustlab.cli import main

    monkeypatch.setenv(crypto.KEY_FILE_ENV, str(key_file))
    f = tmp_path / "weights.bin"
    data = os.urandom(4096)
    f.write_bytes(data)
    assert main(["encrypt", str(f)]) == 0 and f.read_bytes() != data
    assert main(["decrypt", str(f)]) == 0 and f.read_bytes() == data
    assert f"wrote {f}" in capsys.readouterr().out


# ------------------------------------------------------------------------------ benchmark


@pytest.mark.slow
def test_overhead_benchmark_runs(tmp_path):
    out = tmp_path / "CRYPTO.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "crypto_overhead.py"),
                           "--repeats", "2", "--out", str(out)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert "| model" in text and "| npz" in text and "overhead" in text

"""Signed blessings (robustlab.signing): key files, the canonical signed form, and a check
that refuses every kind of tampering with one line naming why."""

import base64
import hashlib
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from robustlab import signing
from robustlab.cli import main
from robustlab.errors import ModelNotFoundError, UnsafeModelError, ValidationError
from robustlab.signing import BlessingRefusedError, SigningError


@pytest.fixture()
def keys(tmp_path):
    private, public = tmp_path / "keys" / "signing.pem", tmp_path / "keys" / "signing.pub"
    kid = signing.generate_keypair(private, public)
    return private, public, kid


def _model(tmp_path, name="model.keras", content=b"PK\x03\x04 pretend keras archive"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _verdict(model, blessed=True):
    """What the gate writes before signing (robustlab.gate.Blessing.to_dict + model)."""
    return {"blessed": blessed, "reasons": [] if blessed else ["clean accuracy 90% < 95%"],
            "passed": ["clean accuracy 98.00% vs minimum 95.00%"], "report": "report.json",
            "report_sha256": hashlib.sha256(b"report").hexdigest(), "baseline": None,
            "policy": {"min_clean_accuracy": 0.95, "min_robust_accuracy": {"0.1": 0.35},
                       "use_lower_bound": True},
            "time": "2025-01-01T12:00:00+00:00", "run_id": "20250101T120000Z-1a2b3c4d",
            **signing.resolve_model(model.with_name("report.json"), model)}


def _write(path, blessing, indent=2):
    path.write_text(json.dumps(blessing, indent=indent, sort_keys=True) + "\n")
    return path


@pytest.fixture()
def blessed(tmp_path, keys):
    model = _model(tmp_path)
    path = _write(tmp_path / "blessing.json", signing.seal(_verdict(model), keys[0]))
    return model, path, keys[1]


# ------------------------------------------------------------------------ keys

def test_keygen_writes_a_private_key_0600_and_a_public_key(keys):
    private, public, kid = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    raw = signing.load_public_key(public).public_bytes(serialization.Encoding.Raw,
                                                      serialization.PublicFormat.Raw)
    assert kid == hashlib.sha256(raw).hexdigest()[:16]
    assert signing.key_id(signing.load_private_key(private)) == kid
    assert [p.name for p in private.parent.iterdir() if p.name.startswith(".")] == []


def test_keygen_refuses_to_overwrite_either_file(tmp_path, keys):
    private, public, _ = keys
    before = private.read_bytes()
    with pytest.raises(ValidationError, match="does not overwrite"):
        signing.generate_keypair(private, tmp_path / "new.pub")
    assert private.read_bytes() == before and not (tmp_path / "new.pub").exists()
    with pytest.raises(ValidationError, match="does not overwrite"):
        signing.generate_keypair(tmp_path / "new.pem", public)
    assert not (tmp_path / "new.pem").exists()  # nothing written when either exists
    with pytest.raises(ValidationError, match="two different files"):
        signing.generate_keypair(tmp_path / "same", tmp_path / "same")


def test_cli_signing_keygen(tmp_path, capsys):
    assert main(["signing-keygen", str(tmp_path / "k.pem"), str(tmp_path / "k.pub")]) == 0
    out = capsys.readouterr().out
    assert "mode 0600" in out and signing.key_id(signing.load_public_key(tmp_path / "k.pub")) \
        in out
    assert main(["signing-keygen", str(tmp_path / "k.pem"), str(tmp_path / "k2.pub")]) == 2
    assert "does not overwrite" in capsys.readouterr().err


def test_private_key_readable_by_others_is_refused(keys):
    private = keys[0]
    os.chmod(private, 0o644)
    with pytest.raises(SigningError, match="chmod 600"):
        signing.load_private_key(private)


def test_key_files_of_the_wrong_kind_are_refused(tmp_path, keys):
    private, public, _ = keys
    with pytest.raises(SigningError, match="is a private key"):
        signing.load_public_key(private)
    with pytest.raises(SigningError, match="PEM private key"):
        signing.load_private_key(public)  # mode 0644: refused either way
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    os.chmod(garbage, 0o600)
    for load in (signing.load_private_key, signing.load_public_key):
        with pytest.raises(SigningError):
            load(garbage)
    other = ec.generate_private_key(ec.SECP256R1())
    ec_pub = tmp_path / "ec.pub"
    ec_pub.write_bytes(other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(SigningError, match="Ed25519"):
        signing.load_public_key(ec_pub)
    with pytest.raises(SigningError, match="cannot read"):
        signing.load_public_key(tmp_path / "missing.pub")


# ------------------------------------------------------------------------ signing

def test_signature_covers_the_canonical_form_of_everything_but_the_signature(tmp_path, keys):
    model = _model(tmp_path)
    sealed = signing.seal(_verdict(model), keys[0])
    assert sealed["signed"] is True and sealed["signature_algorithm"] == "ed25519"
    assert sealed["key_id"] == keys[2] and sealed["verdict"] == "blessed"
    assert sealed["blessing_format"] == 1
    assert sealed["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    # checked here with cryptography alone: the documented message, nothing else
    message = json.dumps({k: v for k, v in sealed.items() if k != "signature"},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert signing.canonical_bytes(sealed) == message
    public = serialization.load_pem_public_key(keys[1].read_bytes())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(base64.b64decode(sealed["signature"]), message)  # raises if not


def test_an_unsigned_blessing_says_so(tmp_path):
    sealed = signing.seal(_verdict(_model(tmp_path)), None)
    assert sealed["signed"] is False and sealed["signature"] is None
    assert sealed["key_id"] is None and sealed["verdict"] == "blessed"


def test_a_blessed_model_verifies(blessed):
    model, path, public = blessed
    found = signing.verify_blessing(model, path, public)
    assert found["verdict"] == "blessed" and found["model"] == str(model)
    # layout does not matter, only content: compact or indented, any key order
    data = json.loads(path.read_text())
    path.write_text(json.dumps(dict(reversed(list(data.items())))))
    assert signing.verify_blessing(model, path, public)["blessed"] is True
    # and a parsed blessing with the model's digest (what load_model checks)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert signing.check_blessing(data, public, digest)["key_id"] == data["key_id"]


def test_resolve_model_defaults_to_model_keras_beside_the_report(tmp_path):
    report = tmp_path / "report.json"
    with pytest.raises(ValidationError, match="--no-model"):
        signing.resolve_model(report)
    assert signing.resolve_model(report, no_model=True) == {"model": None,
                                                            "model_sha256": None}
    model = _model(tmp_path)
    assert signing.resolve_model(report)["model_sha256"] == \
        hashlib.sha256(model.read_bytes()).hexdigest()
    with pytest.raises(ValidationError, match="either"):
        signing.resolve_model(report, model, no_model=True)
    with pytest.raises(ValidationError, match="does not exist"):
        signing.resolve_model(report, tmp_path / "other.keras")


# ------------------------------------------------------------------------ tampering

def _refused(model, path, public, reason):
    with pytest.raises(BlessingRefusedError) as info:
        signing.verify_blessing(model, path, public)
    assert info.value.reason == reason, str(info.value)
    assert str(info.value).startswith(f"{reason}: ") and "\n" not in str(info.value)
    assert isinstance(info.value, UnsafeModelError)  # load_model's refusal type
    return str(info.value)


@pytest.mark.parametrize("change", [
    pytest.param(lambda b: b.update(blessed=True, verdict="blessed", reasons=[]),
                 id="refusal-turned-into-blessing"),
    pytest.param(lambda b: b.update(model_sha256=hashlib.sha256(b"other").hexdigest()),
                 id="model-digest"),
    pytest.param(lambda b: b.update(report_sha256=hashlib.sha256(b"x").hexdigest()),
                 id="report-digest"),
    pytest.param(lambda b: b["policy"].update(min_clean_accuracy=0.1), id="policy"),
    pytest.param(lambda b: b.update(time="2030-01-01T00:00:00+00:00"), id="time"),
    pytest.param(lambda b: b.update(extra="field"), id="added-field"),
    pytest.param(lambda b: b.pop("run_id"), id="removed-field"),
    pytest.param(lambda b: b.update(policy={**b["policy"], "min_clean_accuracy": 0.95000001}),
                 id="tiny-number-change"),
])
def test_any_edit_of_a_signed_blessing_is_a_bad_signature(tmp_path, keys, change):
    model = _model(tmp_path)
    sealed = signing.seal(_verdict(model, blessed=False), keys[0])
    change(sealed)
    if sealed.get("model_sha256") != hashlib.sha256(model.read_bytes()).hexdigest():
        model.write_bytes(b"other")  # the forger swaps the model to match, too
    path = _write(tmp_path / "blessing.json", sealed)
    line = _refused(model, path, keys[1], "bad signature")
    assert "changed after it was signed" in line


@pytest.mark.parametrize("signature", ["", "!!!not base64!!!", "AAAA",
                                       base64.b64encode(bytes(64)).decode()])
def test_a_damaged_signature_is_a_bad_signature(blessed, signature):
    model, path, public = blessed
    data = json.loads(path.read_text())
    data["signature"] = signature
    _write(path, data)
    _refused(model, path, public, "bad signature")


def test_a_model_changed_after_blessing_is_a_digest_mismatch(blessed):
    model, path, public = blessed
    model.write_bytes(model.read_bytes() + b"\0")
    line = _refused(model, path, public, "digest mismatch")
    assert "changed after it was blessed" in line


def test_another_keys_blessing_is_the_wrong_key(tmp_path, blessed):
    model, path, _ = blessed
    other_pub = tmp_path / "other.pub"
    signing.generate_keypair(tmp_path / "other.pem", other_pub)
    line = _refused(model, path, other_pub, "wrong key")
    assert signing.key_id(signing.load_public_key(other_pub)) in line


def test_a_blessing_re_signed_by_another_key_claiming_ours_is_refused(tmp_path, keys):
    model = _model(tmp_path)
    signing.generate_keypair(tmp_path / "evil.pem", tmp_path / "evil.pub")
    forged = signing.seal(_verdict(model), tmp_path / "evil.pem")
    _refused(model, _write(tmp_path / "b1.json", forged), keys[1], "wrong key")
    forged["key_id"] = keys[2]  # claims our key id: the signature is not ours
    _refused(model, _write(tmp_path / "b2.json", forged), keys[1], "bad signature")


def test_a_refused_verdict_does_not_let_the_model_through(tmp_path, keys):
    model = _model(tmp_path)
    path = _write(tmp_path / "blessing.json", signing.seal(_verdict(model, False), keys[0]))
    line = _refused(model, path, keys[1], "not blessed")
    assert "clean accuracy 90%" in line


def test_unsigned_blessings_are_refused(tmp_path, keys):
    model = _model(tmp_path)
    path = _write(tmp_path / "blessing.json", signing.seal(_verdict(model), None))
    _refused(model, path, keys[1], "unsigned")
    signed = signing.seal(_verdict(model), keys[0])
    signed["signed"] = False  # the flag is signed too, but refused before anything else
    _refused(model, _write(path, signed), keys[1], "unsigned")


def test_a_blessing_without_a_model_lets_no_model_through(tmp_path, keys):
    model = _model(tmp_path)
    verdict = {**_verdict(model), "model": None, "model_sha256": None}
    path = _write(tmp_path / "blessing.json", signing.seal(verdict, keys[0]))
    _refused(model, path, keys[1], "no model")


@pytest.mark.parametrize("text", [
    "", "{", "[1, 2]", "null", '{"blessed": true}', "\xff\xfe",
    '{"blessing_format": 1, "blessed": NaN}',
])
def test_malformed_blessings_are_refused(blessed, text):
    model, path, public = blessed
    path.write_bytes(text.encode("latin-1"))
    _refused(model, path, public, "malformed")


def test_a_duplicate_field_is_malformed(blessed):
    """Two parsers could read two verdicts from one file: refused, even though the signed
    (last) value would verify."""
    model, path, public = blessed
    text = path.read_text()
    path.write_text(text.replace('"blessed": true', '"blessed": false, "blessed": true', 1))
    _refused(model, path, public, "malformed")


def test_truncated_blessing_is_malformed(blessed):
    model, path, public = blessed
    path.write_bytes(path.read_bytes()[:-40])
    _refused(model, path, public, "malformed")


def test_unreadable_inputs_are_signing_errors(tmp_path, blessed):
    model, path, public = blessed
    with pytest.raises(ModelNotFoundError):
        signing.verify_blessing(tmp_path / "missing.keras", path, public)
    with pytest.raises(SigningError, match="cannot read the blessing"):
        signing.verify_blessing(model, tmp_path / "missing.json", public)
    with pytest.raises(SigningError, match="cannot read the public key"):
        signing.verify_blessing(model, path, tmp_path / "missing.pub")


# ------------------------------------------------------------------------ the CLI

def _cli(capsys, *args):
    status = main(["verify-blessing", *map(str, args)])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_cli_verify_blessing_exit_codes(tmp_path, capsys, blessed):
    model, path, public = blessed
    status, out, err = _cli(capsys, model, "--blessing", path, "--public-key", public)
    assert status == 0 and "ok:" in out and err == ""
    status, _, err = _cli(capsys, tmp_path / "none.keras", "--blessing", path,
                          "--public-key", public)
    assert status == 2 and "does not exist" in err
    status, _, err = _cli(capsys, model, "--blessing", tmp_path / "none.json",
                          "--public-key", public)
    assert status == 2 and "cannot read the blessing" in err
    status, _, err = _cli(capsys, model, "--blessing", path, "--public-key", path)
    assert status == 2 and "PEM public key" in err
    model.write_bytes(b"changed")
    status, out, err = _cli(capsys, model, "--blessing", path, "--public-key", public)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(
        "robustlab verify-blessing: refused: digest mismatch: ")
    path.write_text(path.read_text().replace('"verdict": "blessed"', '"verdict": "Blessed"'))
    status, _, err = _cli(capsys, model, "--blessing", path, "--public-key", public)
    assert status == 1 and "refused: bad signature:" in err and err.count("\n") == 1


# ------------------------------------------------------------------------ the gate signs

POLICY = "min_clean_accuracy: 0.95\nmin_robust_accuracy:\n  0.1: 0.35\n"


def _sealed_run(tmp_path, clean=0.98):
    """A folder as `robustlab run` leaves it: report.json, model.keras, manifest.json."""
    from robustlab.manifest import update_manifest

    folder = tmp_path / "run"
    folder.mkdir()
    points = [{"epsilon": e, "accuracy": a, "ci_low": a - 0.05, "ci_high": a + 0.05}
              for e, a in ((0.0, clean), (0.1, 0.5))]
    (folder / "report.json").write_text(json.dumps({
        "clean_accuracy": clean, "clean_ci": [clean - 0.01, clean + 0.01],
        "epsilons": [0.0, 0.1], "worst_case": {"points": points},
        "checks": [{"name": "gradients", "status": "pass", "evidence": "ok"}]}))
    _model(folder)
    update_manifest(folder, device={"type": "CPU", "name": "test", "count": 1})
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return folder, policy


def _gate(capsys, folder, policy, *extra):
    status = main(["gate", str(folder / "report.json"), "--policy", str(policy),
                   *map(str, extra)])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_gate_signs_and_deployment_verifies(tmp_path, capsys, keys):
    from robustlab.manifest import verify

    folder, policy = _sealed_run(tmp_path)
    status, out, _ = _gate(capsys, folder, policy, "--signing-key", keys[0])
    assert status == 0 and f"signed with key {keys[2]}" in out
    blessing = json.loads((folder / "blessing.json").read_text())
    assert blessing["signed"] is True and blessing["key_id"] == keys[2]
    assert blessing["model"] == str(folder / "model.keras")
    assert blessing["report_sha256"] == hashlib.sha256(
        (folder / "report.json").read_bytes()).hexdigest()
    assert verify(folder).ok  # the manifest records the signed verdict as written
    status, out, _ = _cli(capsys, folder / "model.keras", "--blessing",
                          folder / "blessing.json", "--public-key", keys[1])
    assert status == 0 and "ok:" in out
    model = tmp_path / "deployed.keras"  # a copy elsewhere is the same model
    model.write_bytes((folder / "model.keras").read_bytes())
    assert signing.verify_blessing(model, folder / "blessing.json", keys[1])["blessed"]


def test_gate_signs_refusals_too(tmp_path, capsys, keys):
    folder, policy = _sealed_run(tmp_path, clean=0.90)
    assert _gate(capsys, folder, policy, "--signing-key", keys[0])[0] == 1
    status, _, err = _cli(capsys, folder / "model.keras", "--blessing",
                          folder / "blessing.json", "--public-key", keys[1])
    assert status == 1 and "refused: not blessed:" in err and "clean accuracy 90.00%" in err


def test_gate_without_a_key_writes_an_unsigned_verdict_and_says_so(tmp_path, capsys, keys):
    folder, policy = _sealed_run(tmp_path)
    status, _, err = _gate(capsys, folder, policy)
    assert status == 0 and "is not signed (no --signing-key)" in err
    assert json.loads((folder / "blessing.json").read_text())["signed"] is False
    status, _, err = _cli(capsys, folder / "model.keras", "--blessing",
                          folder / "blessing.json", "--public-key", keys[1])
    assert status == 1 and "refused: unsigned:" in err


def test_gate_refuses_to_run_without_a_model_unless_told(tmp_path, capsys, keys):
    folder, policy = _sealed_run(tmp_path)
    assert _gate(capsys, folder, policy, "--signing-key", keys[0])[0] == 0
    (folder / "model.keras").unlink()
    status, _, err = _gate(capsys, folder, policy, "--signing-key", keys[0])
    assert status == 2 and "--no-model" in err
    assert not (folder / "blessing.json").exists()  # no earlier verdict survives
    other = _model(tmp_path, "elsewhere.keras", b"another model")
    report = tmp_path / "loose" / "report.json"
    report.parent.mkdir()
    report.write_bytes((folder / "report.json").read_bytes())
    assert main(["gate", str(report), "--policy", str(policy), "--model", str(other),
                 "--signing-key", str(keys[0])]) == 0
    assert signing.verify_blessing(other, report.with_name("blessing.json"), keys[1])
    assert main(["gate", str(report), "--policy", str(policy), "--no-model",
                 "--signing-key", str(keys[0])]) == 0
    blessing = json.loads(report.with_name("blessing.json").read_text())
    assert blessing["model"] is None and blessing["model_sha256"] is None
    capsys.readouterr()
    status, _, err = _cli(capsys, other, "--blessing", report.with_name("blessing.json"),
                          "--public-key", keys[1])
    assert status == 1 and "refused: no model:" in err


def test_gate_with_an_unusable_key_fails_and_leaves_no_verdict(tmp_path, capsys, keys):
    folder, policy = _sealed_run(tmp_path)
    assert _gate(capsys, folder, policy, "--signing-key", keys[0])[0] == 0
    os.chmod(keys[0], 0o644)
    status, _, err = _gate(capsys, folder, policy, "--signing-key", keys[0])
    assert status == 2 and "chmod 600" in err and not (folder / "blessing.json").exists()
    status, _, err = _gate(capsys, folder, policy, "--signing-key", keys[1])
    assert status == 2 and "PEM private key" in err


# ------------------------------------------------------------------------ load_model

def test_load_model_requires_the_blessing_before_anything_parses_the_file(
        tmp_path, keys, tiny_model, monkeypatch):
    from keras.src.saving import saving_lib

    from robustlab import models
    from robustlab.errors import InputTypeError

    path = models.save_model(tiny_model, tmp_path / "model.keras")
    good = _write(tmp_path / "blessing.json", signing.seal(_verdict(path), keys[0]))
    loaded = models.load_model(path, require_blessing=(good, keys[1]))
    assert loaded.count_params() == tiny_model.count_params()

    def parsed(*args, **kwargs):
        raise AssertionError("the file was parsed before the blessing was checked")

    monkeypatch.setattr(models, "_check_keras_archive", parsed)
    monkeypatch.setattr(saving_lib, "load_model", parsed)
    unsigned = _write(tmp_path / "unsigned.json", signing.seal(_verdict(path), None))
    with pytest.raises(BlessingRefusedError, match="^unsigned: "):
        models.load_model(path, require_blessing=(unsigned, keys[1]))
    signing.generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    with pytest.raises(BlessingRefusedError, match="^wrong key: "):
        models.load_model(path, require_blessing=(good, tmp_path / "other.pub"))
    with pytest.raises(SigningError, match="cannot read the blessing"):
        models.load_model(path, require_blessing=(tmp_path / "none.json", keys[1]))
    with pytest.raises(InputTypeError, match="require_blessing"):
        models.load_model(path, require_blessing=str(good))
    path.write_bytes(path.read_bytes() + b"\0")  # changed after it was blessed
    with pytest.raises(UnsafeModelError, match=r"^digest mismatch: model file .*model\.keras"):
        models.load_model(path, require_blessing=(good, keys[1]))

"""The CI gate: bless a ``report.json`` against a policy, or refuse it with reasons.

A policy is a small YAML file::

    min_clean_accuracy: 0.95        # fraction, not percent
    min_robust_accuracy:            # worst case over attacks, per ε (pixel units)
      0.1: 0.50
      "8/255": 0.30
    use_lower_bound: true           # compare the 95% interval's lower end (stricter)
    max_drop: 0.02                  # largest allowed fall vs the baseline report, any ε
    baseline: baseline/report.json  # relative to the policy file; --baseline overrides
    allow_failed_checks: false      # a failed sanity check refuses the report
    allow_warnings: true

A policy must set at least one threshold (``min_clean_accuracy``, ``min_robust_accuracy``
or ``max_drop``); unknown settings, a setting given twice (duplicate YAML keys) and an ε
listed twice are refused: none of them may loosen the gate silently.

When the report's folder has a ``manifest.json`` (``robustlab run`` wrote it), the gate
first verifies the folder against it and refuses a folder that does not verify, naming the
files that changed, went missing or appeared; the numbers of such a report are not judged.

``robustlab gate report.json --policy policy.yaml`` (:func:`run_gate`) removes any earlier
verdict first, then writes ``blessing.json`` next to the report (blessed or not, with every
reason) and exits 0 when blessed, 1 when not, 2 when the report or policy cannot be read
(and then no verdict is left). In a sealed folder it records only ``blessing.json``'s own
digest in the manifest (every other entry stays as the run sealed it, so ``robustlab
verify`` still catches a changed report) and holds the folder's lock, so it never judges a
folder that a ``robustlab run`` is replacing.

The verdict names the model the report evaluated (``--model PATH``, default ``model.keras``
beside the report) with its sha256; without one the gate refuses to run unless
``--no-model``. With ``--signing-key PRIVATE`` (``signing_key=``) the verdict is signed with
Ed25519 over its canonical form, so deployment can check it (``robustlab verify-blessing``,
``load_model(..., require_blessing=...)``; see :mod:`robustlab.signing`); without a key it
is written unsigned and says so (``"signed": false``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from robustlab import crypto
from robustlab._io import folder_lock, sha256_file, write_json
from robustlab._validate import check_float, parse_float
from robustlab.errors import DecryptionError, InputTypeError, ValidationError
from robustlab.manifest import MANIFEST, is_output_folder, read_manifest, record_file, verify
from robustlab.signing import key_id, load_private_key, resolve_model, seal

__all__ = ["Policy", "Blessing", "gate", "run_gate", "load_report"]

_THRESHOLDS = ("min_clean_accuracy", "min_robust_accuracy", "max_drop")


def _read(path: Path, what: str, kind: str, parse: Callable[[str], Any],
          error: type[Exception]) -> Any:
    """``parse`` the text of ``path`` (decrypted when it is encrypted, see
    :mod:`robustlab.crypto`); an unreadable or malformed file is a ValidationError naming the
    file."""
    try:
        return parse(crypto.read_text(path))  # encrypted reports too, when a key is set
    except DecryptionError:  # no key, wrong key, tampered: named by robustlab.crypto
        raise
    except UnicodeDecodeError as exc:
        raise ValidationError(f"expected {what} {str(path)!r} to be UTF-8 {kind}: {exc}") \
            from None
    except OSError as exc:
        raise ValidationError(f"expected a readable {what} file, got {str(path)!r}: "
                              f"{exc.strerror}") from None
    except error as exc:
        raise ValidationError(f"expected {what} {str(path)!r} to be {kind}: {exc}") from None


def _load_yaml_strictly(text: str) -> Any:
    """``yaml.safe_load`` that refuses a mapping with the same key twice (naming the key and
    both lines) instead of letting the later value win: in a policy the later value may be
    the looser one, and nobody reading the file would notice."""
    import yaml

    class StrictSafeLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                self.flatten_mapping(node)  # merge keys (<<) count as keys too
                first: dict[Any, int] = {}
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    try:
                        line = first.setdefault(key, key_node.start_mark.line + 1)
                    except TypeError:  # unhashable: SafeLoader refuses it below
                        continue
                    if line != key_node.start_mark.line + 1:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"found duplicate key {key!r} on line "
                            f"{key_node.start_mark.line + 1} (first on line {line}); each "
                            f"setting may appear once", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    # SafeLoader's constructors (no arbitrary objects); only the duplicate check is added
    return yaml.load(text, Loader=StrictSafeLoader)  # noqa: S506  # nosec B506


@dataclass(frozen=True)
class Policy:
    """Thresholds a report must meet (accuracies as fractions in [0, 1])."""

    min_clean_accuracy: float | None = None
    min_robust_accuracy: dict[float, float] = field(default_factory=dict)
    use_lower_bound: bool = False
    max_drop: float | None = None
    baseline: str | None = None
    allow_failed_checks: bool = False
    allow_warnings: bool = True

    def __post_init__(self) -> None:
        if self.min_clean_accuracy is not None:
            object.__setattr__(self, "min_clean_accuracy", check_float(
                "min_clean_accuracy", self.min_clean_accuracy, low=0.0, high=1.0))
        if self.max_drop is not None:
            object.__setattr__(self, "max_drop", check_float("max_drop", self.max_drop,
                                                             low=0.0, high=1.0))
        if not isinstance(self.min_robust_accuracy, dict):
            raise InputTypeError(f"expected min_robust_accuracy to map epsilon to accuracy, "
                                 f"got {self.min_robust_accuracy!r}")
        table: dict[float, float] = {}
        given: dict[float, Any] = {}
        for eps, acc in self.min_robust_accuracy.items():
            e = parse_float("min_robust_accuracy epsilon", eps)
            if not (math.isfinite(e) and e >= 0):
                raise ValidationError(f"expected min_robust_accuracy epsilons >= 0, got {eps!r}")
            same = next((k for k in table if math.isclose(k, e, rel_tol=1e-6, abs_tol=1e-9)),
                        None)
            if same is not None:  # "0.1" and "1/10": one would silently replace the other
                raise ValidationError(f"expected each ε once in min_robust_accuracy, got "
                                      f"{given[same]!r} and {eps!r} (both ε {e:g})")
            table[e] = check_float(f"min_robust_accuracy[{eps}]", acc, low=0.0, high=1.0)
            given[e] = eps
        object.__setattr__(self, "min_robust_accuracy", table)
        for name in ("use_lower_bound", "allow_failed_checks", "allow_warnings"):
            if not isinstance(getattr(self, name), bool):
                raise InputTypeError(f"expected {name} to be true or false, got "
                                     f"{getattr(self, name)!r}")
        if self.min_clean_accuracy is None and not table and self.max_drop is None:
            raise ValidationError(f"expected the policy to set at least one threshold "
                                  f"({', '.join(_THRESHOLDS)}); without one it would bless "
                                  f"every report")

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a YAML policy; unknown keys, duplicate keys and an empty file are refused (a
        typo must not loosen the gate). A relative ``baseline`` is resolved against the
        policy file's folder."""
        import yaml

        path = Path(path)
        data = _read(path, "policy", "YAML", _load_yaml_strictly, yaml.YAMLError)
        if data is None:
            raise ValidationError(f"expected policy {str(path)!r} to set at least one "
                                  f"threshold ({', '.join(_THRESHOLDS)}); it is empty, and "
                                  f"an empty policy would bless every report")
        if not isinstance(data, dict):
            raise ValidationError(f"expected policy {str(path)!r} to be a mapping of settings, "
                                  f"got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise ValidationError(f"expected policy settings among {sorted(known)}, got "
                                  f"unknown {unknown} in {str(path)!r}")
        if data.get("baseline"):
            data["baseline"] = str((path.parent / str(data["baseline"])).resolve())
        return cls(**data)


@dataclass(frozen=True)
class Blessing:
    """The gate's verdict. ``reasons`` say why it was refused (empty when blessed);
    ``passed`` what was verified; ``report_sha256`` and ``run_id`` say which report of
    which run it judged; ``model`` and ``model_sha256`` which model file the report
    evaluated (None: blessed without a model); ``key_id`` which key signed the written
    verdict (None: unsigned)."""

    blessed: bool
    reasons: tuple[str, ...]
    passed: tuple[str, ...]
    report: str
    report_sha256: str
    baseline: str | None
    policy: dict[str, Any]
    time: str
    run_id: str | None = None  # the sealed run whose folder was verified, if any
    baseline_sha256: str | None = None
    model: str | None = None
    model_sha256: str | None = None
    key_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["policy"] = {**self.policy, "min_robust_accuracy": {
            str(k): v for k, v in self.policy["min_robust_accuracy"].items()}}
        return out


def load_report(path: str | Path) -> dict[str, Any]:
    """A ``report.json`` written by :func:`robustlab.write_report`, checked for the fields the
    gate reads."""
    path = Path(path)
    data = _read(path, "report", "JSON", json.loads, json.JSONDecodeError)
    missing = [k for k in ("clean_accuracy", "clean_ci", "worst_case", "epsilons")
               if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValidationError(f"expected a robustlab report.json, but {str(path)!r} has no "
                              f"{missing}")
    return data


def _point(report: dict[str, Any], eps: float) -> dict[str, Any] | None:
    for p in report["worst_case"]["points"]:
        if math.isclose(p["epsilon"], eps, rel_tol=1e-6, abs_tol=1e-9):
            return p
    return None


def _folder_integrity(path: Path, what: str) -> tuple[bool, str | None, str]:
    """Whether the folder of ``path`` verifies against its ``manifest.json``: ``(ok,
    run_id, line)``; ``(True, None, "")`` for a file in a folder without a manifest (a
    loose report: nothing to verify)."""
    folder = path.parent
    if not (folder / MANIFEST).is_file():
        return True, None, ""
    try:
        found = verify(folder)
    except ValidationError as exc:
        return False, None, f"{what} folder {str(folder)!r} cannot be verified: {exc}"
    if not found.ok:
        return False, found.run_id, (
            f"{what} folder {str(folder)!r} does not verify against its manifest.json "
            f"(changed after the run sealed it): " + "; ".join(found.problems()))
    if path.name not in read_manifest(folder)["files"]:
        return False, found.run_id, (f"{what} {path.name} is not sealed in "
                                     f"{str(folder)!r}'s manifest.json")
    return True, found.run_id, (f"{what} folder {str(folder)!r} verifies: {found.checked} "
                                f"files match its manifest.json (run {found.run_id})")


def gate(report: str | Path, policy: Policy | str | Path,
         baseline: str | Path | None = None) -> Blessing:
    """Judge ``report`` (a ``report.json`` path) against ``policy`` (a :class:`Policy` or a
    YAML path); ``baseline`` (a report path) overrides the policy's.

    When the report's folder has a ``manifest.json`` the folder must verify against it
    first: otherwise the report is refused, with the files that changed, went missing or
    appeared as the reason, and its numbers are not judged. A baseline in a folder with a
    manifest must verify too.
    """
    policy = policy if isinstance(policy, Policy) else Policy.load(policy)
    data = load_report(report)
    base_path = baseline if baseline is not None else policy.baseline
    reasons: list[str] = []
    passed: list[str] = []
    intact, run_id, line = _folder_integrity(Path(report), "report")
    if line:
        (passed if intact else reasons).append(line)
    if intact:
        _judge(data, policy, base_path, reasons, passed)
    digest = sha256_file(report)
    return Blessing(
        blessed=not reasons, reasons=tuple(reasons), passed=tuple(passed),
        report=str(report), report_sha256=digest,
        baseline=None if base_path is None else str(base_path), policy=asdict(policy),
        time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        run_id=run_id, baseline_sha256=None if base_path is None or not Path(
            base_path).is_file() else sha256_file(base_path))


def _judge(data: dict[str, Any], policy: Policy, base_path: str | Path | None,
           reasons: list[str], passed: list[str]) -> None:
    """The policy's thresholds and checks against the report's numbers."""

    def judge(ok: bool, text: str) -> None:
        (passed if ok else reasons).append(text)

    lower = policy.use_lower_bound
    what = "95% lower bound of " if lower else ""
    if policy.min_clean_accuracy is not None:
        value = data["clean_ci"][0] if lower else data["clean_accuracy"]
        judge(value >= policy.min_clean_accuracy,
              f"{what}clean accuracy {100 * value:.2f}% vs minimum "
              f"{100 * policy.min_clean_accuracy:.2f}%")
    for eps, minimum in sorted(policy.min_robust_accuracy.items()):
        point = _point(data, eps)
        if point is None:
            reasons.append(f"report has no ε {eps:g} (it has {data['epsilons']})")
            continue
        value = point["ci_low"] if lower else point["accuracy"]
        judge(value >= minimum, f"{what}worst-case robust accuracy at ε {eps:g} "
              f"{100 * value:.2f}% vs minimum {100 * minimum:.2f}%")
    checks = data.get("checks", [])
    if not checks and not policy.allow_failed_checks:
        reasons.append("report has no sanity checks (evaluate with checks=True)")
    for check in checks:
        status = check.get("status")
        if status == "fail" and not policy.allow_failed_checks:
            reasons.append(f"check {check.get('name')} failed: {check.get('evidence')}")
        elif status == "warn" and not policy.allow_warnings:
            reasons.append(f"check {check.get('name')} warned: {check.get('evidence')}")
    if checks and not any(r.startswith("check ") for r in reasons):
        passed.append(f"{len(checks)} sanity checks: " + ", ".join(
            f"{c.get('name')} {c.get('status')}" for c in checks))
    if policy.max_drop is not None:
        if base_path is None:
            raise ValidationError("expected a baseline report (policy 'baseline' or "
                                  "--baseline) because the policy sets max_drop")
        base = load_report(base_path)
        intact, _, line = _folder_integrity(Path(base_path), "baseline")
        if not intact:
            reasons.append(line)
        pairs = [("clean accuracy", base["clean_accuracy"], data["clean_accuracy"])]
        for bp in base["worst_case"]["points"]:
            if bp["epsilon"] == 0:
                continue
            point = _point(data, bp["epsilon"])
            if point is None:
                reasons.append(f"report has no ε {bp['epsilon']:g} to compare with the "
                               f"baseline")
                continue
            pairs.append((f"worst-case accuracy at ε {bp['epsilon']:g}", bp["accuracy"],
                          point["accuracy"]))
        for name, before, now in pairs:
            drop = before - now
            judge(drop <= policy.max_drop + 1e-12,
                  f"{name} {100 * now:.2f}% vs baseline {100 * before:.2f}% (drop "
                  f"{100 * drop:.2f} pt, maximum {100 * policy.max_drop:.2f} pt)")


def _forget_verdict(out: Path) -> None:
    """Remove an earlier verdict at ``out``, and its entry in a sealed folder's manifest."""
    out.unlink(missing_ok=True)
    if is_output_folder(out.parent) and out.name in read_manifest(out.parent)["files"]:
        record_file(out.parent, out.name)


def _check_model_is_the_evaluated_one(report: Path, judged: dict[str, str | None]) -> None:
    """Refuse to bless a model file that is not the one the report's run evaluated, where
    the run says which: the model sealed in the report's folder (``model.keras`` in its
    manifest), or the digest the run pinned (parameter ``model_sha256``)."""
    digest = judged["model_sha256"]
    if digest is None:
        return
    folder = report.parent
    if is_output_folder(folder):
        sealed = read_manifest(folder)["files"].get("model.keras")
        if isinstance(sealed, dict) and sealed.get("sha256") != digest:
            raise ValidationError(
                f"expected the model the report evaluated: {str(folder / 'model.keras')!r} is "
                f"sealed with it (sha256 {str(sealed.get('sha256'))[:16]}...), got "
                f"{judged['model']!r} with sha256 {digest[:16]}...; refusing to bless a "
                f"model this report did not evaluate")
    pinned = load_report(report).get("parameters", {}).get("model_sha256")
    if isinstance(pinned, str) and pinned.strip() and pinned.strip().lower() != digest:
        raise ValidationError(f"expected the model the report evaluated (its run pinned "
                              f"model_sha256 {pinned[:16]}...), got {judged['model']!r} with "
                              f"sha256 {digest[:16]}...; refusing to bless it")


def run_gate(report: str | Path, policy: Policy | str | Path,
             baseline: str | Path | None = None, out: str | Path | None = None, *,
             on_wait: Callable[[str], None] | None = None,
             prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
             model: str | Path | None = None, no_model: bool = False,
             signing_key: str | Path | None = None) -> tuple[Blessing, Path]:
    """What ``robustlab gate`` does: judge ``report`` with :func:`gate` and write the verdict
    to ``out`` (default ``blessing.json`` beside the report). Returns ``(blessing, path)``.

    Any earlier verdict at ``out`` is removed first, so a run that raises (an unreadable
    report or policy) leaves no verdict at all rather than an old one. When ``out``'s folder
    is sealed (has a ``manifest.json``) the verdict's own digest is recorded there and
    nothing else is rewritten. Sealed folders involved are locked for the duration (waiting
    for a ``robustlab run`` that is replacing them; ``on_wait`` is told). ``prepare``, when
    given, turns the verdict's dict into what is written (to add fields: the recorded
    digest is that of the file as written).

    ``model`` is the model file the report evaluated (default ``model.keras`` beside the
    report); its sha256 goes into the verdict. A missing model is a ValidationError unless
    ``no_model``. ``signing_key`` (a PEM private key file, see
    :func:`robustlab.signing.generate_keypair`) signs the verdict as written, after
    ``prepare``; an unusable key is an error raised after the earlier verdict is removed.
    """
    report = Path(report)
    target = Path(out) if out is not None else report.with_name("blessing.json")
    if target.name == MANIFEST or (target.exists() and report.exists()
                                   and target.resolve() == report.resolve()):
        raise ValidationError(f"expected the verdict to go to its own file, got "
                              f"{str(target)!r}")
    folders = sorted({p.parent.resolve() for p in (report, target)
                      if (p.parent / MANIFEST).is_file()})
    with contextlib.ExitStack() as stack:
        for folder in folders:
            stack.enter_context(folder_lock(folder, wait=True, on_wait=on_wait))
        _forget_verdict(target)
        key = load_private_key(signing_key) if signing_key is not None else None
        judged = resolve_model(report, model, no_model=no_model)
        verdict_only = gate(report, policy, baseline)  # verifies the sealed folder first
        _check_model_is_the_evaluated_one(Path(report), judged)
        blessing = replace(verdict_only, model=judged["model"],
                           model_sha256=judged["model_sha256"],
                           key_id=None if key is None else key_id(key))
        verdict = blessing.to_dict()
        write_json(target, seal(prepare(verdict) if prepare is not None else verdict, key))
        if is_output_folder(target.parent):
            record_file(target.parent, target.name)
    return blessing, target

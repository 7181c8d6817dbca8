"""Workflows: the steps a notebook or the CLI strings together, each one call.

:func:`load_or_train` loads a model file or trains one (plainly, or adversarially with a
``method``); :class:`ReportConfig` carries the report notebook's parameters, parsed once,
through loading, training, evaluation and the report, so a parameter cannot drift out of
the recorded run. :func:`privacy_study` trains standard, adversarially trained, DP-SGD and
DP + adversarially trained models side by side, audits each for membership leakage and
compares privacy, robustness and accuracy (``notebooks/privacy_audit.ipynb``).
:func:`poisoning_study` poisons a training set, inspects it, sanitises it and retrains
(``notebooks/poisoning_lab.ipynb``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustlab._validate import (
    check_float,
    check_int,
    check_optional_int,
    check_seed,
    check_sha256,
    parse_enum,
    parse_epsilons,
    split_list,
)
from robustlab.attacks import AttackSpec, parse_attacks
from robustlab.checks import check_logits
from robustlab.crossval import cross_validate
from robustlab.data import Dataset, check_name, load
from robustlab.distribute import STRATEGIES
from robustlab.errors import InputTypeError, ModelNotFoundError, ValidationError
from robustlab.evaluate import compare, evaluate
from robustlab.inference import num_outputs, predict_labels
from robustlab.membership import membership_audit
from robustlab.models import build_model, load_model, save_model
from robustlab.privacy import DPConfig
from robustlab.report import write_comparison, write_poisoning, write_report
from robustlab.results import (
    Comparison,
    CrossValidationResult,
    EvaluationResult,
    ModelOutcome,
    MonitorEvaluation,
    PoisoningResult,
    PrivacyResult,
)
from robustlab.stats import wilson_interval
from robustlab.training import (
    Method,
    TrainingConfig,
    TrainingResult,
    train,
    train_adversarial,
)
from robustlab.types import Backend, parse_norm

__all__ = ["load_or_train", "ReportConfig", "privacy_study", "STUDY_MODELS", "poisoning_study",
           "POISONING_ATTACKS"]


def load_or_train(model_path: str | os.PathLike[str] | None, data: Dataset, *,
                  method: str | None = None, save_to: str | os.PathLike[str] | None = None,
                  sha256: str | None = None, seed: int = 0, epochs: int | None = None,
                  **training: Any) -> tuple[Any, TrainingResult | None]:
    """Load ``model_path`` if given (non-empty; pinned to ``sha256`` when given, see
    :func:`~robustlab.models.load_model`), else build the default model for ``data`` and
    train it.

    ``method`` None trains plainly with Keras ``fit`` (:func:`~robustlab.training.train`;
    ``training`` may set ``batch_size``, ``learning_rate``); a method (``standard``,
    ``pgd``, ``fgsm_rs``, ``trades``) trains inside :class:`~robustlab.training.
    AdversarialModel` (:func:`~robustlab.training.train_adversarial`; ``training`` takes its
    options: ``epsilon``, ``steps``, ``checkpoint_dir``, ...). A trained model is saved to
    ``save_to`` when given. The logits check runs either way.

    Returns:
        ``(model, TrainingResult)``, or ``(model, None)`` when the model was loaded.

    Example:
        >>> model, info = load_or_train("", load("digits"), seed=0)
        >>> hardened, info = load_or_train("", data, method="pgd", epsilon=0.2, epochs=20)
    """
    if model_path is not None and not isinstance(model_path, (str, os.PathLike)):
        raise InputTypeError(f"expected model_path to be a path or '' (train), got "
                             f"{type(model_path).__name__} {model_path!r}")
    info: TrainingResult | None = None
    if model_path:
        model = load_model(model_path, sha256=sha256 or None)
        outputs = num_outputs(model)
        if outputs != data.num_classes:
            raise ValidationError(f"expected a model with {data.num_classes} outputs for "
                                  f"{data.name}, got {outputs} outputs from {model_path}")
    elif method is None:
        model = build_model(data.input_shape, data.num_classes, seed=seed, **_stats(data))
        fitted = train(model, data, epochs=epochs, seed=seed, **training)
        path = str(save_model(model, save_to)) if save_to else None
        info = TrainingResult(config={"method": "keras_fit", "seed": seed, **training},
                              history=fitted["history"], seconds=fitted["seconds"],
                              initial_epoch=0, epochs=len(fitted["history"].get("loss", [])),
                              model_path=path)
    else:
        model = build_model(data.input_shape, data.num_classes, seed=seed, **_stats(data))
        if epochs is not None:
            training["epochs"] = epochs
        model, info = train_adversarial(model, data, method=method, seed=seed,
                                        save_to=save_to, **training)
    check_logits(model, data.x_test)
    return model, info


def _stats(data: Dataset) -> dict[str, Any]:
    """``mean``/``std`` for :func:`build_model` when ``data`` is not images: tabular models
    standardise with the training split's statistics (images take pixels as they are)."""
    if data.is_image:
        return {}
    mean, std = data.feature_stats()
    return {"mean": mean, "std": std}


@dataclass(frozen=True)
class ReportConfig:
    """The report notebook's parameters (``notebooks/robustness_report.ipynb``), one field
    each, with the same names and defaults. Build it from the notebook's namespace with
    :meth:`from_namespace`; every step then reads it, and the evaluation records
    :meth:`parameters`, so a new parameter cannot drift out of the report.

    Every parameter is parsed and checked when the config is built, before any data is
    loaded or model trained: a typo in ``attacks`` or ``epsilons`` fails at once, with an
    error that names the parameter. The numbers, flags and names are stored parsed
    (``"5"`` -> ``5``); ``attacks`` and ``epsilons`` keep the form they were given in (the
    report records ``"8/255"`` as written) and :meth:`specs` / :meth:`epsilon_values` give
    them parsed.

    A test checks that the notebook's parameters cell and these fields are the same names.
    """

    dataset: str = "digits"
    split: int | None = None
    n_train: int | None = None
    n_test: int | None = 500
    model_path: str = ""
    model_sha256: str = ""
    epochs: int | None = None
    attacks: str | list[Any] = "fgsm, pgd"
    epsilons: str | list[Any] | float = "0, 0.05, 0.1, 0.15, 0.2, 0.3"
    norm: str = "linf"
    pgd_steps: int = 40
    pgd_restarts: int = 3
    backend: str = "native"
    cascade: bool = False
    checks: bool = True
    n_check: int = 200
    immutable: str | list[Any] = ""
    cv_folds: int = 0
    seed: int = 0
    strategy: str = "auto"
    output_dir: str = "out/report"

    # where the run's files go, and how the work was spread (which changes no number; the
    # result's device records it): not parameters of the result
    _NOT_RECORDED = ("output_dir", "strategy")

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("dataset", _check_dataset(self.dataset))
        put("split", check_optional_int("split", self.split, low=1))
        put("n_train", check_optional_int("n_train", self.n_train, low=1))
        put("n_test", check_optional_int("n_test", self.n_test, low=1))
        put("model_path", _check_text("model_path", self.model_path))
        if self.model_path and not Path(self.model_path).exists():
            raise ModelNotFoundError(f"expected model_path to name a .keras file (or to be "
                                     f"'' to train one), got {self.model_path!r}, which does "
                                     f"not exist")
        pin = _check_text("model_sha256", self.model_sha256).strip()
        put("model_sha256", check_sha256("model_sha256", pin) if pin else "")
        put("epochs", check_optional_int("epochs", self.epochs, low=1))
        put("norm", parse_norm(self.norm).value)
        put("pgd_steps", check_int("pgd_steps", self.pgd_steps, low=1))
        put("pgd_restarts", check_int("pgd_restarts", self.pgd_restarts, low=1))
        put("backend", parse_enum("backend", self.backend, Backend).value)
        put("cascade", _check_flag("cascade", self.cascade))
        put("checks", _check_flag("checks", self.checks))
        put("n_check", check_int("n_check", self.n_check, low=1))
        put("immutable", _check_names("immutable", self.immutable))
        put("cv_folds", check_int("cv_folds", self.cv_folds, low=0))
        if self.cv_folds == 1:
            raise ValidationError("expected cv_folds 0 (off) or >= 2, got 1")
        put("seed", check_seed(self.seed))
        put("strategy", _check_strategy(self.strategy))
        put("output_dir", _check_text("output_dir", self.output_dir))
        if not self.output_dir.strip():
            raise ValidationError("expected output_dir to name a folder, got ''")
        self.epsilon_values()
        self.specs()

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> ReportConfig:
        """The config from a mapping that holds every field (e.g. a notebook's
        ``globals()`` after its parameters cell); other names are ignored."""
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in namespace]
        if missing:
            raise ValidationError(f"expected the parameters {missing} to be defined (the "
                                  f"report notebook's parameters cell defines them)")
        return cls(**{f.name: namespace[f.name] for f in dataclasses.fields(cls)})

    def parameters(self) -> dict[str, Any]:
        """The parameters recorded with the result (everything but the output folder)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in self._NOT_RECORDED}

    def specs(self) -> tuple[AttackSpec, ...]:
        """The attacks, with the PGD settings as defaults for the attacks that share them."""
        try:
            return parse_attacks(self.attacks, steps=self.pgd_steps,
                                 restarts=self.pgd_restarts, backend=self.backend)
        except (ValidationError, InputTypeError) as exc:  # say which parameter
            raise type(exc)(f"parameter attacks={self.attacks!r}: {exc}") from None

    def epsilon_values(self) -> tuple[float, ...]:
        """The budgets of ``epsilons``, parsed (sorted, without repeats)."""
        return parse_epsilons(self.epsilons, name="epsilons")

    def load_data(self) -> Dataset:
        """The dataset, with ``immutable`` features fixed when given."""
        data = load(self.dataset, n_train=self.n_train, n_test=self.n_test, seed=self.seed,
                    split=self.split)
        if self.immutable:
            try:
                data = data.constrain(immutable=list(self.immutable))
            except ValidationError as exc:
                raise ValidationError(f"parameter immutable={self.immutable!r}: {exc}") from None
        return data

    def load_model(self, data: Dataset) -> Any:
        """The model file, or the default model trained here (saved as ``model.keras``)."""
        model, _ = load_or_train(
            self.model_path, data, epochs=self.epochs, seed=self.seed,
            sha256=self.model_sha256,
            save_to=None if self.model_path else Path(self.output_dir) / "model.keras")
        return model

    def evaluate(self, model: Any, data: Dataset) -> EvaluationResult:
        return evaluate(model, data, self.specs(), self.epsilon_values(), norm=self.norm,
                        seed=self.seed, cascade=self.cascade or None, checks=self.checks,
                        n_check=self.n_check, parameters=self.parameters())

    def cross_validate(self, data: Dataset) -> CrossValidationResult | None:
        """With ``cv_folds`` >= 2, :func:`~robustlab.crossval.cross_validate` over the pooled
        splits of ``data`` (a fresh default model per fold, trained as the report's model
        is, evaluated with the same attacks and ε); None when ``cv_folds`` is 0."""
        if not self.cv_folds:
            return None
        return cross_validate(None, data, self.cv_folds, attacks=self.specs(),
                              epsilons=self.epsilon_values(), norm=self.norm,
                              epochs=self.epochs, seed=self.seed)

    def run(self) -> EvaluationResult:
        """Every step: data, model, evaluation, cross-validation when asked,
        ``report.html`` / ``report.json`` (and ``crossval.json``) in ``output_dir``."""
        data = self.load_data()
        result = self.evaluate(self.load_model(data), data)
        write_report(result, self.output_dir, crossval=self.cross_validate(data))
        return result


def _check_strategy(value: Any) -> str:
    """A strategy name of :data:`robustlab.distribute.STRATEGIES` (made later, by
    :func:`~robustlab.distribute.use_strategy`, before anything runs TensorFlow)."""
    text = _check_text("strategy", value).strip().lower().replace("-", "").replace("_", "")
    if text not in STRATEGIES:
        raise ValidationError(f"expected strategy to be one of {list(STRATEGIES)}, got "
                              f"{value!r}")
    return text


def _check_names(name: str, value: Any) -> list[str]:
    """Feature names as a list: ``"age, sex"`` or ``["age", "sex"]`` ("" or [] for none)."""
    if isinstance(value, str) or value is None:
        return split_list(value or "")
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    raise InputTypeError(f"expected {name} to be comma-separated feature names, got "
                         f"{type(value).__name__} {value!r}")


def _check_dataset(value: Any) -> str:
    """A dataset name :func:`~robustlab.data.load` knows (checked without loading it)."""
    return check_name(_check_text("dataset", value))


def _check_text(name: str, value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise InputTypeError(f"expected {name} to be a string, got {type(value).__name__} "
                             f"{value!r}")
    return value


_FLAGS = {"true": True, "1": True, "yes": True, "on": True,
          "false": False, "0": False, "no": False, "off": False}


def _check_flag(name: str, value: Any) -> bool:
    """A bool, or its spelling as text (``"false"``: a string would otherwise be truthy)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _FLAGS:
        return _FLAGS[value.strip().lower()]
    raise ValidationError(f"expected {name} to be True or False, got {value!r}")


# privacy_study's models: name -> (training method, with DP-SGD)
STUDY_MODELS: dict[str, tuple[str, bool]] = {
    "standard": ("standard", False), "dp": ("standard", True),
    "pgd": ("pgd", False), "dp+pgd": ("pgd", True),
}


def privacy_study(data: Dataset, *, models: str | list[str] = "standard, dp",
                  dp: DPConfig, epochs: int = 30, batch_size: int = 64,
                  learning_rate: float = 5e-3, train_epsilon: Any = 0.2, train_steps: int = 5,
                  shadows: int = 8, audit_examples: int | None = None,
                  attacks: Any = "fgsm, pgd", epsilons: Any = "0, 0.1, 0.2",
                  seed: int = 0, output_dir: str | os.PathLike[str] | None = None
                  ) -> Comparison:
    """Train each of ``models`` on ``data``, audit it for membership leakage, evaluate its
    robustness, and put them side by side (the first is the baseline).

    Models (:data:`STUDY_MODELS`): ``standard`` (Adam on clean examples), ``dp`` (DP-SGD with
    ``dp``), ``pgd`` (PGD adversarial training at ``train_epsilon``, ``train_steps`` steps),
    ``dp+pgd`` (both: each example's adversarial gradient clipped and noised). All share
    ``epochs``, ``batch_size`` (DP: the expected size of a Poisson batch), ``learning_rate``
    and ``seed``; DP runs log ε after every epoch. A DP model of a table is built without
    the training split's mean and standard deviation (its standardisation layer would
    publish them outside ε): give such tables in comparable units. Each audit
    (:func:`~robustlab.membership.membership_audit`) trains its ``shadows`` LiRA shadow
    models with that model's own recipe (DP shadows for a DP model, as LiRA requires) and
    takes the members from ``data.x_train`` and the non-members from ``data.x_test``
    (``audit_examples`` caps each). With ``output_dir`` the comparison (with each model's
    privacy section) and the models are written there.

    Returns:
        A :class:`~robustlab.results.Comparison` with ``privacy`` filled in.

    Raises:
        ValidationError: an unknown model name (named), fewer than two models, or a bad
            training / DP setting.

    Example:
        >>> study = privacy_study(load("digits"), models="standard, dp",
        ...                       dp=DPConfig(target_epsilon=4.0), epochs=20)
    """
    names = split_list(models) if isinstance(models, str) else list(models)
    unknown = [n for n in names if n not in STUDY_MODELS]
    if unknown or len(names) < 2 or len(set(names)) != len(names):
        raise ValidationError(f"expected models to list two or more of "
                              f"{list(STUDY_MODELS)} (each once), got {models!r}")
    if not isinstance(dp, DPConfig):
        raise InputTypeError(f"expected dp to be a robustlab DPConfig, got "
                             f"{type(dp).__name__}")
    specs = parse_attacks(attacks)
    epsilon_values = parse_epsilons(epsilons, name="epsilons")
    shadows = check_int("shadows", shadows, low=2)
    audit_examples = check_optional_int("audit_examples", audit_examples, low=2)
    # the training settings, checked before anything trains (a config per method)
    TrainingConfig(method=Method.PGD, epsilon=train_epsilon, steps=train_steps, seed=seed)
    settings = {"epochs": check_int("epochs", epochs, low=1),
                "batch_size": check_int("batch_size", batch_size, low=1),
                "learning_rate": check_float("learning_rate", learning_rate, low=0.0,
                                             low_open=True),
                "epsilon": train_epsilon, "steps": train_steps}

    def recipe(name: str) -> Any:
        method, private = STUDY_MODELS[name]
        options = {**settings, "method": method, "dp": dp if private else None}
        if method == "standard":  # no inner attack: its settings do not apply
            del options["epsilon"], options["steps"]

        def fit(x: Any, y: Any, fit_seed: int) -> tuple[Any, TrainingResult]:
            part = dataclasses.replace(data, x_train=x, y_train=y)
            # a DP model must not carry exact statistics of its training data (its
            # standardisation layer would publish them outside ε): tables go in as they are
            stats = {} if private else _stats(part)
            model = build_model(data.input_shape, data.num_classes, seed=fit_seed, **stats)
            return train_adversarial(model, part, seed=fit_seed, **options)

        return fit

    results: dict[str, EvaluationResult] = {}
    privacy: dict[str, PrivacyResult | None] = {}
    seconds: dict[str, float | None] = {}
    for name in names:
        fit = recipe(name)
        model, info = fit(data.x_train, data.y_train, seed)
        if output_dir is not None:
            save_model(model, Path(output_dir) / f"{name.replace('+', '_')}.keras")
        audit = membership_audit(model, data, shadows=shadows, max_examples=audit_examples,
                                 train_shadow=_first(fit), seed=seed)
        results[name] = evaluate(model, data, specs, epsilon_values, seed=seed,
                                 parameters={"model": name, "epochs": epochs,
                                             "dp": dataclasses.asdict(dp) if
                                             STUDY_MODELS[name][1] else None})
        privacy[name] = PrivacyResult(training=info.privacy, audit=audit)
        seconds[name] = info.seconds
    comparison = compare(results, training_seconds=seconds, privacy=privacy)
    if output_dir is not None:
        write_comparison(comparison, Path(output_dir), data.x_test, data.y_test)
    return comparison


def _first(fit: Any) -> Any:
    """A shadow trainer ``(x, y, seed) -> model`` from a recipe returning ``(model, info)``."""

    def train_shadow(x: Any, y: Any, seed: int) -> Any:
        return fit(x, y, seed)[0]

    return train_shadow


POISONING_ATTACKS = ("none", "patch", "blend", "clean-label", "label-flip")


def poisoning_study(data: Dataset, *, attack: str = "patch", rate: float = 0.1,
                    target: int = 0, source: int | None = None,
                    detectors: str | list[str] = "spectre, spectral, art-activation, "
                                                  "art-spectral",
                    expected_rate: float = 0.1, epochs: int = 20, batch_size: int = 32,
                    alpha: float = 0.2, size: int = 2, attack_epsilon: float = 0.3,
                    attack_steps: int = 20, clean_reference: bool = True,
                    suspects: int = 24, seed: int = 0,
                    output_dir: str | os.PathLike[str] | None = None) -> PoisoningResult:
    """The poisoning lab in one call: poison ``data``'s training split (or not), train on
    it, inspect it with every detector, remove what the first detector flags, retrain, and
    measure clean accuracy and attack success of each model.

    Attacks (:data:`POISONING_ATTACKS`): ``none`` (inspect ``data`` as it is: a user's own
    training set, no ground truth), ``patch`` / ``blend`` (:func:`~robustlab.poisoning.backdoor`
    with ``size`` / ``alpha``), ``clean-label`` (:func:`~robustlab.poisoning.clean_label`
    with a patch and an L∞ PGD of ``attack_epsilon`` and ``attack_steps`` steps, against a
    proxy trained on clean data), ``label-flip``
    (:func:`~robustlab.poisoning.flip_labels` to ``target``). ``rate``, ``target`` and
    ``source`` are the attack's. Every model is :func:`~robustlab.models.build_model`
    trained with :func:`~robustlab.training.train` for ``epochs`` (same seed); with
    ``clean_reference`` (or for a clean-label attack, which needs a proxy) a model trained on
    the clean data is the reference the sanitised model is compared with (not with
    ``none``: the data is what it is). With
    ``output_dir`` the poisoning page and record are written there
    (:func:`~robustlab.report.write_poisoning`).

    Returns:
        :class:`~robustlab.results.PoisoningResult`.

    Raises:
        ValidationError: an unknown attack or detector (named), or a bad attack setting.

    Example:
        >>> result = poisoning_study(load("digits"), attack="patch", rate=0.1)
        >>> result.model("sanitised").attack_success
    """
    from robustlab.poisoning import (
        attack_success,
        backdoor,
        clean_label,
        flip_labels,
        inspect_training_set,
        sanitize,
    )

    if attack not in POISONING_ATTACKS:
        raise ValidationError(f"expected attack to be one of {list(POISONING_ATTACKS)}, got "
                              f"{attack!r}")
    from robustlab.poisoning import Detector

    names = split_list(detectors) if isinstance(detectors, str) else list(detectors)
    if not names:
        raise ValidationError("expected detectors to name at least one detector, got none")
    names = [parse_enum("detectors", name, Detector).value for name in names]
    check_float("expected_rate", expected_rate, low=0.0, low_open=True, high=0.5)
    epochs = check_int("epochs", epochs, low=1)
    suspects = check_int("suspects", suspects, low=0)
    # with no attack the poisoned model is the clean one: trained once
    reference = (clean_reference and attack != "none") or attack == "clean-label"

    def fit(part: Dataset) -> Any:
        model = build_model(part.input_shape, part.num_classes, seed=seed, **_stats(part))
        train(model, part, epochs=epochs, batch_size=batch_size, seed=seed)
        return model

    def outcome(name: str, model: Any, n_train: int) -> ModelOutcome:
        hits = int(np.sum(predict_labels(model, data.x_test) == data.y_test))
        asr = (attack_success(model, poisoned) if poisoned is not None and
               poisoned.trigger is not None else None)
        return ModelOutcome(name=name, n_train=n_train, clean_accuracy=hits / len(data.y_test),
                            clean_interval=wilson_interval(hits, len(data.y_test)),
                            attack_success=None if asr is None else asr[0],
                            attack_interval=None if asr is None else asr[1])

    models: list[ModelOutcome] = []
    clean_model = None
    clean_model = fit(data) if reference else None
    if attack == "none":
        poisoned, train_data = None, data
    elif attack in ("patch", "blend"):
        poisoned = backdoor(data, trigger=attack, target=target, source=source, rate=rate,
                            size=size, alpha=alpha, seed=seed)
        train_data = poisoned.data
    elif attack == "clean-label":
        poisoned = clean_label(data, clean_model, target=target, rate=rate, size=size,
                               epsilon=attack_epsilon, steps=attack_steps, seed=seed)
        train_data = poisoned.data
    else:
        poisoned = flip_labels(data, rate=rate, source=source, target=target, seed=seed)
        train_data = poisoned.data
    model = fit(train_data)
    models.append(outcome("poisoned", model, len(train_data.x_train)))
    inspections = tuple(inspect_training_set(model, train_data, detector=name,
                                             expected_rate=expected_rate, seed=seed)
                        for name in names)
    primary = inspections[0]
    removed = primary.suspicious()
    sanitised_model = fit(sanitize(train_data, removed))
    models.append(outcome("sanitised", sanitised_model, len(train_data.x_train) - len(removed)))
    if clean_model is not None:
        models.append(outcome("clean", clean_model, len(data.x_train)))
    ranked = np.argsort(-primary.scores, kind="stable")
    in_flagged = np.isin(primary.labels[ranked], primary.flagged_classes)
    order = np.concatenate([ranked[in_flagged], ranked[~in_flagged]])[:suspects]
    result = PoisoningResult(
        dataset=data.name, class_names=tuple(data.class_names),
        attack=None if poisoned is None else poisoned.to_dict(),
        poison=None if poisoned is None else poisoned.poison, inspections=inspections,
        removed=removed, models=tuple(models), suspects=order,
        suspect_inputs=train_data.x_train[order], n_train=len(train_data.x_train), seed=seed,
        feature_names=(None if data.is_image or data.constraints is None
                       else tuple(data.constraints.names)),
        parameters={"attack": attack, "rate": rate, "target": target, "source": source,
                    "detectors": names, "expected_rate": expected_rate, "epochs": epochs,
                    "batch_size": batch_size, "alpha": alpha, "size": size,
                    "attack_epsilon": attack_epsilon, "attack_steps": attack_steps})
    if output_dir is not None:
        write_poisoning(result, Path(output_dir))
    return result


def monitoring_study(data: Dataset, *, model_path: str | os.PathLike[str] | None = "",
                     epochs: int | None = None, detectors: str | list[str] = "all",
                     detector: str = "mahalanobis", fpr: float = 0.05,
                     calibration: float = 0.5, attacks: str | list[str] = "fgsm, pgd",
                     epsilons: Any = None, shifts: str | list[str] | None = None,
                     ood: str | None = None, adaptive: bool = True, steps: int = 40,
                     restarts: int = 1, targets: int = 3, escalate: int = 5,
                     drift_batch: int = 200,
                     drift_batches: int = 100, seed: int = 0,
                     output_dir: str | os.PathLike[str] | None = None
                     ) -> tuple[Any, MonitorEvaluation]:
    """The monitoring lab in one call: load (``model_path``) or train the model, fit a
    :class:`~robustlab.monitor.Monitor` on the training split, calibrate it on the first
    ``calibration`` fraction of the (shuffled) test split, and evaluate it on the rest with
    :func:`~robustlab.monitor.evaluate_monitor` (attacks at ``epsilons``: default 0.3 for
    grey images, 8/255 for colour ones, 0.1 for tables; ``shifts``: default all for images, ``noise,
    contrast`` for tables; ``ood``: another built-in dataset, e.g. ``"digits"`` for MNIST,
    resized to the model's input). With ``output_dir`` the monitoring page and record are
    written there (:func:`~robustlab.report.write_monitoring`), the monitor is saved to
    ``output_dir/monitor`` and a model trained here to ``output_dir/model.keras`` (for
    ``robustlab monitor``).

    Returns:
        ``(monitor, evaluation)``.

    Example:
        >>> monitor, evaluation = monitoring_study(load("digits"), epsilons="0.2")
        >>> evaluation.collapsed()
    """
    from robustlab.data import resize_images
    from robustlab.monitor import Monitor, evaluate_monitor

    check_float("calibration", calibration, low=0.0, low_open=True, high=1.0)
    if calibration >= 1.0:
        raise ValidationError(f"expected calibration < 1 (the rest evaluates), got "
                              f"{calibration}")
    seed = check_seed(seed)
    model, _ = load_or_train(model_path, data, seed=seed, epochs=epochs)
    order = np.random.default_rng([seed, 3]).permutation(len(data.x_test))
    cut = int(round(calibration * len(order)))
    cal, held = order[:cut], order[cut:]
    if len(held) < 2:
        raise ValidationError(f"expected calibration to leave at least 2 test inputs to "
                              f"evaluate on, got {len(held)} of {len(order)}")
    monitor = Monitor.fit(model, data.x_train, data.y_train, data.x_test[cal],
                          detectors=detectors, detector=detector, fpr=fpr, seed=seed)
    if epsilons is None:  # the usual L∞ budgets: grey images 0.3, colour 8/255, tables 0.1
        epsilons = ([0.3] if data.input_shape[-1] == 1 else ["8/255"]) if data.is_image \
            else [0.1]
    if shifts is None:
        shifts = "noise, blur, rotation, contrast" if data.is_image else "noise, contrast"
    ood_x = None
    if ood:
        other = load(check_name(ood, "ood"))
        ood_x = resize_images(other.x_test, data.input_shape) if data.is_image \
            else other.x_test
    evaluation = evaluate_monitor(
        monitor, data.x_test[held], data.y_test[held], attacks=attacks, epsilons=epsilons,
        shifts=shifts, ood=ood_x, ood_name=ood or "ood", adaptive=adaptive, steps=steps,
        restarts=restarts, targets=targets, escalate=escalate, drift_batch=drift_batch,
        drift_batches=drift_batches, dataset=data.name, seed=seed)
    # which test inputs were held out from calibration (e.g. to try the monitor on unseen
    # clean batches afterwards)
    evaluation = dataclasses.replace(evaluation, parameters={
        **evaluation.parameters, "detector": monitor.detector.value, "fpr": monitor.fpr,
        "calibration": calibration, "evaluation_indices": held.tolist()})
    if output_dir is not None:  # the monitor (and a trained model) first: the page's
        from robustlab.report import write_monitoring  # manifest then seals them too

        Path(output_dir).mkdir(parents=True, exist_ok=True)
        monitor.save(Path(output_dir) / "monitor")
        if not model_path:
            save_model(model, Path(output_dir) / "model.keras")
        write_monitoring(evaluation, Path(output_dir))
    return monitor, evaluation

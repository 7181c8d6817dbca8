"""Membership-inference audit: can an attacker tell the model's training examples (members)
from held-out ones (non-members)?

:func:`membership_audit` runs three attacks on the same members (``data.x_train``) and
non-members (``data.x_test``) and reports each one's ROC curve, AUC, TPR at 1% and 0.1% FPR
and membership advantage (:class:`~robustlab.results.MembershipAudit`):

- ``loss``: the loss-threshold attack of Yeom et al. 2018, "Privacy Risk in Machine
  Learning: Analyzing the Connection to Overfitting", https://arxiv.org/abs/1709.01604.
- ``lira``: online LiRA, Carlini et al. 2022, "Membership Inference Attacks From First
  Principles", https://arxiv.org/abs/2112.03570: shadow models trained on random halves of
  members ∪ non-members give, per example, the distribution of the model's (logit-scaled)
  confidence with and without the example in training; the score is the likelihood ratio.
- ``art-blackbox``: ART's ``MembershipInferenceBlackBox`` (a random forest on the model's
  logits and the label), an independent implementation as a cross-check.

The low-FPR operating points are the ones that matter (Carlini et al., section 3): an
attack that is confident about a few examples is a privacy failure even at AUC 0.5.
:meth:`MembershipAudit.dp_bound <robustlab.results.MembershipAudit.dp_bound>` turns a claimed
(ε, δ) of differentially private training into the TPR no attack may exceed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from robustlab._env import seeded_globals
from robustlab._validate import (
    check_float,
    check_int,
    check_optional_int,
    check_seed,
    parse_enum,
    split_list,
)
from robustlab.attacks import art_classifier
from robustlab.data import Dataset, require_dataset
from robustlab.errors import InputTypeError, ValidationError
from robustlab.inference import (
    DEFAULT_BATCH_SIZE,
    batched_logits,
    check_input_shape,
    num_outputs,
)
from robustlab.results import MembershipAttack, MembershipAudit, OperatingPoint
from robustlab.stats import (
    downsample_roc,
    hanley_mcneil_interval,
    membership_advantage,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
    wilson_interval,
)
from robustlab.training import default_epochs, train

__all__ = ["membership_audit", "MembershipAttackName", "loss_scores", "logit_confidence",
           "lira_scores", "shadow_split", "score_attack", "LOW_FPRS"]

log = logging.getLogger(__name__)

# the operating points reported for every attack (Carlini et al. 2022 report TPR at 0.1%)
LOW_FPRS = (0.01, 0.001)
# below this many shadows LiRA fits one pooled variance (Carlini et al. 2022, section 4.2)
_PER_EXAMPLE_VARIANCE_FROM = 64
_MIN_SIGMA = 1e-6

ShadowTrainer = Callable[[np.ndarray, np.ndarray, int], Any]


class MembershipAttackName(str, Enum):
    """The membership attacks :func:`membership_audit` runs (ART's runs with ``art=True``)."""

    LOSS = "loss"
    LIRA = "lira"


# ---------------------------------------------------------------------------------------------
# the statistics (pure NumPy)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    top = z.max(axis=-1, keepdims=True)
    return z - top - np.log(np.exp(z - top).sum(axis=-1, keepdims=True))


def loss_scores(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The loss attack's scores: minus the cross-entropy of ``logits`` ``(N, K)`` on labels
    ``y`` ``(N,)``, float64 ``(N,)``; higher means more likely a member (Yeom et al. 2018,
    https://arxiv.org/abs/1709.01604, section 3.2: members have lower loss)."""
    return _log_softmax(logits)[np.arange(len(y)), y]


def logit_confidence(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """LiRA's statistic ``φ = log p_y − log Σ_{j≠y} p_j`` per example, float64 ``(N,)``,
    from ``logits`` ``(N, K)`` and labels ``y`` ``(N,)`` (Carlini et al. 2022,
    https://arxiv.org/abs/2112.03570, section 4.3: the logit of the confidence, close to
    Gaussian). Computed as ``z_y − logsumexp_{j≠y} z_j``, which is exact and finite even
    where ``p_y`` rounds to 1 in float32."""
    z = np.asarray(logits, np.float64)
    rows = np.arange(len(y))
    z_y = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    top = others.max(axis=1)
    lse = top + np.log(np.exp(others - top[:, None]).sum(axis=1))
    return z_y - lse


def shadow_split(n: int, shadows: int, *, seed: int = 0, fraction: float = 0.5
                 ) -> np.ndarray:
    """Which pool examples each shadow model trains on: bool ``(shadows, n)``.

    As in Carlini et al.'s code, every example is IN a fixed number of shadows (a seeded
    random rank per example and shadow): ``fraction · shadows`` rounded down or up at
    random (so each shadow trains on about ``fraction`` of the pool), but at least one and
    at most ``shadows − 1``, so every example has IN and OUT shadows once ``shadows >= 2``.
    ``fraction`` 0.5 is the paper's random halves; :func:`membership_audit` uses the
    target's share of the pool, so that shadows train on as many examples as the target."""
    rng = np.random.default_rng([check_seed(seed), 0x11A])
    fraction = check_float("fraction", fraction, low=0.0, low_open=True, high=1.0)
    ranks = rng.random((shadows, n)).argsort(axis=0).argsort(axis=0)
    share = fraction * shadows
    count = np.floor(share) + (rng.random(n) < share - np.floor(share))
    count = np.clip(count, 1, shadows - 1)
    return ranks < count[None, :]


def _pooled_sigma(values: np.ndarray, mask: np.ndarray, means: np.ndarray, *,
                  groups: int = 1) -> float:
    """Within-example standard deviation pooled over all examples: the residuals from each
    example's own mean (of each of its ``groups`` — IN and OUT: 2), with one degree of
    freedom lost per example and group."""
    counts = mask.sum(axis=0)
    resid = np.where(mask, values - means[None, :], 0.0)
    dof = int(counts.sum() - groups * np.count_nonzero(counts))
    if dof <= 0:
        return 1.0  # one value per example: no spread measurable; a unit scale
    return max(float(np.sqrt((resid ** 2).sum() / dof)), _MIN_SIGMA)


def _per_example_sigma(values: np.ndarray, mask: np.ndarray, means: np.ndarray,
                       pooled: float) -> np.ndarray:
    counts = mask.sum(axis=0)
    resid = np.where(mask, values - means[None, :], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.sqrt((resid ** 2).sum(axis=0) / (counts - 1))
    return np.where(counts >= 2, np.maximum(sigma, _MIN_SIGMA), pooled)


def _log_normal(x: np.ndarray, mu: np.ndarray, sigma: Any) -> np.ndarray:
    return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)


def lira_scores(target: np.ndarray, shadow: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Online LiRA scores (Carlini et al. 2022, https://arxiv.org/abs/2112.03570, Algorithm 1).

    Args:
        target: φ (:func:`logit_confidence`) of the target model per example, ``(N,)``.
        shadow: φ of each shadow model per example, ``(S, N)``.
        keep: bool ``(S, N)``, True where the example was in that shadow's training set.

    Returns:
        float64 ``(N,)``: ``log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out)``, higher = more
        likely a member. ``μ`` are per-example means over the IN (OUT) shadows; ``σ`` is one
        pooled within-example standard deviation shared by IN and OUT when ``S < 64`` (the
        paper's "fixed variance" for few shadows; pooled over residuals from the
        per-example means; one σ keeps the score linear in φ), per-example and per side
        otherwise.
        An example without IN shadows gets ``μ_in = μ_out + Δ`` and one without OUT shadows
        ``μ_out = μ_in − Δ``, ``Δ`` the mean IN−OUT gap over the examples that have both
        (a population-mean fallback that keeps every score on the same likelihood-ratio
        scale); :func:`shadow_split` never leaves an example without either.
    """
    target = np.asarray(target, np.float64)
    shadow = np.asarray(shadow, np.float64)
    keep = np.asarray(keep, bool)
    if shadow.shape != keep.shape or shadow.ndim != 2 or shadow.shape[1] != len(target):
        raise ValidationError(f"expected shadow and keep of shape (S, {len(target)}), got "
                              f"{shadow.shape} and {keep.shape}")
    out_mask = ~keep
    n_in, n_out = keep.sum(axis=0), out_mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu_in = np.where(keep, shadow, 0.0).sum(axis=0) / n_in
        mu_out = np.where(out_mask, shadow, 0.0).sum(axis=0) / n_out
    both = (n_in > 0) & (n_out > 0)
    gap = float(np.mean(mu_in[both] - mu_out[both])) if both.any() else 0.0
    if not both.all():
        log.info("LiRA: %d examples without IN shadows and %d without OUT shadows use the "
                 "mean IN-OUT gap %.3f", int((n_in == 0).sum()), int((n_out == 0).sum()), gap)
    mu_in = np.where(n_in > 0, mu_in, mu_out + gap)
    mu_out = np.where(n_out > 0, mu_out, mu_in - gap)
    if not np.all(np.isfinite(mu_in)) or not np.all(np.isfinite(mu_out)):
        raise ValidationError("expected every example to have an IN or an OUT shadow")
    if shadow.shape[0] < _PER_EXAMPLE_VARIANCE_FROM:
        # one σ for both sides: with few shadows unequal σ_in, σ_out make the score
        # quadratic in φ, and a target whose φ sits off the shadows' scale (another
        # training-set size, other noise) then scores its members *below* non-members
        centred = np.where(keep, shadow - mu_in[None, :], shadow - mu_out[None, :])
        sigma: Any = _pooled_sigma(centred, np.ones_like(keep), np.zeros(len(target)),
                                   groups=2)
        return _log_normal(target, mu_in, sigma) - _log_normal(target, mu_out, sigma)
    sigma_in: Any = _pooled_sigma(shadow, keep, mu_in)
    sigma_out: Any = _pooled_sigma(shadow, out_mask, mu_out)
    sigma_in = _per_example_sigma(shadow, keep, mu_in, sigma_in)
    sigma_out = _per_example_sigma(shadow, out_mask, mu_out, sigma_out)
    return _log_normal(target, mu_in, sigma_in) - _log_normal(target, mu_out, sigma_out)


def score_attack(name: str, members: np.ndarray, nonmembers: np.ndarray, *,
                 notes: str = "") -> MembershipAttack:
    """Summarise an attack's scores (higher = member) on ``members`` ``(P,)`` and
    ``nonmembers`` ``(N,)``: ROC (downsampled to 200 points), AUC with its Hanley–McNeil
    interval, TPR at :data:`LOW_FPRS` with Wilson intervals (on the TPR over the members and
    on the achieved FPR over the non-members), membership advantage."""
    fpr, tpr, _ = roc_curve(members, nonmembers)
    auc = roc_auc(members, nonmembers)
    points = []
    resolution = 1.0 / len(nonmembers)
    for target in LOW_FPRS:
        rate, achieved, threshold, hits = tpr_at_fpr(members, nonmembers, target)
        points.append(OperatingPoint(
            target_fpr=target, fpr=achieved, tpr=rate,
            tpr_interval=wilson_interval(hits, len(members)), threshold=threshold,
            below_resolution=target < resolution,
            fpr_interval=wilson_interval(round(achieved * len(nonmembers)), len(nonmembers))))
    low = [f"{100 * p.target_fpr:g}%" for p in points if p.below_resolution]
    if low:
        notes = (notes + " " if notes else "") + (
            f"TPR at {', '.join(low)} FPR measured at FPR 0: below the resolution "
            f"1/{len(nonmembers)} of {len(nonmembers)} non-members.")
    roc_f, roc_t = downsample_roc(fpr, tpr, 200)
    return MembershipAttack(
        name=name, auc=auc, auc_interval=hanley_mcneil_interval(auc, len(members),
                                                                len(nonmembers)),
        points=tuple(points), advantage=membership_advantage(fpr, tpr),
        roc_fpr=tuple(float(v) for v in roc_f), roc_tpr=tuple(float(v) for v in roc_t),
        n_members=len(members), n_nonmembers=len(nonmembers), notes=notes)


# ---------------------------------------------------------------------------------------------
# shadow models


def _derived_seed(seed: int, *tags: int) -> int:
    return int(np.random.SeedSequence([seed, *tags]).generate_state(1)[0])


def _reseed_config(node: Any, seed: int, counter: list[int]) -> Any:
    """A layer config with every initializer's fixed seed replaced by a fresh one."""
    if isinstance(node, dict):
        out = {k: _reseed_config(v, seed, counter) for k, v in node.items()}
        cfg = out.get("config")
        if "class_name" in out and isinstance(cfg, dict) and cfg.get("seed") is not None:
            counter[0] += 1
            out["config"] = {**cfg, "seed": _derived_seed(seed, counter[0]) % (2**31)}
        return out
    if isinstance(node, list):
        return [_reseed_config(v, seed, counter) for v in node]
    return node


def _fresh_clone(model: Any, seed: int) -> Any:
    """``keras.models.clone_model(model)`` with new weights: initializers with a fixed seed
    (robustlab's builders seed theirs) get one derived from ``seed``, the others draw from
    Keras' global generator, seeded here."""
    import keras

    counter = [0]

    def clone(layer: Any) -> Any:
        config = _reseed_config(layer.get_config(), seed, counter)
        return layer.__class__.from_config(config)

    with seeded_globals(seed, tensorflow=True):
        try:
            return keras.models.clone_model(model, clone_function=clone)
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise ValidationError(
                f"expected a model keras.models.clone_model can copy (functional or "
                f"Sequential) to train the shadow models, got {type(model).__name__} "
                f"({exc}); pass train_shadow=") from exc


def _default_trainer(model: Any, data: Dataset, epochs: int | None) -> ShadowTrainer:
    """A fresh clone of ``model`` per shadow, trained by :func:`robustlab.training.train`
    with its defaults (Adam, learning rate 1e-3, batch 32, cross-entropy on logits)."""
    def fit(x: np.ndarray, y: np.ndarray, seed: int) -> Any:
        shadow = _fresh_clone(model, seed)
        # train() fits x_train and reports accuracy on data's own test split (a log line)
        half = dataclasses.replace(data, x_train=x, y_train=y)
        train(shadow, half, epochs=epochs if epochs is not None else default_epochs(len(x)),
              seed=seed)
        return shadow
    return fit


# ---------------------------------------------------------------------------------------------
# the attacks


def _parse_attacks(attacks: Any) -> tuple[MembershipAttackName, ...]:
    if isinstance(attacks, (str, MembershipAttackName)):
        items = split_list(attacks) if isinstance(attacks, str) else [attacks]
    elif isinstance(attacks, Iterable):
        items = list(attacks)
    else:
        raise InputTypeError(f"expected attacks to be a name or a list of names, got "
                             f"{type(attacks).__name__} {attacks!r}")
    return tuple(dict.fromkeys(parse_enum("attacks", a, MembershipAttackName)
                               for a in items))


def _pick(n: int, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    if cap is None or cap >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=cap, replace=False))


def _lira(x: np.ndarray, y: np.ndarray, *, shadows: int, fraction: float,
          trainer: ShadowTrainer, seed: int, batch_size: int, progress: bool,
          target_logits: np.ndarray) -> np.ndarray:
    keep = shadow_split(len(x), shadows, seed=seed, fraction=fraction)
    phi = np.empty((shadows, len(x)))
    for s in tqdm(range(shadows), desc="shadow models", disable=not progress, leave=False):
        t0 = time.perf_counter()
        shadow = trainer(x[keep[s]], y[keep[s]], _derived_seed(seed, s))
        phi[s] = logit_confidence(batched_logits(shadow, x, batch_size), y)
        log.info("shadow %d/%d trained on %d examples in %.1f s", s + 1, shadows,
                 int(keep[s].sum()), time.perf_counter() - t0)
    return lira_scores(logit_confidence(target_logits, y), phi, keep)


def _art_blackbox(model: Any, data: Dataset, xm: np.ndarray, ym: np.ndarray,
                  xn: np.ndarray, yn: np.ndarray, seed: int) -> MembershipAttack:
    """ART's black-box attack: a random forest on (logits, label), fitted on a seeded half
    of the members and of the non-members and scored on the other halves."""
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBox

    rng = np.random.default_rng([seed, 0xA27])
    pm, pn = rng.permutation(len(xm)), rng.permutation(len(xn))
    fit_m, test_m = pm[:len(xm) // 2], pm[len(xm) // 2:]
    fit_n, test_n = pn[:len(xn) // 2], pn[len(xn) // 2:]
    k = num_outputs(model)
    onehot = np.eye(k, dtype=np.float32)
    with seeded_globals(seed):  # ART and scikit-learn draw from NumPy's global generator
        classifier = art_classifier(model, data.input_shape, data.bounds)
        attack = MembershipInferenceBlackBox(classifier, input_type="prediction",
                                             attack_model_type="rf")
        attack.attack_model.set_params(random_state=seed % (2**31))
        attack.fit(xm[fit_m], onehot[ym[fit_m]], xn[fit_n], onehot[yn[fit_n]])
        sm = attack.infer(xm[test_m], onehot[ym[test_m]], probabilities=True).reshape(-1)
        sn = attack.infer(xn[test_n], onehot[yn[test_n]], probabilities=True).reshape(-1)
    return score_attack(
        "art-blackbox", sm, sn,
        notes=f"ART MembershipInferenceBlackBox (random forest on logits and label), fitted "
              f"on a seeded half of the members ({len(fit_m)}) and non-members "
              f"({len(fit_n)}); every number is on the held-out halves ({len(test_m)} "
              f"members, {len(test_n)} non-members).")


def membership_audit(model: Any, data: Dataset, *, shadows: int = 8,
                     train_shadow: ShadowTrainer | None = None,
                     shadow_epochs: int | None = None,
                     attacks: Any = ("loss", "lira"), art: bool = True,
                     max_examples: int | None = None, seed: int = 0,
                     batch_size: int = DEFAULT_BATCH_SIZE,
                     progress: bool | None = None) -> MembershipAudit:
    """Audit ``model`` for membership leakage: members are ``data.x_train`` (what it was
    trained on), non-members ``data.x_test``.

    Attacks (``attacks``, names or a comma-separated string):

    - ``"loss"``: score ``−CE(model(x), y)`` (Yeom et al. 2018,
      https://arxiv.org/abs/1709.01604).
    - ``"lira"``: online LiRA (Carlini et al. 2022, https://arxiv.org/abs/2112.03570):
      ``shadows`` shadow models, each trained on a seeded random subset of members ∪
      non-members of the members' share (so a shadow trains on as many examples as the
      target: the paper's halves when members and non-members are as many;
      :func:`shadow_split`), then :func:`lira_scores` on φ = ``log p_y − log Σ_{j≠y} p_j``.

    and, with ``art``, ART's ``MembershipInferenceBlackBox`` (``"art-blackbox"``, evaluated
    on held-out halves). Every attack is reported with ROC, AUC (95% Hanley–McNeil
    interval), TPR at 1% and 0.1% FPR (threshold on the non-members' scores, empirical FPR
    ≤ target; 95% Wilson interval over the members) and membership advantage.

    Args:
        model: Keras classifier, inputs ``(N, *data.input_shape)`` -> logits ``(N, K)``.
        data: its training split (members) and a held-out split (non-members).
        shadows: number of LiRA shadow models, >= 2 (the paper uses 64+ for its best
            numbers; 8–16 give a usable online attack with the pooled variance).
        train_shadow: ``(x, y, seed) -> model`` training one shadow on ``x`` ``(M, ...)``,
            ``y`` ``(M,)`` and returning a model with logits, e.g. the target's own recipe
            (DP-SGD...). Default: a re-initialised ``keras.models.clone_model(model)`` trained
            by :func:`robustlab.training.train` for ``shadow_epochs`` epochs (None:
            :func:`~robustlab.training.default_epochs`). Use the target's recipe: shadows
            trained differently put the target's φ off their scale, which makes LiRA
            unreliable (weaker, or even scoring members below non-members).
        max_examples: cap on members and on non-members (each a seeded random subset).
        seed: seeds the subsets, the shadow splits and training, and ART's attack model.
        batch_size: examples per inference batch.
        progress: a tqdm bar over the shadows (None: unless ``ROBUSTLAB_PROGRESS=0``).

    Returns:
        :class:`~robustlab.results.MembershipAudit`.

    Raises:
        ValidationError: ``shadows < 2``, an unknown attack name, a model whose output
            count differs from ``data.num_classes``, or inputs of the wrong shape.
        InputTypeError: ``data`` not a :class:`~robustlab.data.Dataset`, ``train_shadow``
            not callable.

    Example:
        >>> audit = membership_audit(model, data, shadows=8, shadow_epochs=30)
        >>> audit.attack("lira").tpr_at_01pct, audit.consistent_with(8.0, 1e-5)
    """
    start = time.perf_counter()
    require_dataset(data)
    names = _parse_attacks(attacks)
    shadows = check_int("shadows", shadows, low=2)
    shadow_epochs = check_optional_int("shadow_epochs", shadow_epochs, low=1)
    max_examples = check_optional_int("max_examples", max_examples, low=2)
    seed = check_seed(seed)
    batch_size = check_int("batch_size", batch_size, low=1)
    if not isinstance(art, bool):
        raise InputTypeError(f"expected art to be True or False, got {art!r}")
    if not names and not art:
        raise ValidationError("expected at least one attack in attacks or art=True, got none")
    if train_shadow is not None and not callable(train_shadow):
        raise InputTypeError(f"expected train_shadow to be a function (x, y, seed) -> model, "
                             f"got {type(train_shadow).__name__}")
    outputs = num_outputs(model)
    if outputs != data.num_classes:
        raise ValidationError(f"expected model with {data.num_classes} outputs (the classes "
                              f"of {data.name}), got {outputs}")
    check_input_shape(model, data.x_train, name="data.x_train")
    if progress is None:
        progress = os.environ.get("ROBUSTLAB_PROGRESS", "1") != "0"

    rng = np.random.default_rng([seed, 0x5EB])
    mi, ni = _pick(len(data.x_train), max_examples, rng), _pick(len(data.x_test),
                                                                max_examples, rng)
    xm, ym = data.x_train[mi], data.y_train[mi]
    xn, yn = data.x_test[ni], data.y_test[ni]
    x, y = np.concatenate([xm, xn]), np.concatenate([ym, yn])
    members = np.r_[np.ones(len(xm), bool), np.zeros(len(xn), bool)]
    logits = batched_logits(model, x, batch_size)
    log.info("membership audit of %s on %s: %d members, %d non-members, attacks %s%s",
             getattr(model, "name", "model"), data.name, len(xm), len(xn),
             [n.value for n in names], " + ART" if art else "")

    results = []
    for name in names:
        if name is MembershipAttackName.LOSS:
            scores = loss_scores(logits, y)
            notes = "score = -cross-entropy of the target's logits (Yeom et al. 2018)"
        else:
            trainer = train_shadow if train_shadow is not None else \
                _default_trainer(model, data, shadow_epochs)
            # shadows train on as many examples as the target did (its share of the pool)
            fraction = len(xm) / len(x)
            scores = _lira(x, y, shadows=shadows, fraction=fraction, trainer=trainer,
                           seed=seed, batch_size=batch_size, progress=progress,
                           target_logits=logits)
            notes = (f"online LiRA, {shadows} shadows, each on a random {100 * fraction:.0f}% "
                     f"of the {len(x)} pooled examples (the members' share, so shadows train "
                     f"on as many as the target), "
                     + ("one pooled" if shadows < _PER_EXAMPLE_VARIANCE_FROM
                        else "per-example") + " variance")
        results.append(score_attack(name.value, scores[members], scores[~members],
                                    notes=notes))
    if art:
        results.append(_art_blackbox(model, data, xm, ym, xn, yn, seed))

    resolution = 1.0 / len(xn)
    audit_notes = []
    low = [f"{100 * f:g}%" for f in LOW_FPRS if f < resolution]
    if low:
        audit_notes.append(f"FPR {', '.join(low)} is below the resolution 1/{len(xn)} of "
                           f"{len(xn)} non-members: measured at FPR 0 (TPR is a lower "
                           f"bound of the attack's power there).")
    if max_examples is not None:
        audit_notes.append(f"seeded subsets of at most {max_examples} members and "
                           f"non-members")
    return MembershipAudit(
        attacks=tuple(results), shadows=shadows, seed=seed, fpr_resolution=resolution,
        seconds=time.perf_counter() - start, model=str(getattr(model, "name", "model")),
        dataset=data.name, n_members=len(xm), n_nonmembers=len(xn),
        notes=tuple(audit_notes))

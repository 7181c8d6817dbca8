"""Sanity checks that flag an evaluation that may be lying.

A robust accuracy is an upper bound: it is only as good as the attacks behind it. These
checks look for the known symptoms of a weak evaluation (gradient masking, too few steps or
restarts, a saturated loss), after Athalye, Carlini & Wagner 2018, "Obfuscated gradients give
a false sense of security", https://arxiv.org/abs/1802.00420, Carlini et al. 2019, "On
evaluating adversarial robustness", https://arxiv.org/abs/1902.06705, and the flags of
AutoAttack (Croce & Hein 2020, https://arxiv.org/abs/2003.01690).

Every check returns a :class:`Check` (status pass / warn / fail / skip, the measured
evidence, an explanation with the reference). :func:`robustlab.evaluate` runs them all
(:func:`run_checks`); the model-only ones (:func:`probability_outputs`,
:func:`gradient_health`, :func:`randomness`) also work on their own.

Checks that attack use the examples' ids for their random starts, so they are seeded and
repeatable; they run on at most ``n_check`` examples (the first correctly classified ones).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustlab._env import default_jit_compile
from robustlab.attacks import AttackSpec, enforce_threat_model, input_gradient, random_start
from robustlab.errors import RobustlabWarning, ValidationError
from robustlab.inference import batched_logits, resolve_batch_size
from robustlab.results import Check, Convergence, EvaluationResult, Status
from robustlab.types import Backend, Loss, Norm, ThreatModel

__all__ = ["Status", "Check", "Convergence", "run_checks", "probability_outputs",
           "gradient_health", "randomness", "check_logits"]

log = logging.getLogger(__name__)

# Thresholds.
ZERO_GRAD_WARN, ZERO_GRAD_FAIL = 0.01, 0.10  # fraction of examples with an all-zero gradient
# Another attack (noise, Square, margin loss, FGSM) breaking examples the evaluation counted
# robust lowers the robust accuracy of the checked examples: by up to 1 point passes (one or
# two examples of a few hundred: the noise of random starts), by more than 5 points (and at
# least 3 examples) fails, in between warns. Every such check is judged by this one rule.
EXTRA_BREAK_PASS, EXTRA_BREAK_FAIL = 0.01, 0.05
# robust accuracy may fall by max(1 point, a quarter of its 95% interval's half-width) when the
# steps or the restarts double: smaller moves are small against the sampling error
CONVERGENCE_TOL = 0.01
NOISE_DRAWS = 32  # random points of the ball tried per example
SQUARE_QUERIES = 300
MARGIN_STEPS = 100  # APGD-DLR iterations of the margin check (the reference's budget)

ATHALYE = "Athalye, Carlini & Wagner 2018, https://arxiv.org/abs/1802.00420"
CARLINI = "Carlini et al. 2019, https://arxiv.org/abs/1902.06705"
CROCE = "Croce & Hein 2020, https://arxiv.org/abs/2003.01690"


# ---------------------------------------------------------------------------------------------
# checks on the model alone


def probability_outputs(model: Any, x: np.ndarray, *, atol: float = 1e-3) -> Check:
    """Fail if the model's outputs look like probabilities: every row in [0, 1] and summing
    to 1 (on up to 256 examples of ``x``, shape ``(N, H, W, C)``), or a softmax last layer."""
    out = batched_logits(model, np.asarray(x[:256], np.float32), 256)
    sums = out.sum(axis=-1)
    rows = np.abs(sums - 1.0) < atol
    in_unit = (out.min(axis=-1) >= 0.0) & (out.max(axis=-1) <= 1.0)
    frac = float((rows & in_unit).mean())
    last = model.layers[-1] if getattr(model, "layers", None) else None
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    softmax = activation == "softmax" or type(last).__name__ == "Softmax"
    failed = softmax or frac > 0.99
    return Check(
        "probability_outputs", "Model outputs logits, not probabilities",
        Status.FAIL if failed else Status.PASS,
        f"{100 * frac:.1f}% of {len(out)} output rows lie in [0, 1] and sum to 1"
        + ("; the last layer is a softmax" if softmax else ""),
        "Attacks differentiate a loss of the logits. Through a final softmax the cross-entropy "
        "is computed on probabilities, whose gradients vanish for confident predictions, so "
        "attacks fail and robustness looks better than it is. Remove the softmax.",
        CARLINI, {"fraction_probability_rows": frac, "softmax_layer": softmax})


def check_logits(model: Any, x: np.ndarray, *, atol: float = 1e-3) -> bool:
    """Warn when ``model`` looks like it outputs probabilities rather than logits.

    Returns True if the outputs look like logits. The detection is
    :func:`probability_outputs` (a softmax last layer, or outputs in [0, 1] summing to 1 per
    row on the sample ``x``, shape ``(N, H, W, C)``).
    """
    if probability_outputs(model, x, atol=atol).status is Status.FAIL:
        warnings.warn(
            f"model {model.name!r} seems to output probabilities (softmax) instead of logits. "
            "Cross-entropy gradients through a softmax vanish for confident predictions, "
            "which makes attacks fail and robustness look better than it is. Remove the "
            "softmax (attacks and training here expect logits).",
            RobustlabWarning, stacklevel=2)
        return False
    return True


def gradient_health(model: Any, x: np.ndarray, y: np.ndarray, *,
                    batch_size: int | None = None) -> Check:
    """Fraction of examples whose cross-entropy input gradient is all zero, or has NaN or
    infinite entries (``x`` ``(N, H, W, C)``, labels ``y`` ``(N,)``)."""
    import tensorflow as tf

    size = resolve_batch_size(batch_size, model, x.shape[1:])
    zero = nonfinite = 0
    for i in range(0, len(x), size):
        xb = tf.constant(x[i:i + size])
        grad, _ = input_gradient(model, xb, tf.constant(y[i:i + size]), Loss.CE, False)
        g = grad.numpy().reshape(len(xb), -1)
        bad = ~np.isfinite(g).all(axis=1)
        nonfinite += int(bad.sum())
        zero += int(((np.abs(g) == 0).all(axis=1) & ~bad).sum())
    n = len(x)
    if n == 0:
        return Check("gradients", "Input gradients are informative", Status.SKIP,
                     "no examples to check", "", ATHALYE)
    fz, fn = zero / n, nonfinite / n
    status = Status.FAIL if fn > 0 or fz > ZERO_GRAD_FAIL else (
        Status.WARN if fz > ZERO_GRAD_WARN else Status.PASS)
    return Check(
        "gradients", "Input gradients are informative",
        status, f"{zero} of {n} examples ({100 * fz:.1f}%) have an all-zero cross-entropy "
        f"gradient, {nonfinite} a NaN or infinite one",
        "A gradient attack cannot move an example whose gradient is zero: its robustness is "
        "an artefact (shattered or vanishing gradients, e.g. saturated softmax from very "
        "large logits, or non-differentiable preprocessing). Attack with a margin or DLR "
        "loss, or with a black-box attack, to see the real number.",
        ATHALYE, {"fraction_zero": fz, "fraction_nonfinite": fn, "n": n})


def randomness(model: Any, x: np.ndarray, *, repeats: int = 3) -> Check:
    """Fail if repeated inference-mode forward passes on the same ``x`` differ."""
    sample = np.asarray(x[:64], np.float32)
    outs = [batched_logits(model, sample, len(sample)) for _ in range(repeats)]
    diff = float(max(np.abs(o - outs[0]).max() for o in outs[1:]))
    return Check(
        "randomness", "Model is deterministic",
        Status.FAIL if diff > 1e-5 else Status.PASS,
        f"largest change of an output over {repeats} identical forward passes: {diff:.3g}",
        "A randomized model (noise, random transforms, dropout at inference) gives each "
        "attack step a different gradient; attacks then look weak. Evaluate it with the "
        "expectation over transformation (average gradients over many draws).",
        ATHALYE, {"max_abs_difference": diff, "repeats": repeats})


# ---------------------------------------------------------------------------------------------
# checks on an evaluation


@dataclass
class _Context:
    model: Any
    x: np.ndarray
    y: np.ndarray
    result: EvaluationResult
    seed: int
    batch_size: int
    jit: bool
    clean_correct: np.ndarray  # (N,) bool
    rows: np.ndarray  # the checked examples: correctly classified, at most n_check
    focus: int | None  # index of the ε where checks attack (None: no ε > 0)

    @property
    def specs(self) -> tuple[AttackSpec, ...]:
        return self.result.specs

    @property
    def masks(self) -> dict[str, np.ndarray]:  # attack label -> (N, n_eps) robust
        return self.result.attack_masks

    @property
    def worst(self) -> np.ndarray:
        if self.result.robust_mask is None:
            raise ValidationError("expected an EvaluationResult with robust_mask (made by "
                                  "robustlab.evaluate) to run the checks on")
        return self.result.robust_mask

    def threat(self, eps: float) -> ThreatModel:
        """The evaluation's own threat model (norm and bounds) at ``eps``."""
        return self.result.threat(eps)

    def robust_after(self, spec: AttackSpec, rows: np.ndarray, eps: float) -> np.ndarray:
        """Which of ``rows`` are still classified correctly after ``spec`` at ``eps``."""
        if len(rows) == 0:
            return np.zeros(0, bool)
        x_adv = spec.run(self.model, self.x[rows], self.y[rows], threat=self.threat(eps),
                         seed=self.seed, batch_size=self.batch_size, jit=self.jit, ids=rows)
        return batched_logits(self.model, x_adv, self.batch_size).argmax(1) == self.y[rows]

    def iterative(self) -> AttackSpec:
        """The strongest gradient attack of the evaluation (most steps × restarts), as a
        native cross-entropy PGD where possible; PGD-20 if there is none."""
        pgds = [s for s in self.specs if s.name == "pgd"]
        if not pgds:
            return AttackSpec("pgd", steps=20)
        best = max(pgds, key=lambda s: (s.loss is Loss.CE, (s.steps or 1) * s.restarts))
        return dataclasses.replace(best, backend=Backend.NATIVE)

    @property
    def single_step_only(self) -> bool:
        """The evaluation ran no iterative attack (e.g. FGSM alone)."""
        return not any(s.iterative for s in self.specs)


def _extra_breaks(broken: int, base: int) -> Status:
    """Status when another attack broke ``broken`` examples the evaluation counted as
    robust, out of the ``base`` examples whose accuracy the check measures (so
    ``broken / base`` is how far that accuracy would fall): pass up to
    ``EXTRA_BREAK_PASS``, fail above ``EXTRA_BREAK_FAIL`` (and at least 3 examples), else
    warn."""
    share = broken / max(1, base)
    if broken == 0 or share <= EXTRA_BREAK_PASS:
        return Status.PASS
    return Status.FAIL if share > EXTRA_BREAK_FAIL and broken >= 3 else Status.WARN


def _check_single_step(ctx: _Context) -> Check:
    title = "Iterative attack at least as strong as single-step"
    ref = "Carlini et al. 2019 §5.2, " + CARLINI.split(", ")[-1]
    single = [s for s in ctx.specs if s.kind.ascent and not s.iterative]
    iterative = [s for s in ctx.specs if s.kind.ascent and s.iterative]
    explanation = ("PGD starts where FGSM stops and takes many steps, so it should break every "
                   "example FGSM breaks. When it does not, its gradients are unreliable "
                   "(masking) or its step size is wrong.")
    if not iterative:
        return Check("single_vs_iterative", title, Status.SKIP,
                     "no iterative attack was run", explanation, ref)
    pos = [j for j, e in enumerate(ctx.result.epsilons) if e > 0]
    if single and not ctx.result.cascade:  # both attacks' own results on every example
        it_mask = np.logical_and.reduce([ctx.masks[s.label] for s in iterative])
        fg_mask = np.logical_and.reduce([ctx.masks[s.label] for s in single])
        where = "all evaluated examples"
    else:  # no FGSM, or a cascade (later masks include earlier attacks): run both here
        it_mask = np.ones((len(ctx.rows), len(ctx.result.epsilons)), bool)
        fg_mask = it_mask.copy()
        for j in pos:
            eps = ctx.result.epsilons[j]
            fg_mask[:, j] = ctx.robust_after(AttackSpec("fgsm"), ctx.rows, eps)
            it_mask[:, j] = ctx.robust_after(ctx.iterative(), ctx.rows, eps)
        where = f"{len(ctx.rows)} checked examples"
    excess = {ctx.result.epsilons[j]: int(it_mask[:, j].sum() - fg_mask[:, j].sum())
              for j in pos}
    worse_eps = [eps for eps, more in excess.items() if more > 0]
    only_fgsm = [int((~fg_mask[:, j] & it_mask[:, j]).sum()) for j in pos]
    base = len(fg_mask)  # all evaluated examples, or the checked ones
    # An iterative attack with random starts can leave standing an example or two that FGSM
    # broke: judged like every other "another attack broke more" check (noise up to 1%).
    status = _extra_breaks(max([*only_fgsm, *excess.values()], default=0), base)
    if worse_eps:
        most = max(excess.values())
        evidence = (f"iterative accuracy above single-step at ε {worse_eps} by at most "
                    f"{most} of {base} examples ({100 * most / max(1, base):.1f} pt; up "
                    f"to {100 * EXTRA_BREAK_PASS:g} pt is sampling noise of the random "
                    f"starts, above {100 * EXTRA_BREAK_FAIL:g} pt fails); ")
    else:
        evidence = "iterative accuracy ≤ single-step at every ε; "
    evidence += f"examples broken only by single-step per ε > 0: {only_fgsm} (on {where})"
    return Check("single_vs_iterative", title, status, evidence, explanation, ref,
                 {"epsilons_iterative_weaker": worse_eps, "broken_only_by_single_step":
                  only_fgsm})


def _check_monotone(ctx: _Context) -> Check:
    title = "Accuracy falls as ε grows"
    explanation = ("A larger ball contains every smaller one, so robust accuracy can only "
                   "fall as ε grows. An attack that fails at a large ε on examples it broke "
                   "at a smaller one is not optimising well (wrong step size, masked "
                   "gradients). Here: each attack's independent accuracy per ε, and a "
                   "re-attack at the largest ε of examples broken at a smaller one.")
    rises = {c.label: [c.points[j].epsilon for j in range(1, len(c.points))
                       if c.points[j].accuracy > c.points[j - 1].accuracy + 1e-12]
             for c in ctx.result.curves}
    rises = {k: v for k, v in rises.items() if v}
    eps = ctx.result.epsilons
    spec = ctx.iterative()
    mask = ctx.masks.get(spec.label, ctx.worst)
    broken_small = ctx.clean_correct & ~mask[:, :-1].all(axis=1)
    rows = np.intersect1d(np.flatnonzero(broken_small), ctx.rows)
    missed = 0
    if eps[-1] > 0 and len(rows):
        missed = int(ctx.robust_after(spec, rows, eps[-1]).sum())
    worst_rise = max((c.points[j].accuracy - c.points[j - 1].accuracy
                      for c in ctx.result.curves for j in range(1, len(c.points))), default=0.0)
    status = _extra_breaks(missed, len(ctx.rows))
    if rises:  # a rise of one example or so is sampling noise of the random starts: warn
        status = Status.FAIL if worst_rise > EXTRA_BREAK_PASS else Status.WARN
    evidence = (f"accuracy rises with ε for {rises}; " if rises else
                "no curve rises with ε; ") + \
        f"{spec.label} at ε {eps[-1]:g} re-attacked {len(rows)} examples broken at a " \
        f"smaller ε and failed on {missed}"
    return Check("monotone", title, status, evidence, explanation, CARLINI,
                 {"rising": rises, "reattacked": len(rows), "missed": missed})


def _check_large_budget(ctx: _Context) -> Check:
    base = ctx.threat(0.0)
    norm = base.norm
    title = "An unlimited attack reaches chance level"
    fixed = 0 if base.constraints is None else int((~base.constraints.mutable).sum())
    if fixed:
        return Check("large_budget", title, Status.SKIP,
                     f"{fixed} features are immutable, so even an unlimited attacker cannot "
                     f"erase what they tell the model",
                     "The check assumes an adversary who can turn any input into any other; "
                     "immutable features rule that out, so accuracy need not fall to chance.",
                     ATHALYE, {"immutable": fixed})
    # half the box in L∞ (its centre is in every ball), its whole diagonal in L2
    eps = base.box_size(ctx.x.shape[1:]) * (0.5 if norm is Norm.LINF else 1.0)
    spec = dataclasses.replace(ctx.iterative(), restarts=1)
    acc = float(ctx.robust_after(spec, ctx.rows, eps).mean()) if len(ctx.rows) else 0.0
    k = int(ctx.result.model["num_classes"])
    chance = 1.0 / k
    status = Status.PASS if acc <= chance else Status.FAIL
    return Check(
        "large_budget", title, status,
        f"{spec.label} at ε {eps:.4g} ({norm.value}; the ball holds an image that is the same "
        f"for every example): {100 * acc:.1f}% still correct on {len(ctx.rows)} examples "
        f"(chance {100 * chance:.1f}%)",
        "With a budget this large an adversary can turn any image into any other, so "
        "accuracy must fall to chance. If it does not, the attack is being stopped by the "
        "model's gradients, not by robustness.",
        ATHALYE, {"epsilon": eps, "accuracy": acc, "chance": chance, "n": len(ctx.rows)})


def _check_noise(ctx: _Context) -> Check:
    eps_list = ctx.result.epsilons
    broken_counts, checked_counts = [], []
    for j, eps in enumerate(eps_list):
        if eps <= 0:
            continue
        rows = ctx.rows[ctx.worst[ctx.rows, j]]
        threat = ctx.threat(eps)
        broken = np.zeros(len(rows), bool)
        for draw in range(NOISE_DRAWS):
            if len(rows) == 0:
                break
            x_noise = random_start(ctx.x[rows], threat, seed=ctx.seed, restart=10_000 + draw,
                                   ids=rows)
            if threat.norm is Norm.LINF:  # corners of the cube: the largest L∞ noise
                reach = eps if threat.weight is None else eps * threat.weight
                x_noise = enforce_threat_model(ctx.x[rows] + reach * np.sign(
                    x_noise - ctx.x[rows] + 1e-12), ctx.x[rows], threat)
            pred = batched_logits(ctx.model, x_noise, ctx.batch_size).argmax(1)
            broken |= pred != ctx.y[rows]
        broken_counts.append(int(broken.sum()))
        checked_counts.append(int(len(rows)))
    worst = max(range(len(broken_counts)), key=lambda i: broken_counts[i], default=None)
    status = Status.SKIP if worst is None else _extra_breaks(broken_counts[worst],
                                                             len(ctx.rows))
    return Check(
        "random_noise", "Random noise does not beat the attacks", status,
        f"{NOISE_DRAWS} random points of the ε-ball per example still standing after the "
        f"attacks; broken per ε > 0: {broken_counts} of {checked_counts}",
        "A white-box attack should find everything random search finds. Examples that "
        "random noise breaks but the attacks did not point to gradients that lead the attack "
        "away from the adversarial region (masking).",
        ATHALYE, {"draws": NOISE_DRAWS, "broken": broken_counts, "checked": checked_counts})


def _focus_attack(ctx: _Context, name: str, title: str, spec: AttackSpec,
                  explanation: str, reference: str, *, already: list[AttackSpec]) -> Check:
    """Shared shape of the black-box and margin checks: another attack at the focus ε on the
    checked examples that survived every attack; any it breaks means the number was high."""
    if ctx.single_step_only:
        # With single-step attacks alone, any stronger attack breaks more: that diagnoses a
        # weak attack set, not masking or saturated logits.
        explanation = (f"The evaluation's attacks were all single-step ("
                       f"{', '.join(s.label for s in ctx.specs)}). A single step is a weak "
                       f"attack on most models, so {spec.label} breaking more examples "
                       f"says the reported number is too high because the attack set is "
                       f"weak (single-step only); it does not by itself point to gradient "
                       f"masking or saturated logits. Add pgd (and pgd-margin) to the attacks "
                       f"and look at this check again.")
    if ctx.focus is None:
        return Check(name, title, Status.SKIP, "no ε > 0", explanation, reference)
    eps = ctx.result.epsilons[ctx.focus]
    if already:  # the evaluation ran such an attack: compare its examples with the others
        own = np.logical_and.reduce([ctx.masks[s.label] for s in already])
        others = [s for s in ctx.specs if s not in already]
        if not others:
            return Check(name, title, Status.SKIP, "no other attack to compare with",
                         explanation, reference)
        rest = np.logical_and.reduce([ctx.masks[s.label] for s in others])
        pos = [j for j, e in enumerate(ctx.result.epsilons) if e > 0]
        counts = [int((rest[:, j] & ~own[:, j]).sum()) for j in pos]
        standing = [int(rest[:, j].sum()) for j in pos]
        j_max = int(np.argmax(counts))
        status = _extra_breaks(counts[j_max], len(ctx.x))
        labels = ", ".join(s.label for s in already)
        return Check(name, title, status,
                     f"{labels} (in the evaluation) broke {counts} examples per ε > 0 that "
                     f"the other attacks left standing ({standing})",
                     explanation, reference, {"broken": counts, "standing": standing,
                                              "attack": labels})
    rows = ctx.rows[ctx.worst[ctx.rows, ctx.focus]]
    still = ctx.robust_after(spec, rows, eps)
    broken = int((~still).sum())
    status = _extra_breaks(broken, len(ctx.rows))
    evidence = (f"{spec.label} at ε {eps:g} broke {broken} of the {len(rows)} checked "
                f"examples that survived every attack")
    if ctx.single_step_only and status is not Status.PASS:
        evidence += ("; the evaluation ran only single-step attacks, so this says the "
                     "attack set is weak (single-step only): add an iterative attack such "
                     "as pgd, then look at this check again")
    return Check(name, title, status, evidence, explanation, reference,
                 {"epsilon": eps, "broken": broken, "checked": int(len(rows)),
                  "attack": spec.label})


def _check_black_box(ctx: _Context) -> Check:
    return _focus_attack(
        ctx, "black_box", "A black-box attack does not beat the white-box attacks",
        AttackSpec("square", steps=SQUARE_QUERIES),
        "Square attack (Andriushchenko et al. 2020, https://arxiv.org/abs/1912.00049) "
        "uses only the model's outputs. If it breaks examples that gradient attacks did not, "
        "the gradients are masked and the white-box number is too high.",
        ATHALYE, already=[s for s in ctx.specs if not s.gradient_based])


def _check_margin(ctx: _Context) -> Check:
    # native APGD on the DLR loss (>= 3 classes: it divides by z1 - z3), else PGD on the margin
    if int(ctx.result.model["num_classes"]) >= 3:
        spec = AttackSpec("apgd-dlr", steps=MARGIN_STEPS)
    else:
        spec = dataclasses.replace(ctx.iterative(), loss=Loss.MARGIN)
    return _focus_attack(
        ctx, "margin_loss", "A margin-loss attack does not beat cross-entropy", spec,
        "The margin loss max_{j≠y} z_j − z_y (Carlini & Wagner 2017) and its scale-free "
        "ratio DLR (Croce & Hein 2020) do not saturate: scaling the logits leaves their "
        "gradient direction unchanged, where cross-entropy's vanishes. If APGD-DLR (or PGD "
        "on the margin, for two classes) breaks examples that cross-entropy attacks did not, "
        "the logits are saturated and the cross-entropy number is too high: add a margin "
        "attack (apgd-dlr, apgd-t or pgd-margin) to the evaluation.",
        CROCE, already=[s for s in ctx.specs if s.loss in (Loss.MARGIN, Loss.DLR)])


def _convergence(ctx: _Context) -> tuple[Check, Convergence | None]:
    title = "Attack has converged (steps and restarts)"
    explanation = ("If doubling the steps or the restarts still lowers the accuracy, the "
                   "attack has not converged and the reported number is too high. Run more "
                   "steps or restarts until it stops moving.")
    if ctx.focus is None or not len(ctx.rows):
        return Check("convergence", title, Status.SKIP, "no ε > 0", explanation, CARLINI), None
    eps = ctx.result.epsilons[ctx.focus]
    spec = ctx.iterative()
    n_steps = int(spec.steps or 1)
    steps = sorted({max(1, n_steps // 4), max(1, n_steps // 2), n_steps, 2 * n_steps})
    acc = [float(ctx.robust_after(dataclasses.replace(spec, steps=s), ctx.rows, eps).mean())
           for s in steps]
    more = dataclasses.replace(spec, restarts=2 * spec.restarts)
    acc_r = float(ctx.robust_after(more, ctx.rows, eps).mean())
    base = acc[steps.index(n_steps)]
    drop_steps, drop_restarts = base - acc[-1], base - acc_r
    point = ctx.result.worst_case.points[ctx.focus]
    tol = max(CONVERGENCE_TOL, (point.ci_high - point.ci_low) / 8)
    status = Status.WARN if max(drop_steps, drop_restarts) > tol else Status.PASS
    conv = Convergence(spec.label, float(eps), int(len(ctx.rows)), tuple(steps), tuple(acc),
                       spec.restarts, acc_r)
    return Check(
        "convergence", title, status,
        f"{spec.label} at ε {eps:g} on {len(ctx.rows)} examples: accuracy "
        f"{100 * base:.1f}%; with {2 * n_steps} steps {100 * acc[-1]:.1f}%, with "
        f"{2 * spec.restarts} restarts {100 * acc_r:.1f}% (tolerance {100 * tol:.1f} pt)",
        explanation, CARLINI,
        {"epsilon": eps, "accuracy": base, "double_steps": acc[-1],
         "double_restarts": acc_r, "tolerance": tol}), conv


def run_checks(model: Any, x: np.ndarray, y: np.ndarray, result: EvaluationResult, *,
               n_check: int = 200, seed: int = 0, batch_size: int | None = None,
               jit_compile: bool | None = None, clean_correct: np.ndarray | None = None
               ) -> tuple[tuple[Check, ...], Convergence | None]:
    """Run every check on an evaluation, with the attacks, threat model (norm and bounds)
    and per-attack masks the evaluation itself used (all carried by ``result``).

    Args:
        model: the evaluated model (logits).
        x, y: the evaluated examples ``(N, H, W, C)`` and labels ``(N,)``, validated, as
            ``result`` saw them.
        result: the :class:`~robustlab.results.EvaluationResult` (needs ``robust_mask``
            and ``attack_masks``).
        n_check: examples the attacking checks use at most (the first correct ones).
        seed, batch_size, jit_compile: as for :func:`robustlab.evaluate`.
        clean_correct: ``(N,)`` bool, the model's clean predictions are right (computed
            when not given; :func:`robustlab.evaluate` passes the ones it has).

    Returns:
        ``(checks, convergence)``.
    """
    size = resolve_batch_size(batch_size, model, x.shape[1:])
    if clean_correct is None:
        clean_correct = batched_logits(model, x, size).argmax(1) == y
    eps = result.epsilons
    pos = [j for j, e in enumerate(eps) if e > 0]
    focus = None
    if pos:  # the ε where worst-case accuracy is closest to half the clean accuracy
        target = result.clean_accuracy / 2
        focus = min(pos, key=lambda j: abs(result.worst_case.points[j].accuracy - target))
    ctx = _Context(model=model, x=x, y=y, result=result, seed=seed, batch_size=size,
                   jit=default_jit_compile() if jit_compile is None else bool(jit_compile),
                   clean_correct=clean_correct, rows=np.flatnonzero(clean_correct)[:n_check],
                   focus=focus)
    checks = [probability_outputs(model, x), gradient_health(model, x[ctx.rows], y[ctx.rows],
                                                             batch_size=batch_size),
              randomness(model, x)]
    for fn in (_check_single_step, _check_monotone, _check_large_budget, _check_noise,
               _check_black_box, _check_margin):
        log.info("check %s", fn.__name__[7:])
        checks.append(fn(ctx))
    conv_check, conv = _convergence(ctx)
    checks.append(conv_check)
    return tuple(checks), conv

"""The wider attack catalogue, run through ART behind robustlab's attack signature: APGD
(cross-entropy and DLR), Square (black-box), Carlini-Wagner L2, DeepFool and ART's AutoAttack.

Every one goes through :func:`~robustlab.attacks._runner.run_attack`, so batching, restarts
with the per-example strongest result, label defaults and the threat model (projection onto
the ε-ball and the bounds, whatever the attack returned) are the same as for FGSM and PGD.
The minimum-norm attacks (CW-L2, DeepFool) search for the smallest L2 perturbation that fools
the model; under an ε budget their result is projected onto the ball, so an example counts as
broken only if the projected point still fools the model.

Costs measured with ART 1.20.1 on a digits CNN, 200 images, 2-core CPU: DeepFool 4.6 s,
Square (100 queries) 2.3 s, APGD-CE 22 s, APGD-DLR 60 s, CW-L2 81 s. Budget accordingly, and
prefer :func:`robustlab.evaluate`'s cascade, which attacks only the examples still standing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from robustlab._validate import check_int
from robustlab.attacks._runner import BatchAttack, boundary, run_attack
from robustlab.attacks.peers import art_batch, numpy_norm
from robustlab.errors import ValidationError
from robustlab.inference import num_outputs
from robustlab.types import Constraints, ThreatModel

__all__ = ["carlini_wagner_l2", "deepfool", "auto_attack", "apgd_batch",
           "square_batch", "cw_batch", "deepfool_batch", "auto_attack_batch"]

# ``make(classifier, threat, n) -> ART attack``; wrapped by :func:`art_batch` into a batch
# implementation for the engine.
Make = Callable[..., Any]


def _run(impl: BatchAttack, model: Any, x: Any, y: Any, *, epsilon: Any, norm: Any,
         bounds: Any, restarts: int, seed: int, batch_size: int | None, ids: Any,
         constraints: Constraints | None) -> np.ndarray:
    given = boundary(model, x, y, epsilon=epsilon, norm=norm, bounds=bounds, targeted=False,
                     loss="ce", restarts=restarts, random_start=True, seed=seed,
                     batch_size=batch_size, jit_compile=False, ids=ids,
                     constraints=constraints)
    return run_attack(impl, model, given, targeted=False, random_start=True)


def apgd_batch(steps: int, loss: str) -> BatchAttack:
    """ART's APGD as a batch implementation (``loss`` ``"ce"`` or ``"dlr"``)."""
    loss_type = {"ce": "cross_entropy", "dlr": "difference_logits_ratio"}.get(str(loss).lower())
    if loss_type is None:
        raise ValidationError(f"expected loss 'ce' or 'dlr' for APGD, got {loss!r}")
    steps = check_int("steps", steps, low=1)

    def make(clf: Any, threat: ThreatModel, n: int, **_: Any) -> Any:
        from art.attacks.evasion import AutoProjectedGradientDescent

        return AutoProjectedGradientDescent(
            clf, norm=numpy_norm(threat.norm), eps=threat.epsilon, eps_step=2 * threat.epsilon,
            max_iter=steps, nb_random_init=1, batch_size=n, loss_type=loss_type,
            verbose=False)

    return art_batch(make, masks=True)  # APGD's generate takes a mask


def square_batch(steps: int) -> BatchAttack:
    """ART's Square attack (``steps`` queries) as a batch implementation."""
    steps = check_int("steps", steps, low=1)

    def make(clf: Any, threat: ThreatModel, n: int, **_: Any) -> Any:
        from art.attacks.evasion import SquareAttack

        return SquareAttack(clf, norm=numpy_norm(threat.norm), eps=threat.epsilon,
                            max_iter=steps, nb_restarts=1, batch_size=n, verbose=False)

    return art_batch(make)


def cw_batch(steps: int, binary_search_steps: int = 5) -> BatchAttack:
    """ART's Carlini-Wagner L2 as a batch implementation."""
    steps = check_int("steps", steps, low=1)
    searches = check_int("binary_search_steps", binary_search_steps, low=1)

    def make(clf: Any, threat: ThreatModel, n: int, **_: Any) -> Any:
        from art.attacks.evasion import CarliniL2Method

        return CarliniL2Method(clf, max_iter=steps, binary_search_steps=searches,
                               batch_size=n, verbose=False)

    return art_batch(make)


def deepfool_batch(steps: int) -> BatchAttack:
    """ART's DeepFool as a batch implementation."""
    steps = check_int("steps", steps, low=1)

    def make(clf: Any, threat: ThreatModel, n: int, **_: Any) -> Any:
        from art.attacks.evasion import DeepFool

        return DeepFool(clf, max_iter=steps, batch_size=n, verbose=False)

    return art_batch(make)


def auto_attack_batch() -> BatchAttack:
    """ART's AutoAttack (its default ensemble) as a batch implementation."""
    def make(clf: Any, threat: ThreatModel, n: int, **_: Any) -> Any:
        try:
            from art.attacks.evasion import AutoAttack
        except ImportError as exc:  # ART imports the optional `multiprocess` package here
            raise ValidationError(f"ART's AutoAttack could not be imported ({exc}); install "
                                  f"the 'multiprocess' package") from exc
        return AutoAttack(clf, norm=numpy_norm(threat.norm), eps=threat.epsilon,
                          eps_step=threat.epsilon / 4, batch_size=n)

    return art_batch(make, masks=True)  # passed on to its attacks


def carlini_wagner_l2(model: Any, x: Any, y: Any = None, *, epsilon: Any, norm: Any = "l2",
                      steps: int = 10, bounds: Any = None,
                      batch_size: int | None = None, seed: int = 0, ids: Any = None,
                      binary_search_steps: int = 5,
                      constraints: Constraints | None = None) -> np.ndarray:
    """Carlini-Wagner L2 (ART): minimum-norm attack on the logit margin, then projected onto
    the ε-ball of ``norm``.

    Carlini & Wagner 2017, https://arxiv.org/abs/1608.04644.

    Args:
        steps: optimiser iterations per binary-search step (ART's ``max_iter``).
        binary_search_steps: searches over the trade-off constant.
        model, x, y, epsilon, norm, bounds, batch_size, seed, ids, constraints: as for
            :func:`~robustlab.attacks.pgd`.
    """
    return _run(cw_batch(steps, binary_search_steps), model, x, y, epsilon=epsilon, norm=norm,
                bounds=bounds, restarts=1, seed=seed, batch_size=batch_size, ids=ids,
                constraints=constraints)


def deepfool(model: Any, x: Any, y: Any = None, *, epsilon: Any, norm: Any = "l2",
             steps: int = 100, bounds: Any = None,
             batch_size: int | None = None, seed: int = 0, ids: Any = None,
             constraints: Constraints | None = None) -> np.ndarray:
    """DeepFool (ART): minimum-norm L2 attack by linearising the decision boundaries, then
    projected onto the ε-ball of ``norm``. Untargeted only.

    Moosavi-Dezfooli et al. 2016, https://arxiv.org/abs/1511.04599.

    Args:
        steps: maximum iterations (ART's ``max_iter``).
        model, x, y, epsilon, norm, bounds, batch_size, seed, ids, constraints: as for
            :func:`~robustlab.attacks.pgd`.
    """
    return _run(deepfool_batch(steps), model, x, y, epsilon=epsilon, norm=norm, bounds=bounds,
                restarts=1, seed=seed, batch_size=batch_size, ids=ids,
                constraints=constraints)


def auto_attack(model: Any, x: Any, y: Any = None, *, epsilon: Any, norm: Any = "linf",
                bounds: Any = None, batch_size: int | None = None,
                seed: int = 0, ids: Any = None,
                constraints: Constraints | None = None) -> np.ndarray:
    """ART's AutoAttack: its default ensemble (APGD-CE, APGD-DLR, DeepFool, Square), the
    strongest result per example. Slow: budget minutes per hundred images on a CPU.

    Croce & Hein 2020, https://arxiv.org/abs/2003.01690. Arguments as for
    :func:`~robustlab.attacks.pgd` (``constraints`` included). Needs a model with at least
    3 classes (ART's ensemble includes APGD-DLR).
    """
    if num_outputs(model) < 3:
        raise ValidationError(f"expected a model with at least 3 classes for auto_attack (ART's "
                              f"ensemble includes APGD-DLR), got {num_outputs(model)}")
    return _run(auto_attack_batch(), model, x, y, epsilon=epsilon, norm=norm, bounds=bounds,
                restarts=1, seed=seed, batch_size=batch_size, ids=ids,
                constraints=constraints)

"""Adversarial attacks as pure functions ``attack(model, x, y, *, epsilon, ...) -> x_adv``.

FGSM and PGD have a native TensorFlow implementation and CleverHans 4 / ART implementations
behind the same signature (``backend=``); APGD (CE, DLR, APGD-T) and Square are native too,
with ART's as the cross-check, and ``"autoattack"`` is the native suite of them; CW-L2,
DeepFool and ART's own AutoAttack come from ART (:mod:`robustlab.attacks.catalogue`). The
threat model is enforced on every output.

Inside: ``_core`` is the math (the only input-gradient tape, projection, steps, random
starts), ``_runner`` the engine (checks at the boundary, batching, restarts, OOM fallback),
one module per attack family, and ``spec`` the registry (:data:`ATTACKS`). Other layers use
the names exported here, never the private modules.
"""

from robustlab.attacks._core import (
    ascent_steps,
    enforce_threat_model,
    input_gradient,
    per_example_loss,
    random_start,
    threat_tensors,
)
from robustlab.attacks.apgd import apgd
from robustlab.attacks.catalogue import auto_attack, carlini_wagner_l2, deepfool
from robustlab.attacks.fgsm import fgsm
from robustlab.attacks.peers import art_classifier, sequential_copy
from robustlab.attacks.pgd import pgd
from robustlab.attacks.spec import (
    ATTACKS,
    SUITES,
    AttackKind,
    AttackSpec,
    fitting,
    kind_of,
    parse_attacks,
)
from robustlab.attacks.square import square, square_queries

# the attacks' options
from robustlab.types import Backend, Constraints, Loss, Norm, ThreatModel, parse_norm

__all__ = ["fgsm", "pgd", "apgd", "square", "square_queries", "carlini_wagner_l2", "deepfool",
           "auto_attack", "art_classifier", "sequential_copy",
           "AttackSpec", "AttackKind", "parse_attacks", "kind_of", "ATTACKS", "SUITES",
           "fitting", "input_gradient", "per_example_loss", "ascent_steps",
           "enforce_threat_model", "random_start", "threat_tensors", "Constraints", "Norm",
           "Loss", "Backend", "ThreatModel", "parse_norm"]

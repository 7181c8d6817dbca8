"""Adversarial attacks as pure functions ``attack(model, x, y, *, epsilon, ...) -> x_adv``.

FGSM and PGD have a native TensorFlow implementation and CleverHans 4 / ART implementations
behind the same signature (``backend=``); APGD, Square, CW-L2, DeepFool and AutoAttack come
from ART (:mod:`robustlab.attacks.catalogue`). The threat model is enforced on every output.
"""

from robustlab.attacks._core import Loss, Norm, ThreatModel, input_gradient, parse_norm
from robustlab.attacks._runner import Backend
from robustlab.attacks.catalogue import apgd, auto_attack, carlini_wagner_l2, deepfool, square
from robustlab.attacks.fgsm import fgsm
from robustlab.attacks.pgd import pgd
from robustlab.attacks.spec import ATTACKS, AttackSpec, parse_attacks

__all__ = ["fgsm", "pgd", "apgd", "square", "carlini_wagner_l2", "deepfool", "auto_attack",
           "AttackSpec", "parse_attacks", "ATTACKS", "Norm", "Loss", "Backend",
           "ThreatModel", "input_gradient", "parse_norm"]

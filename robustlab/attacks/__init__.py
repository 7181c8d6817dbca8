"""Adversarial attacks as pure functions ``attack(model, x, y, *, epsilon, ...) -> x_adv``.

Each attack has a native TensorFlow implementation and CleverHans 4 / ART implementations
behind the same signature (``backend=``); the threat model is enforced on every output.
"""

from robustlab.attacks._core import Loss, Norm, ThreatModel, input_gradient, parse_norm
from robustlab.attacks._runner import Backend
from robustlab.attacks.fgsm import fgsm
from robustlab.attacks.pgd import pgd
from robustlab.attacks.spec import ATTACKS, AttackSpec, parse_attacks

__all__ = ["fgsm", "pgd", "AttackSpec", "parse_attacks", "ATTACKS", "Norm", "Loss", "Backend",
           "ThreatModel", "input_gradient", "parse_norm"]

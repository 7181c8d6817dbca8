"""robustlab: an adversarial robustness workbench for Keras 3 / TensorFlow models.

The public API is imported lazily, so ``import robustlab`` is cheap and does not start
TensorFlow until an attack, model or evaluation is used::

    import robustlab as rl
    data = rl.load("digits")
    model, _ = rl.load_or_train("", data)
    result = rl.evaluate(model, data, "fgsm, pgd", "0, 0.1, 0.2, 0.3")
    rl.write_report(result, "out")
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "robustlab.data", "Dataset": "robustlab.data",
    "build_model": "robustlab.models", "load_model": "robustlab.models",
    "save_model": "robustlab.models",
    "fgsm": "robustlab.attacks", "pgd": "robustlab.attacks",
    "apgd": "robustlab.attacks", "square": "robustlab.attacks",
    "carlini_wagner_l2": "robustlab.attacks", "deepfool": "robustlab.attacks",
    "AttackSpec": "robustlab.attacks", "parse_attacks": "robustlab.attacks",
    "ThreatModel": "robustlab.types", "Constraints": "robustlab.types",
    "Norm": "robustlab.types", "Loss": "robustlab.types",
    "evaluate": "robustlab.evaluate", "compare": "robustlab.evaluate",
    "EvaluationResult": "robustlab.results", "Comparison": "robustlab.results",
    "CrossValidationResult": "robustlab.results", "FoldResult": "robustlab.results",
    "cross_validate": "robustlab.crossval",
    "Check": "robustlab.results", "Status": "robustlab.results",
    "run_checks": "robustlab.checks", "check_logits": "robustlab.checks",
    "train": "robustlab.training", "train_adversarial": "robustlab.training",
    "AdversarialModel": "robustlab.training", "TrainingConfig": "robustlab.training",
    "OverfitGuard": "robustlab.training",
    "DPConfig": "robustlab.privacy", "epsilon_spent": "robustlab.privacy",
    "noise_multiplier_for": "robustlab.privacy",
    "membership_audit": "robustlab.membership", "MembershipAudit": "robustlab.results",
    "PrivacyResult": "robustlab.results",
    "backdoor": "robustlab.poisoning", "clean_label": "robustlab.poisoning",
    "flip_labels": "robustlab.poisoning", "attack_success": "robustlab.poisoning",
    "inspect_training_set": "robustlab.poisoning", "sanitize": "robustlab.poisoning",
    "Trigger": "robustlab.poisoning", "Inspection": "robustlab.results",
    "PoisoningResult": "robustlab.results",
    "Monitor": "robustlab.monitor", "evaluate_monitor": "robustlab.monitor",
    "shift": "robustlab.monitor", "MonitorEvaluation": "robustlab.results",
    "json_lines_handler": "robustlab.logs", "json_lines": "robustlab.logs",
    "write_report": "robustlab.report", "render_html": "robustlab.report",
    "write_comparison": "robustlab.report", "write_poisoning": "robustlab.report",
    "load_or_train": "robustlab.workflow", "ReportConfig": "robustlab.workflow",
    "gate": "robustlab.gate", "Policy": "robustlab.gate",
    "privacy_study": "robustlab.workflow", "poisoning_study": "robustlab.workflow",
    "monitoring_study": "robustlab.workflow",
    "run_notebook": "robustlab.runner", "verify": "robustlab.manifest",
    "enable_determinism": "robustlab._env",
    "make_strategy": "robustlab.distribute", "use_strategy": "robustlab.distribute",
    "is_chief": "robustlab.distribute", "split_cpu": "robustlab.distribute",
    "RobustlabError": "robustlab.errors", "ValidationError": "robustlab.errors",
}

# modules whose functions return results that Jupyter renders through robustlab.report
_RESULT_MAKERS = {"robustlab.evaluate", "robustlab.results", "robustlab.checks",
                  "robustlab.workflow", "robustlab.crossval", "robustlab.membership",
                  "robustlab.poisoning", "robustlab.monitor"}

__all__ = [*_EXPORTS, "setup_logging", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        importlib.import_module(_EXPORTS[name])
        if _EXPORTS[name] in _RESULT_MAKERS:  # results shown in Jupyter: load their renderer
            importlib.import_module("robustlab.report")
        # Bind every export of every module loaded by now: importing a submodule sets the
        # package attribute of the same name (robustlab.evaluate the module), which would
        # otherwise shadow the function of that name for good.
        for export, where in _EXPORTS.items():
            if where in sys.modules:
                globals()[export] = getattr(sys.modules[where], export)
        return globals()[name]
    raise AttributeError(f"module 'robustlab' has no attribute {name!r}")


class _Package(types.ModuleType):
    """The package's module type. Importing a submodule (``import robustlab.evaluate``, or
    ``from robustlab.evaluate import compare``) sets the package attribute of its name; for
    the exports named like their module (``evaluate``, ``gate``) the attribute stays the
    function, so ``rl.evaluate(...)`` works whatever was imported first. (``import
    robustlab.evaluate as m`` therefore binds the function too: reach the module through
    ``sys.modules`` or ``from robustlab.evaluate import ...``.)"""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__ \
                and callable(getattr(value, name, None)):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def setup_logging(level: int | str = "INFO") -> None:
    """Send robustlab's log records to stderr at ``level`` (for notebooks and scripts)."""
    logger = logging.getLogger("robustlab")
    if not any(getattr(h, "_robustlab", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s",
                                               "%H:%M:%S"))
        handler._robustlab = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)

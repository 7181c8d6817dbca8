"""What every process of the distributed tests runs (tests/test_distribute.py).

    python tests/distributed_job.py MODE OUT [options as JSON]

MODE ``mirrored-evaluate``: split the CPU into 2 logical devices and attack the digits test
images on 1 device, under ``MirroredStrategy`` with 1 and with 2 replicas, writing each run's
per-example outcomes (and PGD outputs) to ``OUT/mirrored-<run>.npz``.
MODE ``mirrored-train``: the same for one epoch of standard training of a model without
dropout, writing the weights.
MODE ``evaluate`` / ``train``: one worker of a ``TF_CONFIG`` cluster (``robustlab worker``):
evaluate ``OUT/model.keras`` writing ``OUT/masks-<task>.npz`` and the report (the chief's
only), or adversarially train with a checkpoint in ``OUT/checkpoint`` (``sleep`` seconds
after each epoch, so a test can kill a worker between two), the chief writing
``OUT/train.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("ROBUSTLAB_PROGRESS", "0")

import numpy as np  # noqa: E402

import robustlab as rl  # noqa: E402

# APGD-T runs a batched prediction inside each replica's work (its target classes): 5
# batches of 40 over 2 replicas puts 3 on one and 2 on the other
ATTACK = {"attacks": ["fgsm", "pgd", {"name": "apgd-t", "steps": 10, "targets": 2}],
          "epsilons": "0, 0.1, 0.2", "seed": 3, "batch_size": 40, "checks": False}


def masks(result: object) -> dict[str, np.ndarray]:
    return {"robust": result.robust_mask, "first_break": result.first_break,  # type: ignore[attr-defined]
            **{f"attack {k}": v for k, v in result.attack_masks.items()}}  # type: ignore[attr-defined]


def mirrored_evaluate(out: Path, options: dict) -> None:
    import tensorflow as tf

    from robustlab import distribute

    devices = distribute.split_cpu(2)
    data = rl.load("digits").subset(n_test=options.get("n", 200), seed=0)
    model = rl.load_model(out / "model.keras")
    runs = {"plain": None, "one": tf.distribute.MirroredStrategy(devices[:1]),
            "two": tf.distribute.MirroredStrategy(devices)}
    for name, strategy in runs.items():
        result = rl.evaluate(model, data, strategy=strategy, **ATTACK)
        with distribute.across(strategy):  # restarts and a peer, straight through the engine
            adv = rl.pgd(model, data.x_test, data.y_test, epsilon=0.15, steps=10, restarts=3,
                         seed=5, batch_size=40)
            peer = rl.pgd(model, data.x_test[:60], data.y_test[:60], epsilon=0.15, steps=5,
                          seed=5, batch_size=20, backend="cleverhans")
        np.savez(out / f"mirrored-{name}.npz", adv=adv, peer=peer, **masks(result),
                 replicas=np.int64(result.device.get("replicas", 0)))


def mirrored_train(out: Path, options: dict) -> None:
    import keras
    import tensorflow as tf

    from robustlab import distribute

    devices = distribute.split_cpu(2)
    data = rl.load("digits")

    def fresh() -> object:  # no dropout: the two runs see the same computation
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(32, activation="relu"),
                                 keras.layers.Dense(10)])

    for name, strategy in (("plain", None), ("two", tf.distribute.MirroredStrategy(devices))):
        model, info = rl.train_adversarial(fresh(), data, method=options.get("method", "standard"),
                                           epsilon=0.1, steps=2, epochs=1, batch_size=64, seed=0,
                                           strategy=strategy)
        np.savez(out / f"train-{name}.npz", *model.get_weights(),
                 loss=np.array(info.history["loss"]))


def worker_evaluate(out: Path, options: dict) -> None:
    from robustlab import distribute

    replicas = rl.use_strategy("multiworker")  # first, before anything starts TensorFlow
    data = rl.load("digits").subset(n_test=options.get("n", 200), seed=0)
    result = rl.evaluate(rl.load_model(out / "model.keras"), data, **ATTACK)
    task = distribute.task()
    np.savez(out / f"masks-{task[1] if task else 0}.npz", **masks(result))
    rl.write_report(result, out / "report")
    assert result.device["workers"] == replicas.placement.workers


def worker_train(out: Path, options: dict) -> None:
    import keras

    rl.use_strategy("multiworker")
    data = rl.load("digits")
    model = rl.build_model(data.input_shape, data.num_classes, seed=0)
    pause = float(options.get("sleep", 0))

    class Pause(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            time.sleep(pause)

    model, info = rl.train_adversarial(
        model, data, method="pgd", epsilon=0.1, steps=3, epochs=options["epochs"],
        batch_size=64, seed=options.get("seed", 0), checkpoint_dir=out / "checkpoint",
        save_to=out / "trained.keras", callbacks=[Pause()] if pause else None)
    if rl.is_chief():
        accuracy = float(np.mean(np.argmax(model.predict(data.x_test, verbose=0), 1)
                                 == data.y_test))
        (out / "train.json").write_text(json.dumps({
            "initial_epoch": info.initial_epoch, "accuracy": accuracy,
            "loss": info.history.get("loss", [])}))


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    options = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    {"mirrored-evaluate": mirrored_evaluate, "mirrored-train": mirrored_train,
     "evaluate": worker_evaluate, "train": worker_train}[mode](out, options)


if __name__ == "__main__":
    main()

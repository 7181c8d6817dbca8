import pickle
import warnings
import zipfile

import numpy as np
import pytest

from robustlab.checks import check_logits
from robustlab.errors import (
    ModelNotFoundError,
    RobustlabError,
    RobustlabWarning,
    UnsafeModelError,
    ValidationError,
)
from robustlab.models import build_mlp, build_model, load_model, save_model
from robustlab.training import default_epochs
from robustlab.workflow import load_or_train


def test_builders_pick_architecture():
    assert build_model((8, 8, 1), 10).name == "small_cnn"
    assert build_model((28, 28, 1), 10).name == "small_cnn"
    resnet = build_model((32, 32, 3), 10)
    assert resnet.name == "resnet_small" and resnet.output_shape == (None, 10)
    assert any(type(layer).__name__ == "Add" for layer in resnet.layers)


def test_builders_are_seeded():
    a, b = build_model((8, 8, 1), 10, seed=5), build_model((8, 8, 1), 10, seed=5)
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(b(x)))


def test_default_epochs():
    assert default_epochs(1437) == 30 and default_epochs(8000) == 5
    assert default_epochs(60000) == 3


def test_save_load_roundtrip(tiny_model, tmp_path, batch):
    path = save_model(tiny_model, tmp_path / "m.keras")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp file left"
    loaded = load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(batch[0])), np.asarray(tiny_model(batch[0])),
                               atol=1e-6)
    with pytest.raises(ValidationError, match=r"path to end in \.keras"):
        save_model(tiny_model, tmp_path / "m.h5")


def test_refuses_hostile_and_broken_files(tmp_path):
    cases = {
        "pickle.keras": pickle.dumps({"a": 1}),
        "weights.keras": b"\x89HDF\r\n\x1a\n" + b"\0" * 64,
        "empty.keras": b"",
        "text.keras": b"hello, not a model",
    }
    expected = {"pickle.keras": "pickle", "weights.keras": "HDF5", "empty.keras": "empty",
                "text.keras": "not a .keras archive"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UnsafeModelError, match=expected[name]):
            load_model(tmp_path / name)
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as z:
        z.writestr("payload.txt", "x")
    with pytest.raises(UnsafeModelError, match="missing config.json"):
        load_model(tmp_path / "other.keras")
    (tmp_path / "saved_model").mkdir()
    with pytest.raises(UnsafeModelError, match="SavedModel"):
        load_model(tmp_path / "saved_model")


def test_missing_model_file_is_not_found_not_unsafe(tmp_path, digits):
    """A deliberate contract change: a missing file used to be an UnsafeModelError."""
    with pytest.raises(ModelNotFoundError, match=r"'.*missing\.keras' does not exist") as caught:
        load_model(tmp_path / "missing.keras")
    assert isinstance(caught.value, FileNotFoundError)
    assert isinstance(caught.value, RobustlabError)
    assert not isinstance(caught.value, UnsafeModelError)
    with pytest.raises(ModelNotFoundError, match=r"gone\.keras"):
        load_or_train(tmp_path / "gone.keras", digits)


def test_truncated_archive_is_refused(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "m.keras")
    data = path.read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsafeModelError, match=r"cut\.keras"):
        load_model(tmp_path / "cut.keras")


def test_softmax_output_warns(batch):
    import keras

    logits_model = build_model((8, 8, 1), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_logits(logits_model, batch[0])
    probs = keras.Sequential([logits_model, keras.layers.Softmax()])
    with pytest.warns(RobustlabWarning, match="probabilities"):
        assert not check_logits(probs, batch[0])


def test_load_or_train_checks_outputs(tiny_model, tmp_path, digits):
    import keras

    path = save_model(tiny_model, tmp_path / "m.keras")
    assert load_or_train(path, digits)[0].output_shape == (None, 10)
    five = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(5)])
    save_model(five, tmp_path / "five.keras")
    with pytest.raises(ValidationError, match="10 outputs.*got 5"):
        load_or_train(tmp_path / "five.keras", digits)


def _rewrite_config(src, dst, edit):
    """Copy the .keras archive ``src`` to ``dst`` with ``edit(config)`` applied to config.json
    (an ``edit`` that returns bytes replaces the file with them: JSON that ``json.dumps``
    cannot write, such as thousands of nested levels)."""
    import json
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                raw = edit(config)
                data = raw if isinstance(raw, bytes) else json.dumps(config).encode()
            zout.writestr(item, data)
    return dst


def _first_layer(config):
    return config["config"]["layers"][1]


@pytest.mark.parametrize(("edit", "match"), [
    (lambda c: _first_layer(c).update(class_name="Lambda"), "uses 'Lambda'"),
    (lambda c: _first_layer(c).update(class_name="TFSMLayer"), "uses 'TFSMLayer'"),
    (lambda c: _first_layer(c).update(class_name="TorchModuleWrapper",
                                      module="keras.layers"), "uses 'TorchModuleWrapper'"),
    (lambda c: _first_layer(c).update(module="os"), "imports from module 'os'"),
    (lambda c: _first_layer(c).update(module="keras.src.utils.file_utils"),
     "imports from module 'keras.src.utils.file_utils'"),
    (lambda c: _first_layer(c).update(registered_name="evil>Payload"),
     "custom object 'evil>Payload'"),
    (lambda c: _first_layer(c)["config"].update(safe_mode=False), "has 'safe_mode'"),
    (lambda c: c.update(enable_unsafe_deserialization=True),
     "has 'enable_unsafe_deserialization'"),
])
def test_config_allowlist_refuses_before_keras_parses(tiny_model, tmp_path, edit, match):
    good = save_model(tiny_model, tmp_path / "good.keras")
    bad = _rewrite_config(good, tmp_path / "bad.keras", edit)
    with pytest.raises(UnsafeModelError, match=match):
        load_model(bad)


def test_allowlist_accepts_robustlab_models(tmp_path, digits):
    from robustlab.models import build_resnet

    for i, model in enumerate([build_model((8, 8, 1), 10, seed=0),
                               build_resnet((16, 16, 3), 10, width=8, seed=0),
                               build_model((8, 8, 1), 10, seed=0, mixed_precision=True)]):
        path = save_model(model, tmp_path / f"m{i}.keras")
        assert load_model(path).count_params() == model.count_params()


def test_sha256_pinning(tiny_model, tmp_path):
    from robustlab._io import sha256_file

    path = save_model(tiny_model, tmp_path / "pinned.keras")
    digest = sha256_file(path)
    assert load_model(path, sha256=digest.upper()).count_params() == tiny_model.count_params()
    with pytest.raises(UnsafeModelError, match="expected " + "0" * 64):
        load_model(path, sha256="0" * 64)
    with pytest.raises(ValidationError, match="64 hex digits"):
        load_model(path, sha256="abc")


def test_renamed_pickle_gets_a_clear_error(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(UnsafeModelError, match="is a pickle; unpickling runs code"):
        load_model(path)


def _nested(kind, levels):
    """JSON text of ``levels`` nested lists (``[[[...]]]``) or dicts (``{"a": {"a": ...}}``)."""
    if kind == "list":
        return "[" * levels + "1" + "]" * levels
    return '{"a": ' * levels + "1" + "}" * levels


def _deepest(node):
    """Deepest nesting of lists and dicts in a parsed JSON document (iterative)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in
                         (item.values() if isinstance(item, dict) else item))
    return deepest


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("levels", [5_000, 150])
def test_deeply_nested_config_is_refused_naming_the_file(tiny_model, tmp_path, kind, levels):
    """5,000 levels exhaust Python's recursion in json.loads itself; 150 parse but exceed
    robustlab's limit. Both must be an UnsafeModelError that names the file, not a
    RecursionError."""
    good = save_model(tiny_model, tmp_path / "good.keras")
    text = '{"class_name": "Sequential", "config": {"layers": ' + _nested(kind, levels) + "}}"
    bad = _rewrite_config(good, tmp_path / "deep.keras", lambda _config: text.encode())
    with pytest.raises(UnsafeModelError, match=r"deep\.keras.*nest"):
        load_model(bad)


def test_nesting_limit_is_far_above_real_models(tmp_path):
    import json

    from robustlab.models import _MAX_CONFIG_DEPTH, build_resnet

    for i, model in enumerate([build_model((8, 8, 1), 10, seed=0),
                               build_resnet((16, 16, 3), 10, width=8, seed=0)]):
        with zipfile.ZipFile(save_model(model, tmp_path / f"m{i}.keras")) as archive:
            depth = _deepest(json.loads(archive.read("config.json")))
        assert 5 <= depth <= 15 < _MAX_CONFIG_DEPTH  # robustlab's models: 10 and 11 levels


@pytest.mark.parametrize("value", [None, 3, ["m.keras"], b"m.keras"])
def test_load_model_names_a_wrong_path_type(value):
    from robustlab.errors import InputTypeError

    with pytest.raises(InputTypeError, match=r"expected path to be a path to a \.keras file, "
                                             rf"got {type(value).__name__} "):
        load_model(value)


# -- tabular models (issue 14) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cancer():
    from robustlab.data import load

    return load("breast_cancer")


def test_build_model_picks_mlp_for_feature_vectors_and_greyscale_arrays():
    assert build_model((30,), 2).name == "mlp"
    grey = build_model((28, 28), 10)
    assert grey.name == "mlp" and grey.output_shape == (None, 10)
    assert any(type(layer).__name__ == "Flatten" for layer in grey.layers)
    assert build_model((2, 3, 4, 2), 3).output_shape == (None, 3)
    with pytest.raises(ValidationError, match=r"mean and std only for feature-vector models"):
        build_model((8, 8, 1), 10, mean=np.zeros(64), std=np.ones(64))
    with pytest.raises(ValidationError, match="expected mean and std together"):
        build_model((30,), 2, mean=np.zeros(30))
    with pytest.raises(ValidationError, match=r"std > 0 for every feature"):
        build_mlp((3,), 2, mean=np.zeros(3), std=np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValidationError, match=r"one number per feature \(3\)"):
        build_mlp((3,), 2, mean=np.zeros(4), std=np.ones(4))


def test_mlp_standardises_and_returns_logits(cancer):
    import keras

    mean, std = cancer.feature_stats()
    model = build_model(cancer.input_shape, cancer.num_classes, mean=mean, std=std, seed=3)
    logits = np.asarray(model(cancer.x_test[:16]))
    assert logits.shape == (16, 2) and logits.dtype == np.float32
    standardized = keras.Model(model.input, model.get_layer("standardize").output)
    z = np.asarray(standardized(cancer.x_train))
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-3)
    assert not model.get_layer("standardize").trainable_weights
    same = build_mlp(cancer.input_shape, 2, mean=mean, std=std, seed=3)
    np.testing.assert_array_equal(np.asarray(same(cancer.x_test[:16])), logits)
    check_logits(model, cancer.x_test[:32])


def test_mlp_save_load_roundtrip(cancer, tmp_path):
    mean, std = cancer.feature_stats()
    model = build_mlp(cancer.input_shape, 2, mean=mean, std=std, seed=1)
    model.compile(optimizer="adam", loss=keras_loss())
    model.fit(cancer.x_train[:64], cancer.y_train[:64], epochs=1, batch_size=32, verbose=0)
    loaded = load_model(save_model(model, tmp_path / "mlp.keras"))
    np.testing.assert_allclose(np.asarray(loaded(cancer.x_test)), np.asarray(model(cancer.x_test)),
                               rtol=1e-6, atol=1e-6)
    z = np.asarray(loaded.get_layer("standardize")(cancer.x_train))
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-3)


def keras_loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_load_or_train_standardises_tabular_data(cancer):
    small = cancer.subset(n_train=64, n_test=32)
    model, info = load_or_train("", small, epochs=1, seed=0)
    assert model.name == "mlp" and info is not None
    mean, _ = small.feature_stats()
    np.testing.assert_allclose(np.asarray(model.get_layer("standardize").mean).ravel(), mean,
                               rtol=1e-6)

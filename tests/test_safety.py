"""A run folder cannot execute code: models load in Keras safe mode; scores load without pickle."""
import numpy as np
import pytest


def test_keras_file_with_a_lambda_is_refused(tmp_path):
    import keras

    from birdcore.models.saving import load_keras

    inp = keras.Input((3,))
    out = keras.layers.Lambda(lambda x: x * 2)(inp)
    path = tmp_path / "evil.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(ValueError, match="(?i)safe"):
        load_keras(path)


def test_scores_npz_holds_no_pickled_objects(trained_run):
    with np.load(trained_run / "scores.npz", allow_pickle=False) as z:
        for key in z.files:
            assert z[key].dtype != object

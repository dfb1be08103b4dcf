import numpy as np
import pytest

from ultrasound_transfer.networks.training_paths import FoldBatches, whole_batches
from ultrasound_transfer.settings import AugmentationSettings

pytestmark = pytest.mark.keras_backend


def test_fold_batches_reshuffle_every_epoch_and_repeat_with_the_seed():
    x, y = np.arange(10)[:, None] * 1.0, np.arange(10) % 2
    rows = np.array([0, 2, 3, 5, 7, 8, 9])

    def epochs(batches, n=3):
        seen = []
        for _ in range(n):
            seen.append(np.concatenate([batches[i][0][:, 0] for i in range(len(batches))]).astype(int))
            batches.on_epoch_end()
        return seen

    first = epochs(FoldBatches([x], rows, 3, labels=y, seed=1))
    assert all(sorted(e) == list(rows) for e in first)              # every row once per epoch
    assert not np.array_equal(first[0], first[1])                     # a new order each epoch
    assert all(np.array_equal(a, b) for a, b in zip(first, epochs(FoldBatches([x], rows, 3, labels=y, seed=1))))
    assert np.array_equal(epochs(FoldBatches([x], rows, 3), 1)[0], rows)   # no seed: in order, for predict
    assert len(FoldBatches([x], rows, 3)[0]) == 1                    # inputs only, without labels


def test_fold_batches_feed_several_inputs_and_augment_reproducibly():
    images = np.random.default_rng(0).integers(0, 255, size=(6, 16, 16), dtype=np.uint8)
    other = np.arange(6, dtype=np.float16)[:, None]
    (a, b), labels = FoldBatches([images, other], np.arange(6), 6, labels=np.zeros(6), seed=3, prepare=np.float32)[0]
    assert a.dtype == b.dtype == np.float32 and np.array_equal(a, images[b[:, 0].astype(int)])

    strong = AugmentationSettings(flip=0.5, rotate_deg=10, shift=0.1, scale=0.1, gain=0.2, speckle=0.2)
    first = FoldBatches([images], np.arange(6), 3, labels=np.zeros(6), seed=3, augmentation=strong)
    again = FoldBatches([images], np.arange(6), 3, labels=np.zeros(6), seed=3, augmentation=strong)
    assert np.array_equal(first[1][0], again[1][0])
    assert not np.array_equal(first[1][0], images[first.order[3:]])
    before = first[1][0]
    first.on_epoch_end()
    again.on_epoch_end()
    assert np.array_equal(first[1][0], again[1][0]) and not np.array_equal(first[1][0], before)


def test_every_tf_data_feed_of_a_path_shares_one_copy_of_the_cache():
    # Made per feed, each fold's training and validation feeds held a copy of the whole cache: 6 GB at the peak
    # of a 600 MB cache. Now the tensors are made once, and the cache's own arrays become views of them.
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the tf.data feed is TensorFlow's")
    from ultrasound_transfer.networks.training_paths import TrainingPath, as_float32

    cache = [np.random.default_rng(0).random((12, 4, 4, 8), dtype=np.float32)]
    path = TrainingPath(keras.Sequential(), cache, as_float32, batch_size=4)
    labels = np.arange(12) % 2
    feeds = [path.batches(np.arange(8), labels, seed=1).as_tf_dataset(2), path.batches(np.arange(8, 12), labels)
             .as_tf_dataset(1)]
    assert all(feed is not None for feed in feeds)
    tensors = path.prepared_tensors()
    assert path.prepared_tensors() is tensors and len(tensors) == 1
    assert cache[0] is path.inputs[0] and np.shares_memory(path.inputs[0], np.asarray(tensors[0]))
    first_batch = next(iter(feeds[1]))[0].numpy()
    np.testing.assert_array_equal(first_batch, path.inputs[0][8:12])


def test_whole_batches_pad_with_the_last_row_and_leave_whole_ones_alone():
    assert whole_batches(np.array([4, 7, 9]), 4).tolist() == [4, 7, 9, 9]
    assert whole_batches(np.arange(8), 4).tolist() == list(range(8))
    assert whole_batches(np.array([], dtype=int), 4).size == 0


def test_predicted_rows_are_each_rows_own_in_order_padded_or_not():
    # Padded to whole batches where predictions are compiled (JAX), as they are elsewhere: each row its own output.
    keras = pytest.importorskip("keras")
    from ultrasound_transfer.networks.training_paths import predict_rows

    inputs = keras.Input((3,))
    model = keras.Model(inputs, [keras.layers.Dense(2, activation="softmax")(inputs), keras.layers.Dense(1)(inputs)])
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    rows = np.array([17, 3, 5, 11, 0, 8, 2])                       # 7 rows: a batch of 4 and one padded to 4
    probabilities, values = predict_rows(model, [x], rows, batch_size=4, prepare=np.asarray)
    want_probabilities, want_values = model.predict(x[rows], batch_size=len(rows), verbose=0)
    assert probabilities.shape == (7, 2) and values.shape == (7, 1) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, want_probabilities, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(values, want_values, rtol=1e-6, atol=1e-6)

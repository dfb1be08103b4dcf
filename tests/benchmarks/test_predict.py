"""The predict benchmark's check that nothing is traced inside its timed calls (its runs need a trained study)."""

import keras
import numpy as np

from benchmarks.predict import tracing_count, tracing_sentence


def tiny_network() -> keras.Model:
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


def test_tracing_counts_add_up_over_networks_and_stay_when_a_traced_call_repeats():
    networks = [tiny_network(), tiny_network()]
    assert tracing_count(networks) is None       # no predict step yet: nothing to count
    images = np.zeros((10, 4), np.float32)
    for network in networks:
        network.predict(images, batch_size=4, verbose=0)
    traced = tracing_count(networks)
    if keras.backend.backend() != "tensorflow":
        assert traced is None                     # only TensorFlow counts its traces
        return
    assert traced >= 2                            # each network traced its own step
    for network in networks:
        network.predict(images, batch_size=4, verbose=0)
    assert tracing_count(networks) == traced      # the same shapes again: no new trace


def test_the_results_say_whether_the_timed_calls_traced():
    assert tracing_sentence([0, 0]).startswith("No network was traced")
    assert "(3 times)" in tracing_sentence([0, 3])
    assert "does not count" in tracing_sentence([None, None])

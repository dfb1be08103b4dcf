import numpy as np
import pandas as pd

from ultrasound_transfer.networks.checkpoints import FoldCheckpoints, run_fingerprint


def write_weights(path):
    np.savez(path, w=np.ones(3))


def test_saved_folds_are_found_and_tables_come_back_exact(tmp_path):
    checkpoints = FoldCheckpoints(tmp_path / "unfinished", "abc")
    assert checkpoints.finished() == []
    table = pd.DataFrame({"id": ["a", "b"], "prob": [0.1 + 0.2, 1 / 3]})
    checkpoints.save(2, write_weights, {"predictions": table}, features={"pooled": np.arange(6.0).reshape(2, 3)})
    assert checkpoints.finished() == [2] and checkpoints.is_finished(2) and not checkpoints.is_finished(1)
    assert checkpoints.weights(2).is_file()
    with np.load(checkpoints.features(2)) as features:
        np.testing.assert_array_equal(features["pooled"], np.arange(6.0).reshape(2, 3))
    pd.testing.assert_frame_equal(checkpoints.table(2, "predictions"), table)
    assert FoldCheckpoints(tmp_path / "unfinished", "abc").finished() == [2]   # same run: kept


def test_other_fingerprint_discards_saved_folds(tmp_path):
    FoldCheckpoints(tmp_path / "unfinished", "abc").save(1, write_weights, {}, features={})
    assert FoldCheckpoints(tmp_path / "unfinished", "changed").finished() == []


def test_fingerprint_follows_settings_and_file_bytes(tmp_path):
    data = tmp_path / "images.npy"
    np.save(data, np.zeros(3))
    first = run_fingerprint({"ft_fraction": 0.15}, [data])
    assert run_fingerprint({"ft_fraction": 0.15}, [data]) == first
    assert run_fingerprint({"ft_fraction": 0.5}, [data]) != first
    np.save(data, np.ones(3))
    assert run_fingerprint({"ft_fraction": 0.15}, [data]) != first


def test_a_fold_killed_before_its_marker_is_not_trusted(tmp_path):
    """A process killed between writing a fold's data and its marker: the rerun does that fold again."""
    import subprocess
    import sys

    from tests.conftest import REPO

    script = f"""
import os, numpy as np, pandas as pd
from ultrasound_transfer.networks.checkpoints import FoldCheckpoints
FoldCheckpoints._mark_finished = lambda self, fold: os._exit(9)     # killed right before the marker
FoldCheckpoints({str(tmp_path / "unfinished")!r}, "abc").save(1, lambda p: np.savez(p, w=np.ones(3)),
                                                     {{"predictions": pd.DataFrame({{"id": ["a"]}})}}, features={{}})
"""
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={"PYTHONPATH": str(REPO)})
    assert killed.returncode == 9
    checkpoints = FoldCheckpoints(tmp_path / "unfinished", "abc")
    assert checkpoints.weights(1).is_file()                  # the data were written ...
    assert checkpoints.finished() == [] and not checkpoints.is_finished(1)   # ... but never declared done
    checkpoints.save(1, write_weights, {}, features={})
    assert checkpoints.finished() == [1]

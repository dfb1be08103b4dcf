"""The pipeline's entry points: exactly one module per DVC stage of ``dvc.yaml``.

Run a stage as ``python -m stages.<name> ARGS`` from the repository root; DVC does
this for you (see dvc.yaml).  Each module is a thin ``main()`` that reads its
settings, calls :mod:`ultrasound_transfer` and writes its outputs.  The commands a
person types are elsewhere: ``ultrasound-transfer`` (:mod:`ultrasound_transfer.cli`).
"""

import os

# TensorFlow's C++ log lines (one per fold, harmless) would bury the progress lines;
# set TF_CPP_MIN_LOG_LEVEL=0 to see them, e.g. when checking a GPU set-up.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

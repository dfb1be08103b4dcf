"""The pipeline's entry points: one module per DVC stage, and the commands beside them.

Run a stage as ``python -m stages.<name> ARGS`` from the repository root; DVC does
this for you (see dvc.yaml).  Each module is a thin ``main()`` that reads its
params, calls :mod:`ultrasound_transfer` and writes its outputs; ``compare`` and
``protocol`` are commands, not stages.
"""

import os

# TensorFlow's C++ log lines (one per fold, harmless) would bury the progress lines;
# set TF_CPP_MIN_LOG_LEVEL=0 to see them, e.g. when checking a GPU set-up.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

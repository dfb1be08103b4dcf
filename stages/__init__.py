"""The pipeline's stages, one module per DVC stage, and the helpers they share.

Run a stage as ``python -m stages.<name> ARGS`` from the repository root; DVC does
this for you (see dvc.yaml).
"""

import os

# TensorFlow's C++ log lines (one per fold, harmless) would bury the progress lines;
# set TF_CPP_MIN_LOG_LEVEL=0 to see them, e.g. when checking a GPU set-up.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

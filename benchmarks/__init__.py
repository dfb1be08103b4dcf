"""Benchmarks: each prints figures measured side by side in one run (``python -m benchmarks.<name>``)."""

import os

# As in stages/__init__.py: TensorFlow's C++ log lines would bury the figures.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

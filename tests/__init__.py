"""Tests, laid out like the code: ``stages/`` for the entry points, ``data/``, ``networks/`` and
``evaluation/`` for the wings of ``ultrasound_transfer``; ``test_pipeline.py`` is the end-to-end DVC run."""

"""Scoring the classifiers: the linear SVM, per-fold metrics and paired fold statistics."""

"""Reading the classifiers: the linear SVM, operating points and calibration, novelty, metrics with intervals over
groups, paired statistics, the shortcut audit, external validation and the error sheets."""

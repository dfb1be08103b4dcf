"""Transfer learning for ultrasound image classification: the science behind the pipeline.

The DVC stages in ``stages/`` read params, call this package and write outputs;
everything here can be used on its own, e.g. in a notebook.  Its wings follow
the data, and imports only point down the list:

* :mod:`ultrasound_transfer.networks`: backbones and freezing, the frozen-prefix
  split, training one fold, augmentation, resumable fold checkpoints;
* :mod:`ultrasound_transfer.evaluation`: the SVM, per-fold metrics, paired statistics;
* :mod:`ultrasound_transfer.data`: where each dataset comes from and how it is
  laid out, downloading, decoding and letterboxing, the built-in phantom,
  near-duplicate fingerprints and groups, reading prepared data and folds;
* plumbing beside them: :mod:`~ultrasound_transfer.common` (params, errors,
  atomic writes), :mod:`~ultrasound_transfer.paths` (the pipeline's folders),
  :mod:`~ultrasound_transfer.source_files` (the code each stage runs).

Evaluation uses data and plumbing only, never networks.
"""

"""Transfer learning for ultrasound image classification: the science behind the pipeline.

The DVC stages in ``stages/`` read their settings, call this package and write
outputs; the commands a person types are :mod:`ultrasound_transfer.cli`
(``ultrasound-transfer``); everything here can be used on its own, e.g. in a
notebook.  Its wings, and imports only point down the list:

* :mod:`ultrasound_transfer.study`: strategy grids as DVC experiments, the
  protocols, the Dask sweep, the comparison of strategies (the commands' logic);
* :mod:`ultrasound_transfer.networks`: backbones and freezing, the frozen-prefix
  split, runtime (seeds, precision, devices), training paths, fitting one fold,
  augmentation, resumable fold checkpoints;
* :mod:`ultrasound_transfer.evaluation`: the SVM, per-fold metrics, paired statistics;
* :mod:`~ultrasound_transfer.parameters`: the schema of ``params.yaml``, its
  check, and :func:`~ultrasound_transfer.parameters.load_settings`;
* :mod:`ultrasound_transfer.data`: where each dataset comes from and how it is
  laid out, downloading, decoding and letterboxing, the built-in phantom,
  near-duplicate fingerprints and groups, reading prepared data and folds;
* :mod:`~ultrasound_transfer.settings` (the typed settings) and
  :mod:`~ultrasound_transfer.choices` (allowed values), used by all above;
* plumbing: :mod:`~ultrasound_transfer.common` (errors, atomic writes, logs),
  :mod:`~ultrasound_transfer.paths` (the pipeline's folders),
  :mod:`~ultrasound_transfer.source_files` (the code each stage runs).

Evaluation and networks never import each other, nor do stages and study.
"""

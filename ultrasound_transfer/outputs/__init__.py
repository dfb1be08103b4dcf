"""What each stage writes, with its one home: its path, the stage that makes it, its columns, reader and writer.

One module per output (or per family of files one stage writes together);
stages, commands and tests read and write through them, never by joining
paths or spelling column names themselves:

===============================  ===========================  ===============================================
module                           stage                        files
===============================  ===========================  ===============================================
:mod:`.checked_params`           ``check_params``             ``data/params_checked.json``
:mod:`.prepared`                 ``normalize@<dataset>``      ``data/prepared/<dataset>/``: images, manifest,
                                                              preprocessing, report
:mod:`.folds`                    ``folds@<dataset>``          ``data/folds/<dataset>.json``
:mod:`.fold_networks`            ``finetune@<dataset>-<m>``   ``models/<dataset>/<m>/weights/``: fold files
:mod:`.training_record`          ``finetune@<dataset>-<m>``   ``models/<dataset>/<m>/training/``: the network's
                                                              recipe, dense predictions, parts, history
:mod:`.features`                 ``finetune@<dataset>-<m>``   ``data/features/<dataset>/<m>/``: the SVM's input
:mod:`.classifiers`              ``evaluate@<dataset>-<m>``   ``models/<dataset>/<m>/classifiers.json``
:mod:`.cv_results`               ``evaluate@<dataset>-<m>``   ``metrics/cv/<dataset>/<m>.*``, plot data
:mod:`.external_results`         ``external@pair<i>-<m>``     ``metrics/external/<train>-to-<test>/<m>.*``
:mod:`.summary`                  ``report``                   ``metrics/summary.{md,json}``, ``metrics/errors/``
===============================  ===========================  ===============================================

:mod:`.trained_study` reads a dataset x network's fold networks, their recipe
and their fitted classifiers as the one artifact every command uses, checked
to belong together.  :mod:`.stages` names the stages.
"""

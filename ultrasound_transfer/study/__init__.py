"""The study around the pipeline: strategy grids as DVC experiments, protocols, the Dask sweep, comparisons.

The logic of the ``ultrasound-transfer`` commands (:mod:`ultrasound_transfer.cli`):
``protocol`` (:mod:`~ultrasound_transfer.study.protocols`, with the cost
estimate in :mod:`~ultrasound_transfer.study.estimate`), ``sweep``
(:mod:`~ultrasound_transfer.study.sweep`, and :mod:`~ultrasound_transfer.study.sweep_units`
for what a Dask worker runs) and ``compare`` (:mod:`~ultrasound_transfer.study.comparison`);
:mod:`~ultrasound_transfer.study.experiments` gives both grid commands the same
experiment names and ``-S`` values.  No DVC stage imports this wing.
"""

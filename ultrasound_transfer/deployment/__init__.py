"""The chosen model in use: a trained dataset x network applied to new scans, explained, exported.

* :mod:`~ultrasound_transfer.deployment.scans`: files and folders (PNG, BMP, JPEG, DICOM) to the study's gray frames;
* :mod:`~ultrasound_transfer.deployment.trained`: the trained study's fold networks and classifiers as one ensemble;
* :mod:`~ultrasound_transfer.deployment.predict`: ``ultrasound-transfer predict``;
* :mod:`~ultrasound_transfer.deployment.gradcam`: ``ultrasound-transfer explain`` (Grad-CAM);
* :mod:`~ultrasound_transfer.deployment.export`: ``ultrasound-transfer export`` (``.keras``, ONNX, model card);
* :mod:`~ultrasound_transfer.deployment.model_card`: the card beside an export;
* :mod:`~ultrasound_transfer.deployment.experiment_files`: a DVC experiment's files of one network, read aside.

Nothing here trains or fits: every network, threshold and SVM is the one the
pipeline's ``finetune`` and ``evaluate`` stages made and kept
(:mod:`ultrasound_transfer.outputs.trained_study`; docs/using-the-model.md).
"""

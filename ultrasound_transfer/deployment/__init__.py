"""The chosen model in use: a trained dataset x network applied to new scans, explained, exported.

* :mod:`~ultrasound_transfer.deployment.scans`: files and folders (PNG, BMP, JPEG, DICOM) to the study's gray squares;
* :mod:`~ultrasound_transfer.deployment.trained`: the study's fold networks and SVMs as one ensemble network;
* :mod:`~ultrasound_transfer.deployment.predict`: ``ultrasound-transfer predict``;
* :mod:`~ultrasound_transfer.deployment.gradcam`: ``ultrasound-transfer explain`` (Grad-CAM);
* :mod:`~ultrasound_transfer.deployment.export`: ``ultrasound-transfer export`` (``.keras``, ONNX, model card).

Nothing here trains: every network, threshold and SVM is the one the
pipeline's ``finetune`` and ``evaluate`` stages made (docs/using-the-model.md).
"""

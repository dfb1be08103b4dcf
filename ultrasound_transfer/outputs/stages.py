"""The DVC stage that makes an output, named as ``dvc.yaml``'s loops name it, and the command that remakes it.

``dvc.yaml`` runs most stages once per dataset (``foreach``) or per dataset x
network (``matrix``); DVC names each instance ``<stage>@<item>-<item>``
(``finetune@phantom-VGG16``; a ``matrix`` entry that is a mapping, as an
``external`` pair is, by its key and position: ``external@pair0-VGG16``).
Every message that tells a person what to rerun is built here, and a test
checks each name against ``dvc.yaml``.
"""

from __future__ import annotations


def stage_name(stage: str, *items: str) -> str:
    """``stage@item1-item2``, or ``stage`` for a stage that runs once."""
    return f"{stage}@{'-'.join(items)}" if items else stage


def repro(*stages: str) -> str:
    """The command that reruns ``stages`` (and whatever they need first)."""
    return "dvc repro " + " ".join(stages)

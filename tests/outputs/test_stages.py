"""Every stage an output names (for a person to rerun) is a stage of dvc.yaml, named as DVC names it."""

import re

import yaml

from tests.conftest import REPO
from ultrasound_transfer.outputs import (
    checked_params,
    classifiers,
    cv_results,
    external_results,
    fold_networks,
    folds,
    prepared,
    summary,
    training_record,
)
from ultrasound_transfer.outputs.stages import repro, stage_name

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def loop_values(name: str) -> list[list[str]]:
    """The item names of each loop of a dvc.yaml stage, in order (a mapping item named by its key + position)."""
    spec = STAGES[name]
    if "foreach" in spec:
        return [["<item>"]]
    return [[key] for key in spec.get("matrix", {})]


def instance_matches(instance: str) -> bool:
    """Whether ``stage@a-b`` has the shape dvc.yaml gives that stage: one part per loop variable."""
    name, _, items = instance.partition("@")
    if name not in STAGES:
        return False
    loops = loop_values(name)
    if not items:
        return loops == []
    parts = items.split("-")
    if len(parts) != len(loops):
        return False
    return all(part.startswith("pair") for part, (key,) in zip(parts, loops) if key == "pair")


def test_every_stage_named_by_an_output_is_in_dvc_yaml_in_its_loop_shape():
    named = [checked_params.STAGE, summary.STAGE, prepared.stage("busi"), folds.stage("busi"),
             training_record.stage("busi", "VGG16"), fold_networks.stage("busi", "VGG16"),
             classifiers.stage("busi", "VGG16"), cv_results.stage("busi", "VGG16"), external_results.stage(0, "VGG16")]
    assert [n for n in named if not instance_matches(n)] == []
    assert not instance_matches("features@busi-VGG16")            # the check can fail: a stage that is gone
    assert not instance_matches("finetune@busi")                  # or a loop shape that is not the stage's
    assert repro("evaluate@busi-VGG16") == "dvc repro evaluate@busi-VGG16" and stage_name("report") == "report"


def test_no_module_spells_a_stage_name_itself():
    spelled = re.compile(r"""["'](?:%s)@""" % "|".join(STAGES))
    found = [f"{path.relative_to(REPO)}:{number}" for path in [*REPO.glob("stages/*.py"),
                                                                *REPO.glob("ultrasound_transfer/**/*.py")]
             for number, line in enumerate(path.read_text().splitlines(), start=1) if spelled.search(line)]
    assert found == [], "build stage names with ultrasound_transfer.outputs.stages"

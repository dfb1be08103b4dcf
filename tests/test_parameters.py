"""Every bad parameter is refused at once, all of them in one message, before any work."""

import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO, default_params, merged
from ultrasound_transfer.backbone_weights import IMAGENET_FILES
from ultrasound_transfer.choices import MODELS
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.parameters import (
    SCHEMA,
    check_params,
    parameter_comments,
    reference_markdown,
    schema_keys,
    schema_problems,
)

BAD = [   # (change to params.yaml, what the message must say)
    ({"finetune": {"epoch": 3}}, r"finetune.epoch: unknown parameter; did you mean finetune.epochs\?"),
    ({"ft_fration": 0.5}, r"ft_fration: unknown parameter; did you mean ft_fraction\?"),
    ({"finetune": {"optimizer": "adamw"}}, r"finetune.optimizer = 'adamw': must be one of adam, sgd, rmsprop "
                                           r"\(edit params.yaml or run dvc exp run -S finetune.optimizer=...\)"),
    ({"finetune": {"class_weight": "auto"}}, r"finetune.class_weight = 'auto': must be one of none, balanced"),
    ({"finetune": {"epochs": 0}}, r"finetune.epochs = 0: must be an integer in \[1, 10000\]"),
    ({"finetune": {"epochs": 2.5}}, r"finetune.epochs = 2.5: must be an integer"),
    ({"finetune": {"deterministic_ops": "yes"}}, r"finetune.deterministic_ops = 'yes': must be one of true, false"),
    ({"svm": {"inner_folds": 1}}, r"svm.inner_folds = 1: must be an integer in \[2, 50\]"),
    ({"svm": {"C_grid": [0.1, -1]}}, r"svm.C_grid = \[0.1, -1\]: must be a list \(empty allowed\) of numbers"),
    ({"svm": {"C_grid": "0.1,1"}}, r"svm.C_grid = '0.1,1': must be a list"),
    ({"seed": -1}, r"seed = -1: must be an integer in \[0, 4294967295\]"),
    ({"seed": "42"}, r"seed = '42': must be an integer"),
    ({"finetune": {"precision": "float8"}}, r"finetune.precision = 'float8': must be one of float32, mixed_float16"),
    ({"finetune": {"jit_compile": "yes"}}, r"finetune.jit_compile = 'yes': must be one of auto, true, false"),
    ({"finetune": {"augmentation": {"rotate_deg": 90}}},
     r"finetune.augmentation.rotate_deg = 90: must be a number in \[0, 45\]"),
    ({"models": ["ResNet-50"]}, r"models = \['ResNet-50'\]: must be a non-empty list, without repeats, of VGG16"),
    ({"datasets": []}, r"datasets = \[\]: must be a non-empty list"),
    ({"models": [["VGG16"]]}, r"models = \[\['VGG16'\]\]: must be a non-empty list, without repeats, of VGG16"),
    ({"models": "VGG16"}, r"models = 'VGG16': must be a non-empty list"),
    ({"finetune": None}, r"finetune = None: must be a section of keys"),
    ({"image_size": 64}, r"image_size = 64 is too small for InceptionV3, which needs at least 75 px"),
    ({"weights": "/tmp/resnet50.h5"}, r"weights = '/tmp/resnet50.h5': a backbone weights file must lie in "
                                      r"models/backbones/.*-S weights=models/backbones/resnet50.h5"),
    ({"weights": "models/backbones/none.h5"}, r"weights = 'models/backbones/none.h5': no such file"),
    ({"finetune": {"validation_fraction": 0}}, r"evaluation.operating_point = youden is chosen on each fold's inner "
                                               r"validation images, but finetune.validation_fraction = 0 leaves none"),
    ({"evaluation": {"operating_point": "f1"}}, r"evaluation.operating_point = 'f1': must be one of youden, "
                                                r"sensitivity, specificity, argmax"),
    ({"evaluation": {"target": 0.3}}, r"evaluation.target = 0.3: must be a number in \[0.5, 1\]"),
    ({"cv": {"repeats": 0}}, r"cv.repeats = 0: must be an integer in \[1, 100\]"),
    ({"normalize": {"busi_classes": ["benign", "normal"]}},
     r"normalize.busi_classes = \['benign', 'normal'\] must hold benign and malignant"),
    ({"download": {"busi": {"url": "scholar.cu.edu.eg/Dataset_BUSI.zip"}}},
     r"download.busi.url = 'scholar.cu.edu.eg/Dataset_BUSI.zip': must be null or an address starting with http"),
    ({"download": {"busi": {"sha256": "abc"}}}, r"download.busi.sha256 = 'abc': must be null or a SHA-256: 64 hex"),
    ({"external": [{"train": "phantom", "test": "phantom_site_b"}]},
     r"external entry 1 \(\{train: phantom, test: phantom_site_b\}\): phantom_site_b must also be in datasets.*"
     r"-S 'datasets=\[phantom, phantom_site_b\]'"),
    ({"datasets": ["phantom"], "external": [{"train": "phantom", "test": "phantom"}]},
     r"external entry 1 .*: a dataset's own images are its cross-validation"),
    ({"datasets": ["phantom", "phantom_site_b"], "external": [{"train": "phantom", "test": "phantom_site_b"}] * 2},
     r"external entry 2 .*: listed twice"),
    ({"datasets": ["busi", "rodrigues"], "external": [{"train": "busi", "test": "rodrigues"}],
      "normalize": {"busi_classes": ["benign", "malignant", "normal"]}},
     r"external entry 1 .*: BUSI with normal is three classes.*-S 'normalize.busi_classes=\[benign,malignant\]'"),
    ({"external": [{"train": "phantom", "to": "busi"}]}, r"external = .*: must be a list \(empty allowed\) of "
                                                          r"\{train: <dataset>, test: <dataset>\} entries"),
    ({"external": {"train": "phantom", "test": "phantom_site_b"}}, r"external = .*: must be a list"),
    ({"normalize": {"resize": "pad"}}, r"normalize.resize = 'pad': must be one of letterbox, crop, stretch"),
    ({"download": {"phantom_site_b": {"overlay": "logo"}}},
     r"download.phantom_site_b.overlay = 'logo': must be one of none, text, ruler"),
    # A dataset of one's own (docs/datasets.md): declared with its layout, under a name of its own.
    ({"datasets": ["phantom", "clinic"]}, r"datasets: 'clinic' is neither built in nor declared under download; "
                                          r"declare it: download.clinic: \{layout: folders\}"),
    ({"datasets": ["buzi"]}, r"datasets: 'buzi' is neither built in .* did you mean busi\?"),
    ({"download": {"clinic": {"url": None}}}, r"download.clinic.layout: missing; .* folders or table"),
    ({"download": {"clinic": {"layout": "tree"}}}, r"download.clinic.layout = 'tree': must be one of folders, table"),
    ({"download": {"clinic": {"layout": "folders", "patients": "yes"}}},
     r"download.clinic.patients: unknown parameter"),
    ({"download": {"busi": {"layout": "folders"}}}, r"download.busi.layout: busi is a built-in dataset.*busi_local"),
    ({"download": {"my clinic": {"layout": "folders"}}}, r"download.my clinic: a dataset's name is its folder"),
    ({"external": [{"train": "phantom", "test": "clinic"}], "download": {"clinic": {"layout": "table"}}},
     r"external entry 1 .*clinic must also be in datasets"),
    ({"cv": {"folds": "official"}}, r"cv.folds = official with cv.n_splits = 5: phantom publishes no partition; "
                                    r"run dvc exp run -S cv.folds=seeded"),
    ({"datasets": ["busbra"], "cv": {"folds": "official", "n_splits": 3}},
     r"busbra publishes 5 and 10-fold partitions; run dvc exp run -S cv.n_splits=5"),
    ({"datasets": ["busbra"], "cv": {"folds": "official", "repeats": 3}},
     r"cv.folds = official reads one published partition, but cv.repeats = 3; run dvc exp run -S cv.repeats=1"),
    ({"weights": "imagenet"}, r"weights = imagenet: no cached ImageNet weights for VGG16, VGG19, ResNet50, "
                              r"ResNet101, InceptionV3 in .*\.keras/models and Keras' store cannot be reached "
                              r"\(URLError: no network\); download https://storage.googleapis.com/.*vgg16_weights"),
]


@pytest.mark.parametrize("change, message", BAD)
def test_each_bad_parameter_is_named_with_its_value_what_is_allowed_and_the_fix(change, message, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / ".keras"))     # no cached ImageNet weights
    with pytest.raises(PipelineError, match=message):
        check_params(merged(default_params(), change), reachable=lambda: "URLError: no network")


def test_an_external_pair_of_studied_datasets_passes():
    params = merged(default_params(), {"datasets": ["phantom", "phantom_site_b"],
                                       "external": [{"train": "phantom", "test": "phantom_site_b"},
                                                    {"train": "phantom_site_b", "test": "phantom"}]})
    assert check_params(params) is params


def test_a_declared_dataset_of_ones_own_passes_and_reaches_the_settings():
    from ultrasound_transfer.settings import settings_from_params

    params = merged(default_params(), {"datasets": ["phantom", "clinic"],
                                       "download": {"clinic": {"layout": "table"}},
                                       "external": [{"train": "phantom", "test": "clinic"}]})
    settings = settings_from_params(check_params(params))
    assert settings.sources["clinic"].layout == "table" and settings.sources["clinic"].url is None
    assert settings.sources["busi"].layout is None


def test_every_problem_is_listed_at_once():
    params = merged(default_params(), {"finetune": {"epoch": 3, "optimizer": "adamw"}, "svm": {"C": 0}})
    del params["features"], params["cv"]["n_splits"]
    with pytest.raises(PipelineError) as error:
        check_params(params)
    message = str(error.value)
    assert message.startswith("params.yaml has 5 problem(s), nothing was run:")
    for part in ("finetune.epoch: unknown", "finetune.optimizer = 'adamw'", "svm.C = 0", "features: missing",
                 "cv.n_splits: missing"):
        assert part in message


def test_the_repository_params_and_the_schema_agree():
    assert schema_problems(default_params()) == []
    from ultrasound_transfer.networks.backbones import BACKBONES

    assert tuple(BACKBONES) == MODELS
    assert set(IMAGENET_FILES) == set(BACKBONES) and set(SCHEMA) == set(default_params())


def test_every_parameter_says_what_it_means_in_params_yaml_and_the_reference_shows_it():
    comments = parameter_comments(REPO / "params.yaml")
    table = reference_markdown(REPO / "params.yaml")
    rows = {line.split("|")[1].strip().strip("`"): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines()[2:]}
    assert list(rows) == schema_keys()
    for key, (_default, allowed, meaning) in rows.items():
        assert meaning, f"params.yaml: give {key} a comment saying what it means"
        assert allowed == SCHEMA[key.split(".")[0]].allowed if "." not in key else allowed
    assert comments["finetune.epochs"] == "upper bound; early stopping may end sooner"
    assert rows["finetune.epochs"][0] == "`15`" and rows["svm.C_grid"][0] == "`[0.001, 0.01, 0.1, 1.0, 10.0]`"
    # A key left out of params.yaml (download.salivary is {}) takes its section's comment.
    assert rows["download.salivary.url"][2].startswith("assembled by hand")


def test_the_stage_refuses_bad_params_in_a_second_with_exit_2_and_writes_nothing(project):
    project.write_params({"finetune": {"epoch": 3}})
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "stages.check_params"], cwd=project.root, capture_output=True,
                            text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    elapsed = time.monotonic() - started
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "finetune.epoch: unknown parameter; did you mean finetune.epochs?" in result.stderr
    assert not (project / "data").exists() and elapsed < 10
    project.write_params({})
    subprocess.run([sys.executable, "-m", "stages.check_params"], cwd=project.root, check=True,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, capture_output=True)
    checked = yaml.safe_load((project / "data/params_checked.json").read_text())
    assert checked["valid"] and "finetune.epochs" in checked["checked"]


def numeric_keys(schema=SCHEMA, prefix=""):
    """Every numeric parameter of the schema, dotted, with its rule."""
    for key, rule in schema.items():
        if isinstance(rule, dict):
            yield from numeric_keys(rule, f"{prefix}{key}.")
        elif rule.allowed.startswith(("a number", "an integer")):
            yield f"{prefix}{key}"


def test_every_number_written_back_by_dvc_exp_run_s_reads_as_the_number_given(tmp_path, monkeypatch):
    # dvc exp run -S goes through dvc.utils.hydra.apply_overrides, which writes params.yaml with ruamel
    # (0.00001 becomes 1e-05, which YAML 1.1 readers take for a string).
    from dvc.utils.hydra import apply_overrides

    from ultrasound_transfer.common import load_params

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / ".keras"))
    params = default_params()
    checked = 0
    for key in numeric_keys():
        node = params
        for part in key.split("."):
            node = node[part]
        for written in {repr(node), f"{node:e}" if isinstance(node, float) else str(node)}:
            path = tmp_path / "params.yaml"
            path.write_text((REPO / "params.yaml").read_text())
            apply_overrides(str(path), [f"{key}={written}"])
            read = load_params(path)
            for part in key.split("."):
                read = read[part]
            assert read == node and type(read) is type(node), (key, written, read)
            check_params(load_params(path), reachable=lambda: None)
            checked += 1
    assert checked >= 30
    # The value the issue found unreadable, through DVC's own writer.
    path.write_text((REPO / "params.yaml").read_text())
    apply_overrides(str(path), ["finetune.learning_rate=0.00001"])
    assert "learning_rate: 1e-05" in path.read_text() and load_params(path)["finetune"]["learning_rate"] == 1e-05


@pytest.mark.parametrize("link", ["dotdot", "symlink"])
def test_a_weights_path_that_leaves_models_backbones_is_refused(project, link):
    outside = project.root / "elsewhere.h5"
    outside.write_bytes(b"not really weights")
    (project.root / "models/backbones").mkdir(parents=True)
    if link == "dotdot":
        weights = "models/backbones/../../elsewhere.h5"
    else:
        (project.root / "models/backbones/linked.h5").symlink_to(outside)
        weights = "models/backbones/linked.h5"
    with pytest.raises(PipelineError, match=r"must lie in models/backbones/ \(through '\.\.' or a symbolic link\)"):
        check_params(merged(default_params(), {"weights": weights}), reachable=lambda: None)

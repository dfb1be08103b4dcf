import pytest

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.study.experiments import (
    experiment_name,
    grid_points,
    parse_grid,
    resolved_params,
    split_override,
    split_values,
)


def test_commas_inside_brackets_belong_to_the_value():
    assert split_values("0,0.15, 1") == ["0", "0.15", "1"]
    assert split_values("[VGG16,ResNet50],[InceptionV3]") == ["[VGG16,ResNet50]", "[InceptionV3]"]
    assert split_values("{a: 1, b: 2}") == ["{a: 1, b: 2}"]


def test_grid_is_every_combination_first_key_slowest():
    grid = parse_grid(["ft_fraction=0,1", "seed=1,2"])
    points = grid_points({"weights": "none"}, grid)
    assert [(p["ft_fraction"], p["seed"]) for p in points] == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2")]
    assert all(p["weights"] == "none" for p in points)


@pytest.mark.parametrize("item", ["ft_fraction", "=0,1", "ft_fraction=0,,1"])
def test_malformed_overrides_say_how_to_write_them(item):
    with pytest.raises(PipelineError, match="ft_fraction=0|key=value"):
        parse_grid([item])


def test_names_match_the_protocol_command_and_are_valid_git_refs():
    point = {"ft_fraction": "0.150", "models": "[VGG16,ResNet50]"}
    assert experiment_name("paper", point, ["ft_fraction"]) == "paper-ft0.15"
    name = experiment_name("sweep", point, ["ft_fraction", "models"])
    assert name == "sweep-ft0.15-models_VGG16_ResNet50"


def test_values_are_parsed_as_dvc_parses_them(tmp_path):
    base = "ft_fraction: 0.15\nmodels: [ResNet50]\nfinetune:\n  epochs: 3\n"
    params = resolved_params({"ft_fraction": "0", "finetune.epochs": "5", "models": "[VGG16]"}, base)
    assert params == {"ft_fraction": 0, "finetune": {"epochs": 5}, "models": ["VGG16"]}
    assert type(params["ft_fraction"]) is int           # as dvc exp run -S ft_fraction=0 writes it
    assert split_override(" seed = 7 ") == ("seed", "7")


def test_overrides_dvc_cannot_apply_are_refused_as_dvc_would_refuse_them(tmp_path):
    base = "models: [VGG16]\ndownload:\n  salivary: {}\n"
    with pytest.raises(PipelineError, match=r"-S models=\[VGG16: DVC cannot read one of these values"):
        resolved_params({"models": "[VGG16"}, base)
    with pytest.raises(PipelineError, match=r"no download.salivary.url yet.*-S \+download.salivary.url"):
        resolved_params({"download.salivary.url": "https://host/s.zip"}, base)
    added = resolved_params({"+download.salivary.url": "https://host/s.zip"}, base)
    assert added["download"]["salivary"] == {"url": "https://host/s.zip"}

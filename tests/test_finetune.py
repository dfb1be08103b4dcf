import pytest

from stages import finetune
from stages.common import PipelineError
from tests.conftest import default_params


@pytest.mark.parametrize("value", [-0.1, 1.5, "half"])
def test_ft_fraction_outside_unit_interval_is_rejected(project, value):
    params = default_params()
    params["ft_fraction"] = value
    project.write_params(params)
    with pytest.raises(PipelineError, match=r"ft_fraction = .* must be a number in \[0.0, 1.0\]"):
        finetune.main(["phantom", "VGG16"])
    assert not (project / "models").exists()


def test_unknown_model_is_rejected_before_any_work(project):
    project.write_params(default_params())
    with pytest.raises(PipelineError, match="'VGG11' is not known"):
        finetune.main(["phantom", "VGG11"])

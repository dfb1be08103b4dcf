"""Each network's initial weights: ImageNet where Keras will really read it, files declared and checked."""

import hashlib
import inspect
import json

import pytest

from tests.conftest import default_params, merged
from tests.http_server import LoopbackServer
from ultrasound_transfer import backbone_weights
from ultrasound_transfer.backbone_weights import (
    IMAGENET_FILES,
    IMAGENET_MD5,
    check_weights_file,
    declaration_path,
    imagenet_reachable,
    input_preprocessing,
    keras_models_folder,
    weights_problems,
)
from ultrasound_transfer.choices import MODELS
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.parameters import check_params
from ultrasound_transfer.settings import settings_from_params


def test_the_imagenet_files_and_md5s_are_the_ones_keras_applications_checks():
    from keras.src.applications import inception_v3, resnet, vgg16, vgg19

    sources = {"VGG16": vgg16, "VGG19": vgg19, "ResNet50": resnet, "ResNet101": resnet, "InceptionV3": inception_v3}
    assert set(IMAGENET_FILES) == set(IMAGENET_MD5) == set(MODELS)
    for model, module in sources.items():
        text = inspect.getsource(module)
        assert IMAGENET_MD5[model] in text and IMAGENET_FILES[model].split("/")[1].split("_weights")[0] in text


def place_imagenet(folder, models, content=b"h5"):
    (folder / "models").mkdir(parents=True, exist_ok=True)
    for model in models:
        (folder / "models" / IMAGENET_FILES[model].split("/")[1]).write_bytes(content)


def test_cached_imagenet_weights_need_no_network_and_are_checked_against_keras_md5(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / ".keras"))
    place_imagenet(tmp_path / ".keras", ["VGG16", "ResNet50"])
    no_network = lambda: pytest.fail("no network needed")  # noqa: E731
    assert weights_problems("imagenet", ["VGG16", "ResNet50"], reachable=no_network, verify=False) == []
    problems = weights_problems("imagenet", ["VGG16"], reachable=no_network, verify=True)
    assert len(problems) == 1 and "is not Keras' VGG16 file (its MD5 is not 6d6bbae1" in problems[0]
    monkeypatch.setitem(IMAGENET_MD5, "VGG16", hashlib.md5(b"h5").hexdigest())    # the file Keras would accept
    assert weights_problems("imagenet", ["VGG16"], reachable=no_network, verify=True) == []


def test_an_unwritable_keras_cache_is_named_with_the_folder_keras_really_reads(tmp_path, monkeypatch):
    # Keras' get_file reads and downloads in /tmp/.keras when its cache cannot be written (keras.utils.get_file);
    # this process runs as root, for whom every folder is writable, so the permission is what is pretended here.
    home = tmp_path / ".keras"
    monkeypatch.setenv("KERAS_HOME", str(home))
    place_imagenet(home, ["ResNet50"])
    real_access = backbone_weights.os.access
    monkeypatch.setattr(backbone_weights.os, "access", lambda path, mode: False if str(path) == str(home)
                        else real_access(path, mode))
    assert keras_models_folder() == (home / "models", backbone_weights.Path("/tmp/.keras/models"))
    problems = weights_problems("imagenet", ["ResNet50"], reachable=lambda: None, verify=False)
    assert len(problems) == 1 and f"{home} cannot be written, so Keras reads and downloads its weights in " \
                                  "/tmp/.keras/models instead, where the files for ResNet50 are not" in problems[0]


def test_reachability_is_asked_over_http():
    with LoopbackServer() as server:
        server.files.content["/w.h5"] = b"weights"
        assert imagenet_reachable(server.url("/w.h5")) is None
        assert "404" in imagenet_reachable(server.url("/gone.h5"))
    assert "Error" in imagenet_reachable("http://127.0.0.1:9/w.h5", timeout=2)


def declared_file(root, name="radimagenet_resnet50.h5", content=b"weights", **declaration):
    path = root / "models/backbones" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    declaration = {"network": "ResNet50", "preprocessing": "caffe", "sha256": hashlib.sha256(content).hexdigest(),
                   "source": "RadImageNet (Mei et al. 2022)", **declaration}
    declaration_path(path).write_text(json.dumps(declaration))
    return path.relative_to(root).as_posix()


def test_a_declared_file_per_network_passes_and_feeds_the_declared_preprocessing(project):
    value = declared_file(project.root)
    params = merged(default_params(), {"weights": {"VGG16": "none", "VGG19": "none", "ResNet50": value,
                                                   "ResNet101": "none", "InceptionV3": "none"}})
    settings = settings_from_params(check_params(params, verify_weights=True))
    assert settings.weights["ResNet50"] == value and settings.weights["VGG16"] == "none"
    assert input_preprocessing(value) == "caffe" and input_preprocessing("imagenet") == "keras"
    assert check_weights_file("ResNet50", value) == hashlib.sha256(b"weights").hexdigest()
    assert check_weights_file("VGG16", "none") == ""


@pytest.mark.parametrize("change, message", [
    ({"network": "VGG16"}, r"weights.ResNet50 = .*declares it VGG16, not ResNet50; give ResNet50 its own file"),
    ({"sha256": "0" * 64}, r"weights.ResNet50 = .*its SHA-256 is [0-9a-f]{64}, not the 0{64} declared in"),
    ({"preprocessing": "radimagenet"},
     r"preprocessing 'radimagenet' is not one of keras, caffe, caffe_over_255, tf, torch, unit"),
    ({"layers": 3}, r"is not a weights declaration"),
    ({"sha256": 12345}, r"every value must be text and sha256 the file's 64 hexadecimal digits"),
])
def test_a_file_not_as_declared_is_refused_naming_the_file_and_the_fix(project, change, message):
    value = declared_file(project.root, **change)
    with pytest.raises(PipelineError, match=message):
        check_weights_file("ResNet50", value)


def test_an_undeclared_file_and_a_network_left_out_of_the_mapping_are_refused(project):
    value = declared_file(project.root)
    declaration_path(project.root / value).unlink()
    with pytest.raises(PipelineError, match=r"no declaration beside it; write models/backbones/radimagenet_resnet50"
                                            r"\.h5\.json saying which network it is.*\"preprocessing\": \"caffe\""):
        check_params(merged(default_params(), {"weights": {m: value if m == "ResNet50" else "none" for m in MODELS}}))
    with pytest.raises(PipelineError, match=r"weights names no initial weights for InceptionV3; add "
                                            r"weights.InceptionV3: imagenet"):
        check_params(merged(default_params(), {"weights": {m: "none" for m in MODELS if m != "InceptionV3"}}))
    with pytest.raises(PipelineError, match=r"weights = .*must be imagenet, none, or the path of a file"):
        check_params(merged(default_params(), {"weights": {"ResNet-50": "none"}}))


def test_a_keras_home_whose_folders_do_not_exist_yet_is_where_keras_will_read(tmp_path, monkeypatch):
    # Importing Keras creates $KERAS_HOME with its parents (os.makedirs), so that is where get_file then reads.
    nested = tmp_path / "a" / "b"
    monkeypatch.setenv("KERAS_HOME", str(nested))
    assert keras_models_folder() == (nested / "models", nested / "models")
    monkeypatch.setenv("KERAS_HOME", "")
    assert keras_models_folder()[1] == backbone_weights.Path("/tmp/.keras/models")

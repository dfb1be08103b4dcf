"""Each network's initial weights, and what a weights source must pass before any work.

``weights`` in ``params.yaml`` is one value for every network, or a mapping
from network to value, so that domain weights can be given to the networks
that have them (RadImageNet publishes ResNet50 and InceptionV3 among the
paper's five; Mei et al., Radiology: Artificial Intelligence 4(5), 2022) and
ImageNet to the others.  A value is ``imagenet``, ``none`` (random), or a file
in ``models/backbones/`` (a DVC dependency of every ``finetune``).

What is checked, framework-free, by :func:`weights_problems`:

* **ImageNet**: Keras reads its ``*_notop.h5`` files from its cache,
  ``$KERAS_HOME/models`` or ``~/.keras/models``, and, when that folder cannot
  be written, silently from ``/tmp/.keras/models`` instead (Keras'
  ``get_file``), downloading there: a file placed where the docs said is then
  not used and an offline run fails.  So the folder Keras will really read is
  named, a cached file is checked against the MD5 Keras itself checks
  (:data:`IMAGENET_MD5`, from ``keras.applications``; a file that fails it is
  downloaded again, which offline fails), and where a file is missing the
  store must answer.
* **A file**: inside ``models/backbones/`` (resolved, so no link leads out),
  readable, and *declared* beside it in ``<file>.json``
  (:class:`WeightsDeclaration`): the network it is (the architecture without
  its top), the input preprocessing it was trained with, and its SHA-256,
  which the file must match.  The preprocessing matters: RadImageNet's files
  were not trained on ``keras.applications``' own preprocessing of each
  network, and a network fed otherwise than it learned starts from weights
  that read its input wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping

from ultrasound_transfer import choices
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.paths import BACKBONES_DIR

# What keras.applications downloads for weights=imagenet without the top, per network.
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
IMAGENET_FILES = {
    "VGG16": "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "VGG19": "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "ResNet50": "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "ResNet101": "resnet/resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "InceptionV3": "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
# The MD5 keras.applications checks each of those files against (its file_hash); a test reads them from Keras.
IMAGENET_MD5 = {
    "VGG16": "6d6bbae143d832006294945121d1f1fc",
    "VGG19": "253f8cb515780f3b799900260a226db6",
    "ResNet50": "4d473c1dd8becc155b73f8504c6f6626",
    "ResNet101": "88cf7a10940856eca736dc7b7e228a21",
    "InceptionV3": "bcbd6486424b2319ff4ef7d526e38f63",
}
DECLARATION_SUFFIX = ".json"
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsDeclaration:
    """``models/backbones/<file>.json``: what a weights file is, written by whoever placed it."""

    network: str                 # one of choices.MODELS: the architecture, without its top
    preprocessing: str           # choices.INPUT_PREPROCESSINGS: how its training images were fed
    sha256: str                  # of the file
    source: str = ""             # where it came from (a paper, a release)
    licence: str = ""            # its terms

    def as_dict(self) -> dict:
        return asdict(self)


def weights_by_model(weights: str | Mapping[str, str], models: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Each of ``models``' initial weights: the one value for all, or the mapping's entry."""
    if isinstance(weights, str):
        return {model: weights for model in models}
    return {model: weights[model] for model in models if model in weights}


def is_file_value(value: str) -> bool:
    """Whether a ``weights`` value names a file (neither ``imagenet`` nor ``none``)."""
    return value != "imagenet" and value.lower() != "none"


def declaration_path(file: Path | str) -> Path:
    """Where a weights file is declared: beside it, its name plus ``.json``."""
    file = Path(file)
    return file.with_name(file.name + DECLARATION_SUFFIX)


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_declaration(file: Path | str) -> WeightsDeclaration:
    """The declaration of a weights file, or a refusal naming what to write where."""
    file, path = Path(file), declaration_path(file)
    example = json.dumps({"network": "ResNet50", "preprocessing": "caffe", "sha256": "<the file's SHA-256>",
                          "source": "where it came from", "licence": "its terms"})
    if not path.is_file():
        raise PipelineError(f"{file}: no declaration beside it; write {path} saying which network it is, how its "
                            f"training images were preprocessed and its SHA-256, e.g. {example} "
                            "(docs/parameters.md, 'Initial weights').")
    try:
        data = json.loads(path.read_text())
        declared = WeightsDeclaration(**data)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as error:
        raise PipelineError(f"{path} is not a weights declaration ({error}); it must be a JSON object like "
                            f"{example}.") from None
    if declared.network not in choices.MODELS:
        raise PipelineError(f"{path}: network {declared.network!r} is not one of {', '.join(choices.MODELS)}.")
    if not all(isinstance(value, str) for value in declared.as_dict().values()) or not re.fullmatch(
            r"[0-9a-fA-F]{64}", declared.sha256):
        raise PipelineError(f"{path}: every value must be text and sha256 the file's 64 hexadecimal digits; write "
                            f"them as in {example}.")
    if declared.preprocessing not in choices.INPUT_PREPROCESSINGS:
        raise PipelineError(f"{path}: preprocessing {declared.preprocessing!r} is not one of "
                            f"{', '.join(choices.INPUT_PREPROCESSINGS)} (docs/parameters.md, 'Initial weights').")
    return declared


def input_preprocessing(weights: str) -> str:
    """How a network starting from ``weights`` is fed: its ``keras.applications`` preprocessing for ImageNet and
    random weights, the declared one for a file."""
    return read_declaration(weights).preprocessing if is_file_value(weights) else "keras"


def keras_models_folder(environ: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """(where the docs say to put Keras' cached weights, where Keras will really read them).

    Keras' cache is ``$KERAS_HOME`` or ``~/.keras`` (``/tmp/.keras`` when the
    home folder cannot be written), and its ``get_file`` turns to
    ``/tmp/.keras`` whenever the cache folder itself cannot be written.
    """
    environ = os.environ if environ is None else environ
    if "KERAS_HOME" in environ:
        home = Path(environ["KERAS_HOME"]).expanduser()
    else:
        user = Path(environ.get("HOME", "~")).expanduser()
        home = (user if os.access(user, os.W_OK) else Path("/tmp")) / ".keras"
    # Importing Keras creates its home (os.makedirs, parents too) where the nearest existing folder allows it.
    existing = home
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    writable = str(home) not in ("", ".") and os.access(existing, os.W_OK) and (existing == home or existing.is_dir())
    used = home if writable else Path("/tmp/.keras")
    return home / "models", used / "models"


def imagenet_reachable(url: str = KERAS_WEIGHTS_URL + IMAGENET_FILES["VGG16"], timeout: float = 3.0) -> str | None:
    """None when Keras' weight store answers; otherwise why not."""
    try:
        request = urllib.request.Request(url, method="HEAD")
        urllib.request.urlopen(request, timeout=timeout).close()
        return None
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code} {error.reason} from {url}"
    except (urllib.error.URLError, socket.timeout, OSError) as error:
        return f"{type(error).__name__}: {getattr(error, 'reason', error)}"


def imagenet_problems(models: list[str], where: str, *, reachable: Callable[[], str | None],
                      verify: bool) -> list[str]:
    """ImageNet files Keras will not find where it reads (its cache unwritable), fails the MD5 of (``verify``), or
    cannot download (``where``: the parameter, for the message)."""
    placed, used = keras_models_folder()
    names = {model: Path(IMAGENET_FILES[model]).name for model in models}
    problems = []
    if placed != used:
        stranded = [model for model, name in names.items() if (placed / name).is_file() and not (used / name).is_file()]
        if stranded:
            problems.append(f"{where} = imagenet: {placed.parent} cannot be written, so Keras reads and downloads "
                            f"its weights in {used} instead, where the files for {', '.join(stranded)} are not; make "
                            f"{placed.parent} writable, or set KERAS_HOME to a writable folder and copy its models/ "
                            "there")
    if verify:
        for model, name in names.items():
            path = used / name
            if path.is_file() and file_digest(path, "md5") != IMAGENET_MD5[model]:
                problems.append(f"{where} = imagenet: {path} is not Keras' {model} file (its MD5 is not "
                                f"{IMAGENET_MD5[model]}), so Keras would download it again; delete it and copy "
                                f"{KERAS_WEIGHTS_URL}{IMAGENET_FILES[model]} there")
    missing = [model for model, name in names.items() if not (used / name).is_file()]
    if missing and not problems:
        why = reachable()
        if why is not None:
            files = ", ".join(f"{KERAS_WEIGHTS_URL}{IMAGENET_FILES[m]}" for m in missing)
            problems.append(f"{where} = imagenet: no cached ImageNet weights for {', '.join(missing)} in {used} and "
                            f"Keras' store cannot be reached ({why}); download {files} on a machine with internet "
                            f"and copy them into {used}/, or use weights=none (random initialization) knowingly")
    return problems


def file_problems(model: str, value: str, where: str, *, verify: bool) -> list[str]:
    """A weights file outside ``models/backbones/``, missing, undeclared, declared for another network, or (with
    ``verify``) not matching its declared SHA-256."""
    path = Path(value)
    # Resolved, so that neither '..' nor a symbolic link can lead out of the folder DVC tracks.
    inside = path.resolve().is_relative_to(BACKBONES_DIR.resolve())
    if path.is_absolute() or BACKBONES_DIR not in path.parents or not inside:
        how = " (through '..' or a symbolic link)" if BACKBONES_DIR in path.parents and not inside else ""
        return [f"{where} = {value!r}: a backbone weights file must lie in {BACKBONES_DIR}/{how}, which DVC "
                f"tracks as a dependency; copy it there and run dvc exp run -S {where}={BACKBONES_DIR / path.name}"]
    if not path.is_file():
        return [f"{where} = {value!r}: no such file; place the backbone weights (saved without the top) "
                f"there, or use weights=imagenet or weights=none"]
    try:
        declared = read_declaration(path)
    except PipelineError as problem:
        return [f"{where} = {value!r}: {problem}"]
    if declared.network != model:
        return [f"{where} = {value!r}: {declaration_path(path)} declares it {declared.network}, not {model}; give "
                f"{model} its own file"]
    if verify:
        actual = file_digest(path, "sha256")
        if actual != declared.sha256.lower():
            return [f"{where} = {value!r}: its SHA-256 is {actual}, not the {declared.sha256} declared in "
                    f"{declaration_path(path)}; the file changed or is not the one declared: replace it, or declare "
                    "this one"]
    return []


def weights_problems(weights: str | Mapping[str, str], models: list[str], *,
                     reachable: Callable[[], str | None] = imagenet_reachable, verify: bool = True) -> list[str]:
    """Every problem of the studied ``models``' initial weights (``verify``: read whole files for their hashes)."""
    by_model = weights_by_model(weights, models)
    where = {model: "weights" if isinstance(weights, str) else f"weights.{model}" for model in by_model}
    problems = []
    for model, value in by_model.items():
        if is_file_value(value):
            problems += file_problems(model, value, where[model], verify=verify)
    imagenet = [model for model, value in by_model.items() if value == "imagenet" and model in IMAGENET_FILES]
    if imagenet:
        problems += imagenet_problems(imagenet, "weights" if isinstance(weights, str) else "weights.<network>",
                                      reachable=reachable, verify=verify)
    return problems


def check_weights_file(model: str, value: str) -> str:
    """Refuse a weights file that fails :func:`file_problems` (its checksum read whole), before a network is built;
    return its SHA-256 ("" for ``imagenet`` and ``none``, whose files Keras checks itself)."""
    if not is_file_value(value):
        return ""
    problems = file_problems(model, value, f"weights.{model}", verify=True)
    if problems:
        raise PipelineError("; ".join(problems))
    return read_declaration(value).sha256.lower()

import hashlib
import shutil

import pandas as pd
import pytest

from stages import download
from tests import miniatures
from tests.conftest import default_params
from tests.http_server import LoopbackServer
from ultrasound_transfer.common import PipelineError


def test_phantom_raw_layout(project):
    params = default_params()
    params["download"]["phantom"].update(count=10, images_per_patient=2, native_size=40, near_copies=0)
    project.write_params(params)
    download.main(["phantom"])
    labels = pd.read_csv(project / "data/raw/phantom/labels.csv")
    assert list(labels.columns) == ["path", "label", "case"] and len(labels) == 10
    assert all((project / "data/raw/phantom" / p).is_file() for p in labels["path"])
    assert labels.groupby("case")["label"].nunique().max() == 1


def test_unknown_dataset_lists_known_ones(project):
    project.write_params(default_params())
    with pytest.raises(PipelineError, match=r"'busy'.*phantom"):
        download.main(["busy"])


def test_bad_phantom_param_names_key_and_writes_nothing(project):
    params = default_params()
    params["download"]["phantom"]["difficulty"] = 2
    project.write_params(params)
    with pytest.raises(PipelineError, match=r"download.phantom.difficulty = 2: must be a number in \[0, 1\]"):
        download.main(["phantom"])
    params["download"]["phantom"] = {"count": 10, "colour": "red"}
    project.write_params(params)
    with pytest.raises(PipelineError, match="colour"):
        download.main(["phantom"])
    assert not (project / "data").exists() or not any((project / "data").rglob("*.png"))


# --- real datasets: served by a loopback server, or placed by hand ------------------------------------


def busi_archive(tmp_path) -> bytes:
    miniatures.make_busi(tmp_path / "busi_src")
    return miniatures.zip_folder(tmp_path / "busi_src")


def params_with(section: dict) -> dict:
    params = default_params()
    params["download"].update(section)
    return params


def test_busi_is_downloaded_verified_and_extracted(project, tmp_path):
    data = busi_archive(tmp_path)
    with LoopbackServer() as server:
        server.files.content["/Dataset_BUSI.zip"] = data
        project.write_params(params_with({"busi": {"url": server.url("/Dataset_BUSI.zip"),
                                                   "sha256": hashlib.sha256(data).hexdigest()}}))
        download.main(["busi"])
    assert (project / "data/raw/_downloads/Dataset_BUSI.zip").read_bytes() == data
    assert (project / "data/raw/busi/Dataset_BUSI_with_GT/benign/benign (1)_mask.png").is_file()


def test_archive_placed_by_hand_is_used_offline_and_checked(project, tmp_path):
    data = busi_archive(tmp_path)
    archive = project / "data/raw/_downloads/Dataset_BUSI.zip"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(data)
    project.write_params(params_with({"busi": {"url": "http://127.0.0.1:9/unreachable.zip",
                                               "sha256": hashlib.sha256(data).hexdigest()}}))
    download.main(["busi"])
    assert (project / "data/raw/busi/Dataset_BUSI_with_GT/malignant").is_dir()

    project.write_params(params_with({"busi": {"url": None, "sha256": "1" * 64}}))
    shutil.rmtree(project / "data/raw/busi")
    with pytest.raises(PipelineError, match="expected 1{64}"):
        download.main(["busi"])
    assert not (project / "data/raw/busi").exists()


def test_folder_unpacked_by_hand_is_used_as_is(project):
    miniatures.make_rodrigues(project / "data/raw/rodrigues")
    before = sorted(p.name for p in (project / "data/raw/rodrigues").rglob("*"))
    project.write_params(params_with({"rodrigues": {"url": "http://127.0.0.1:9/never-asked", "sha256": None}}))
    download.main(["rodrigues"])
    assert sorted(p.name for p in (project / "data/raw/rodrigues").rglob("*")) == before


def test_offline_error_names_url_file_place_and_checksum(project, monkeypatch):
    project.write_params(params_with({"busi": {"url": "http://127.0.0.1:9/Dataset_BUSI.zip", "sha256": "ab" * 32}}))
    monkeypatch.setattr(download, "FETCH_BACKOFF_S", 0.0)
    with pytest.raises(PipelineError) as error:
        download.main(["busi"])
    message = str(error.value)
    for part in ("http://127.0.0.1:9/Dataset_BUSI.zip", "data/raw/_downloads/Dataset_BUSI.zip", "ab" * 32):
        assert part in message


def test_hand_assembled_datasets_say_what_to_place_where(project):
    project.write_params(default_params())
    with pytest.raises(PipelineError,
                       match=r"salivary cannot be downloaded automatically.*data/raw/salivary/<class>/<case>/<image>"):
        download.main(["salivary"])
    with pytest.raises(PipelineError,
                       match=r"ddti has no download address.*data/raw/ddti/.*data/raw/_downloads/ddti.zip"):
        download.main(["ddti"])


def test_wrong_layout_in_place_is_reported_not_overwritten(project):
    (project / "data/raw/busi/somewhere").mkdir(parents=True)
    project.write_params(default_params())
    with pytest.raises(PipelineError, match="does not hold busi in its official layout.*delete data/raw/busi"):
        download.main(["busi"])
    assert (project / "data/raw/busi/somewhere").is_dir()


def test_served_archive_with_escaping_entry_is_refused_and_leaves_nothing(project, tmp_path):
    miniatures.make_busi(tmp_path / "busi_src")
    (tmp_path / "busi_src" / "evil.txt").write_text("x")
    data = miniatures.zip_folder(tmp_path / "busi_src").replace(b"evil.txt", b"../e.txt")
    with LoopbackServer() as server:
        server.files.content["/Dataset_BUSI.zip"] = data
        project.write_params(params_with({"busi": {"url": server.url("/Dataset_BUSI.zip"), "sha256": None}}))
        with pytest.raises(PipelineError, match="outside the extraction folder"):
            download.main(["busi"])
    assert not (project / "data/raw/busi").exists() and not (project / "data/raw/e.txt").exists()
    assert [p.name for p in (project / "data/raw").iterdir()] == ["_downloads"]


# --- a dataset of one's own ---------------------------------------------------------------------------------------


def test_a_dataset_of_ones_own_is_used_in_place_or_fetched_and_else_says_what_to_place(project, tmp_path):
    from tests.data.test_datasets import make_clinic

    project.write_params(params_with({"clinic": {"layout": "folders"}}) | {"datasets": ["clinic"]})
    with pytest.raises(PipelineError, match=r"data/raw/clinic holds no images of clinic; place your images as "
                                            r"data/raw/clinic/<label>/<patient>/<image>.*download.clinic.url"):
        download.main(["clinic"])
    data = miniatures.zip_folder(make_clinic(tmp_path / "export"))
    with LoopbackServer() as server:
        server.files.content["/clinic.zip"] = data
        project.write_params(params_with({"clinic": {"layout": "folders", "url": server.url("/clinic.zip"),
                                                     "sha256": hashlib.sha256(data).hexdigest()}})
                             | {"datasets": ["clinic"]})
        download.main(["clinic"])
    assert (project / "data/raw/clinic/malignant/P2/IM000001").is_file()
    shutil.rmtree(project / "data/raw/_downloads")
    download.main(["clinic"])           # in place now: used as it is, nothing fetched
    (project / "data/raw/clinic/benign").rename(project / "data/raw/clinic/Benign")
    with pytest.raises(PipelineError, match=r"does not hold clinic in the folders layout declared in "
                                            r"download.clinic.layout: .*label 'Benign'"):
        download.main(["clinic"])

import hashlib
import io
import time
import zipfile

import pytest

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.fetch import download, extract_zip
from tests.http_server import LoopbackServer


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


def payload(n=300_000):
    return bytes(range(256)) * (n // 256)


def test_whole_download_verified(server, tmp_path):
    data = payload()
    server.files.content["/a.bin"] = data
    target = download(server.url("/a.bin"), tmp_path / "a.bin", hashlib.sha256(data).hexdigest(), backoff=0)
    assert target.read_bytes() == data
    assert not (tmp_path / "a.bin.part").exists()


@pytest.mark.parametrize("how", ["cut_after", "chunked_cut_after"])   # Content-Length, or a chunked answer
def test_cut_off_transfer_resumes_with_range(server, tmp_path, how):
    data = payload()
    server.files.content["/a.bin"] = data
    getattr(server.files, how)["/a.bin"] = 100_000
    target = download(server.url("/a.bin"), tmp_path / "a.bin", hashlib.sha256(data).hexdigest(), backoff=0)
    assert target.read_bytes() == data
    ranges = [r for path, r in server.files.requests]
    assert ranges == [None, "bytes=100000-"]


def interrupted_run(server, tmp_path, data) -> None:
    """An earlier run that gave up after 100,000 bytes, leaving the partial file and its record."""
    server.files.content["/a.bin"] = data
    server.files.cut_after["/a.bin"] = 100_000
    with pytest.raises(PipelineError, match="could not download"):
        download(server.url("/a.bin"), tmp_path / "a.bin", None, retries=0)
    assert (tmp_path / "a.bin.part").stat().st_size == 100_000
    server.files.requests.clear()


def test_a_partial_file_of_an_earlier_run_resumes_only_while_the_server_vouches_for_it(server, tmp_path):
    data = payload()
    interrupted_run(server, tmp_path, data)
    assert download(server.url("/a.bin"), tmp_path / "a.bin", None, backoff=0).read_bytes() == data
    assert [r for _, r in server.files.requests] == ["bytes=100000-"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_partial_file_of_a_file_changed_since_comes_back_whole(server, tmp_path):
    interrupted_run(server, tmp_path, payload())
    changed = payload()[::-1]
    server.files.content["/a.bin"] = changed          # new ETag: If-Range fails, the server sends it all
    assert download(server.url("/a.bin"), tmp_path / "a.bin", None, backoff=0).read_bytes() == changed


@pytest.mark.parametrize("origin", ["unknown", "other address", "no validator"])
def test_a_partial_file_that_cannot_be_shown_to_be_the_start_is_discarded(server, tmp_path, origin, capsys):
    data = payload()
    if origin == "no validator":
        server.files.validators = False
    interrupted_run(server, tmp_path, data)
    (tmp_path / "a.bin.part").write_bytes(b"stale bytes of something else" * 1000)
    record = tmp_path / "a.bin.part.json"
    if origin == "unknown":
        record.unlink()
    elif origin == "other address":
        record.write_text('{"url": "https://elsewhere.example/a.bin", "validator": "\\"x\\""}')
    assert download(server.url("/a.bin"), tmp_path / "a.bin", None, backoff=0).read_bytes() == data
    assert [r for _, r in server.files.requests] == [None]
    assert "discarding" in capsys.readouterr().err


def test_wrong_checksum_is_an_error_and_leaves_nothing(server, tmp_path):
    server.files.content["/a.bin"] = payload()
    with pytest.raises(PipelineError, match=r"SHA-256 .* expected 0{64}"):
        download(server.url("/a.bin"), tmp_path / "a.bin", "0" * 64, backoff=0)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_url_names_url_target_and_checksum(tmp_path):
    with pytest.raises(PipelineError) as error:
        download("http://127.0.0.1:9/missing.zip", tmp_path / "x.zip", "ab" * 32, retries=1, backoff=0, timeout=2)
    message = str(error.value)
    assert "http://127.0.0.1:9/missing.zip" in message and str(tmp_path / "x.zip") in message and "ab" * 32 in message


def test_missing_file_is_not_retried(server, tmp_path):
    with pytest.raises(PipelineError, match="404"):
        download(server.url("/nothing.zip"), tmp_path / "n.zip", None, retries=3, backoff=0)
    assert len(server.files.requests) == 1


@pytest.mark.parametrize("status, attempts", [(400, 1), (403, 1), (451, 1), (429, 3), (503, 3)])
def test_client_errors_fail_at_once_and_server_errors_are_retried(server, tmp_path, status, attempts):
    server.files.status["/a.zip"] = status
    with pytest.raises(PipelineError, match=rf"{status}.*place it at {tmp_path / 'a.zip'}"):
        download(server.url("/a.zip"), tmp_path / "a.zip", None, retries=2, backoff=0)
    assert len(server.files.requests) == attempts


def test_unknown_host_fails_at_once_without_back_off(tmp_path):
    started = time.monotonic()
    with pytest.raises(PipelineError, match=r"no-such-host\.invalid/a\.zip.*place it at"):
        download("http://no-such-host.invalid/a.zip", tmp_path / "a.zip", None, retries=3, backoff=30)
    assert time.monotonic() - started < 20       # one back-off alone would have taken 30 s


def test_extract_zip_unpacks_atomically(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"top/x.txt": b"x", "top/sub/y.txt": b"y"}))
    extract_zip(archive, tmp_path / "out")
    assert (tmp_path / "out/top/sub/y.txt").read_bytes() == b"y"


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "top/../../evil.txt"])
def test_extract_zip_refuses_escaping_entries(tmp_path, name):
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"ok.txt": b"fine", name: b"evil"}))
    with pytest.raises(PipelineError, match="outside the extraction folder"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


def test_extract_zip_refuses_bombs_and_oversize(tmp_path):
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(zip_bytes({"zeros.bin": bytes(50_000_000)}))
    with pytest.raises(PipelineError, match="decompression bomb"):
        extract_zip(archive, tmp_path / "out")
    with pytest.raises(PipelineError, match="cap"):
        extract_zip(archive, tmp_path / "out", max_bytes=1000)
    assert not (tmp_path / "out").exists()


def test_corrupt_zip_is_an_error(tmp_path):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(PipelineError, match="not a valid zip"):
        extract_zip(archive, tmp_path / "out")


def damaged_zip(tmp_path):
    import zipfile

    path = tmp_path / "damaged.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("benign/a.png", bytes(range(256)) * 20)      # barely compressible: no bomb
    data = bytearray(path.read_bytes())
    start = data.index(b"benign/a.png") + len("benign/a.png")
    data[start + 5] ^= 0xFF                     # flip a byte of the compressed data
    path.write_bytes(bytes(data))
    return path


def test_damaged_or_unwritable_archive_entries_are_refused_naming_the_entry(tmp_path):
    import zipfile

    from ultrasound_transfer.data.fetch import extract_zip

    with pytest.raises(PipelineError, match=r"entry 'benign/a.png' is damaged .*download it again"):
        extract_zip(damaged_zip(tmp_path), tmp_path / "out1")
    assert not (tmp_path / "out1").exists()
    clash = tmp_path / "clash.zip"
    with zipfile.ZipFile(clash, "w") as zf:
        zf.writestr("a", b"file")
        zf.writestr("a/b.png", b"inside a folder of the same name")
    with pytest.raises(PipelineError, match=r"entry 'a/b.png' cannot be written"):
        extract_zip(clash, tmp_path / "out2")
    long_name = tmp_path / "long.zip"
    with zipfile.ZipFile(long_name, "w") as zf:
        zf.writestr("x" * 300 + ".png", b"name longer than the file system allows")
    with pytest.raises(PipelineError, match=r"cannot be written .*too long"):
        extract_zip(long_name, tmp_path / "out3")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_a_full_disk_during_a_download_is_not_retried_as_a_network_fault(server, tmp_path):
    """The .part file is /dev/full: every write fails with ENOSPC, as on a full disk."""
    import os
    if not os.path.exists("/dev/full"):
        pytest.skip("needs Linux's /dev/full")
    server.files.content["/a.bin"] = payload()
    target = tmp_path / "a.bin"
    (tmp_path / "a.bin.part").symlink_to("/dev/full")
    (tmp_path / "a.bin.part.json").write_text('{"url": "%s", "validator": "\\"v\\""}' % server.url("/a.bin"))
    with pytest.raises(PipelineError, match="the disk is full"):
        download(server.url("/a.bin"), target, None, retries=3, backoff=60)
    assert len(server.files.requests) == 1

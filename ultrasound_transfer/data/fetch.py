"""Downloading and unpacking dataset archives, robustly.

* :func:`download` streams a URL to a file with a progress line, resumes an
  interrupted transfer (a reset, a time-out, a truncated chunked answer) with
  an HTTP ``Range`` request, retries with exponential back-off, and verifies a
  SHA-256 checksum before the file gets its final name.  A partial file left
  by an earlier run is resumed only when it can be shown to be the start of
  the same file: it was fetched from the same address, and the server's
  validator (ETag or Last-Modified, sent back as ``If-Range``, RFC 9110
  13.1.5) still matches, so a changed file comes back whole; otherwise it is
  discarded and the download starts afresh.  What asking again
  cannot fix (an unknown host, a 4xx answer) fails at once, naming the address
  and where to place the file by hand.
* :func:`extract_zip` unpacks into a temporary folder that is renamed into
  place only when complete, and refuses entries that would escape the folder
  (``..``, absolute paths, links) or that decompress beyond a size cap.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import stat
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ultrasound_transfer.common import PipelineError, atomic_dir, storage_error

CHUNK = 1 << 20
# Some hosts refuse Python's default User-Agent.
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) ultrasound-transfer-learning/1.0"
MAX_UNPACKED_BYTES = 20 * 1024**3      # 20 GiB in all
MAX_COMPRESSION_RATIO = 200            # per entry; ordinary images compress far less


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, expected: str | None) -> None:
    """Fail if ``path``'s SHA-256 differs from ``expected`` (skipped when None)."""
    if not expected:
        return
    actual = sha256_of(path)
    if actual != expected.lower():
        raise PipelineError(
            f"{path} has SHA-256 {actual}, expected {expected}: the file is corrupt or another "
            "version. Delete it and download it again."
        )


class Progress:
    """A progress line rewritten in place, at most every half second."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total, self.last = label, total, 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < 0.5:
            return
        self.last = now
        size = f"{done / 1e6:.1f} MB"
        if self.total:
            size += f" / {self.total / 1e6:.1f} MB ({100 * done / self.total:.0f} %)"
        print(f"\r[download] {self.label}: {size}", end="\n" if final else "", file=sys.stderr, flush=True)


def _open(url: str, offset: int, timeout: float, if_range: str | None = None):
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if if_range:
            headers["If-Range"] = if_range
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def validator_file(partial: Path) -> Path:
    """Beside ``x.part``: ``x.part.json``, the address and the server's validator of the bytes in it."""
    return partial.with_name(partial.name + ".json")


def response_validator(response) -> str | None:
    """What ``If-Range`` may send back: a strong ETag, else Last-Modified; None when the server gave neither."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def stale_partial_problem(url: str, partial: Path) -> str | None:
    """Why a partial file from an earlier run cannot be resumed (None when it can)."""
    import json

    if not partial.exists():
        return None
    try:
        record = json.loads(validator_file(partial).read_text())
    except (OSError, ValueError):
        return "nothing records where its bytes came from"
    if record.get("url") != url:
        return f"it was fetched from {record.get('url')}"
    if not record.get("validator"):
        return "the server gave no ETag or Last-Modified to check that the file is unchanged"
    return None


def _transfer(url: str, partial: Path, timeout: float, label: str) -> None:
    """Append the rest of ``url`` to ``partial``; restart if the server ignores Range or the file changed."""
    import json

    offset = partial.stat().st_size if partial.exists() else 0
    record = validator_file(partial)
    known = json.loads(record.read_text()).get("validator") if offset and record.exists() else None
    with _open(url, offset, timeout, if_range=known) as response:
        if offset and response.status != 206:   # the whole file again: Range ignored, or If-Range failed
            offset = 0
        if not offset:
            record.write_text(json.dumps({"url": url, "validator": response_validator(response)}))
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        progress = Progress(label, total)
        with open(partial, "ab" if offset else "wb") as out:
            done = offset
            # read1 hands over what has arrived, so a transfer cut mid-chunk keeps every byte received
            # and the retry resumes after the last one (read() would drop the unfinished chunk).
            while chunk := response.read1(CHUNK):
                out.write(chunk)
                done += len(chunk)
                progress.update(done)
        progress.update(done, final=True)
        if total is not None and done < total:
            raise ConnectionError(f"connection closed after {done} of {total} bytes")


def is_permanent(error: urllib.error.HTTPError) -> bool:
    """Client errors (4xx) other than time-outs and rate limits: asking again gets the same answer."""
    return 400 <= error.code < 500 and error.code not in (408, 425, 429)


def download(
    url: str, target: Path, sha256: str | None, *, retries: int = 5, backoff: float = 2.0, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``target``, resuming and retrying; verify ``sha256``.

    Bytes arrive in ``target.part``; only a complete, verified file is renamed
    to ``target``.  A wrong checksum deletes the partial file, since resuming it
    would keep the bad bytes.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    problem = stale_partial_problem(url, partial)
    if problem:
        print(f"[download] {target.name}: discarding {partial} ({partial.stat().st_size} bytes) from an earlier "
              f"run: {problem}, so it may not be the start of {url}; downloading afresh", file=sys.stderr,
              flush=True)
        partial.unlink()
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _transfer(url, partial, timeout, target.name)
            last_error = None
            break
        except urllib.error.HTTPError as error:
            if error.code == 416 and partial.exists():   # nothing left to fetch: .part is whole
                last_error = None
                break
            last_error = error
            if is_permanent(error):
                break
        except urllib.error.URLError as error:
            last_error = error
            if isinstance(error.reason, socket.gaierror):   # unknown host: no retry will find it
                break
        except (http.client.HTTPException, ConnectionError, TimeoutError, OSError) as error:
            problem = storage_error(error, partial, partial.stat().st_size if partial.exists() else 0)
            if problem:                                 # a full or read-only disk: asking again cannot help
                raise problem from error
            last_error = error                          # a cut transfer (IncompleteRead, reset): resume it
        if attempt < retries:
            wait = backoff * 2**attempt
            print(f"[download] {target.name}: {last_error}; retrying in {wait:.0f} s "
                  f"({attempt + 1}/{retries})", file=sys.stderr, flush=True)
            time.sleep(wait)
    if last_error is not None:
        raise PipelineError(
            f"could not download {url} ({type(last_error).__name__}: {last_error}). Without network "
            f"access, get the file by other means and place it at {target}"
            + (f" (SHA-256 {sha256})." if sha256 else ".")
        )
    try:
        verify_checksum(partial, sha256)
    except PipelineError:
        partial.unlink(missing_ok=True)
        validator_file(partial).unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    validator_file(partial).unlink(missing_ok=True)
    return target


def safe_member_path(name: str) -> PurePosixPath:
    """The relative path of a zip entry, or an error if it would leave the folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise PipelineError(f"archive entry {name!r} points outside the extraction folder; refusing the archive.")
    return path


def extract_zip(archive: Path, destination: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> None:
    """Unpack ``archive`` into ``destination`` atomically and safely.

    Refused: entries with ``..`` or absolute paths, symbolic links, a total
    unpacked size above ``max_bytes``, and entries compressed more than
    ``MAX_COMPRESSION_RATIO`` times (decompression bombs).
    """
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as error:
        raise PipelineError(f"{archive} is not a valid zip archive ({error}); delete it and download it again.")
    with zf, atomic_dir(destination) as tmp:
        entries = zf.infolist()
        total = sum(e.file_size for e in entries)
        if total > max_bytes:
            raise PipelineError(f"{archive} would unpack to {total / 1e9:.1f} GB, above the {max_bytes / 1e9:.1f} GB cap.")
        for entry in entries:
            relative = safe_member_path(entry.filename)
            if stat.S_ISLNK(entry.external_attr >> 16):
                raise PipelineError(f"archive entry {entry.filename!r} is a symbolic link; refusing the archive.")
            if entry.compress_size and entry.file_size / entry.compress_size > MAX_COMPRESSION_RATIO:
                raise PipelineError(f"archive entry {entry.filename!r} is compressed {entry.file_size // entry.compress_size}x; "
                                    "refusing a possible decompression bomb.")
            out = tmp.joinpath(*relative.parts)
            try:
                if entry.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(entry) as source, open(out, "wb") as target:
                    shutil.copyfileobj(source, target, CHUNK)
            except (zipfile.BadZipFile, zlib.error, EOFError) as error:
                raise PipelineError(f"{archive}: entry {entry.filename!r} is damaged ({error}); delete the archive "
                                    "and download it again.") from None
            except (NotImplementedError, RuntimeError) as error:      # a compression method or encryption zipfile lacks
                raise PipelineError(f"{archive}: entry {entry.filename!r} cannot be unpacked here ({error}); unpack "
                                    f"it with another tool into {destination} (docs/datasets.md).") from None
            except OSError as error:
                raise PipelineError(f"{archive}: entry {entry.filename!r} cannot be written to {out} "
                                    f"({error.strerror or error}); a file and a folder of the same name, a name "
                                    "too long for this file system, or a full disk. Unpack it by hand into "
                                    f"{destination} (docs/datasets.md).") from None

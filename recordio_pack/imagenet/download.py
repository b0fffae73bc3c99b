"""Download the ILSVRC2012 archives: resume (HTTP Range), retries with backoff, free-space check, checksums.

Retries wait an exponential backoff with jitter, or, on 429 and 503 answers that carry one, what the server's
``Retry-After`` says (seconds or an HTTP date).

Data goes to ``NAME.part`` and is renamed to ``NAME`` only when complete and (unless ``verify=False``) its MD5
and SHA-256 match the published values in ``PUBLISHED``.  Digests are computed while the bytes arrive, so a
138 GB archive is not read a second time; a ``.part`` left by an earlier process is hashed once, then
resumed.  A file whose checksum is wrong is renamed ``NAME.corrupt`` and reported; it never takes the name.
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import os
import random
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any

from recordio_pack import __version__
from recordio_pack.digest import hash_file, hashers
from recordio_pack.errors import RecordioPackError, UsageError
from recordio_pack.progress import NullProgress, Progress, Retrying, Task, start_task

__all__ = ["Checksums", "PUBLISHED", "OFFICIAL_NAMES", "DownloadResult", "download",
           "file_checksums", "archive_urls", "Backoff", "retry_after_seconds"]

CHUNK = 1 << 20


@dataclass(frozen=True)
class Checksums:
    """Hex digests; None where no published value is known."""

    md5: str | None = None
    sha256: str | None = None


# The archives' published checksums.  Where each value is published:
# - MD5 of train, train_t3 and val: the ILSVRC2012 download page on image-net.org, as quoted in GluonCV's
#   "Prepare the ImageNet dataset" tutorial (dmlc/gluon-cv docs/classification/imagenet-dataset.rst).
# - MD5 of train, val and devkit: torchvision, torchvision/datasets/imagenet.py (ARCHIVE_META).
# - SHA-256 of train, val and devkit: torchvision, torchvision/prototype/datasets/_builtin/imagenet.py
#   (_IMAGES_CHECKSUMS and the devkit resource).
# No published SHA-256 was found for ILSVRC2012_img_train_t3.tar, so it has MD5 only.  The test-set archives
# are left out: they carry no labels and nothing here uses them.
PUBLISHED: dict[str, Checksums] = {
    "ILSVRC2012_img_train.tar": Checksums(
        md5="1d675b47d978889d74fa0da5fadfb00e",
        sha256="b08200a27a8e34218a0e58fde36b0fe8f73bc377f4acea2d91602057c3ca45bb"),
    "ILSVRC2012_img_val.tar": Checksums(
        md5="29b22e2961454d5413ddabcf34fc5622",
        sha256="c7e06a6c0baccf06d8dbeb6577d71efff84673a5dbdd50633ab44f8ea0456ae0"),
    "ILSVRC2012_devkit_t12.tar.gz": Checksums(
        md5="fa75699e90414af021442c21a62c3abf",
        sha256="b59243268c0d266621fd587d2018f69e906fb22875aca0e295b48cafaa927953"),
    "ILSVRC2012_img_train_t3.tar": Checksums(md5="ccaf1013018ac1037801578038d370da"),
}
OFFICIAL_NAMES = {"train": "ILSVRC2012_img_train.tar", "val": "ILSVRC2012_img_val.tar",
                  "devkit": "ILSVRC2012_devkit_t12.tar.gz", "train_t3": "ILSVRC2012_img_train_t3.tar"}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")
log = logging.getLogger(__name__)


@dataclass
class DownloadResult:
    name: str
    path: str
    url: str
    bytes: int
    resumed_from: int  # bytes already in NAME.part when this run started
    retries: int
    md5: str
    sha256: str
    verified: bool  # checked against PUBLISHED (or the injected table)
    already_present: bool  # NAME existed and was kept
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Dropped(Exception):
    """The server closed the connection before the announced length."""


class _Hashes:
    def __init__(self) -> None:
        self.md5, self.sha256 = hashers("md5", "sha256")

    def update(self, data: bytes) -> None:
        self.md5.update(data)
        self.sha256.update(data)


def _hash_file(path: Path, hashes: _Hashes, progress: Progress) -> int:
    """Hash bytes already on disk (a resumed ``.part`` or an existing file): task "hash NAME", in bytes."""
    task = start_task(progress, f"hash {path.name}", "bytes", path.stat().st_size)
    return hash_file(path, hashes, on_bytes=task.advance)


def file_checksums(path: str | Path, progress: Progress | None = None) -> Checksums:
    """MD5 and SHA-256 of a file on disk, in one read."""
    hashes = _Hashes()
    _hash_file(Path(path), hashes, progress or NullProgress())
    return Checksums(hashes.md5.hexdigest(), hashes.sha256.hexdigest())


def _mismatch(expected: Checksums | None, md5: str, sha256: str) -> str | None:
    if expected is None:
        return None
    for kind, want, got in (("MD5", expected.md5, md5), ("SHA-256", expected.sha256, sha256)):
        if want and want.lower() != got:
            return f"{kind} is {got}, the published value is {want}"
    return None


def archive_urls(base_url: str, archives: list[str]) -> list[str]:
    """URLs under ``base_url`` for archive keys (train, val, devkit, train_t3) or file names."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    return [base + OFFICIAL_NAMES.get(archive, archive) for archive in archives]


def _name_from_url(url: str) -> str:
    # unquote before taking the last component, so "%2F" cannot smuggle a folder into the name
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name or name in (".", "..") or "\0" in name:
        raise UsageError(f"{url}: no file name at the end of the URL")
    return name


def _retryable_http(code: int) -> bool:
    return code in (408, 425, 429) or code >= 500


RETRY_AFTER_CODES = (429, 503)  # where a Retry-After header is honoured (RFC 9110 section 10.2.3)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds from ``now`` (Unix time): delta-seconds or an
    HTTP date (a date already past gives 0); None when there is no header or it cannot be read."""
    value = (value or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class Backoff:
    """How long to wait before a retry. After ``failures`` consecutive failures: ``base * 2**(failures - 1)``
    seconds, at most ``cap``, times a random factor in (0.5, 1] (``1 - rand() / 2``: clients that failed
    together do not come back together). A 429 or 503 with a readable ``Retry-After`` waits what it says
    instead, at most ``max_retry_after`` seconds. ``rand`` (floats in [0, 1)) and ``now`` (Unix time) are
    injectable so tests are deterministic."""

    base: float = 1.0
    cap: float = 60.0
    max_retry_after: float = 3600.0
    rand: Callable[[], float] = field(default=random.random)
    now: Callable[[], float] = field(default=time.time)

    def delay(self, failures: int, error: BaseException | None = None) -> float:
        asked = _asked_wait(error, self.now)
        if asked is not None:
            return min(asked, self.max_retry_after)
        return min(self.cap, self.base * 2 ** (failures - 1)) * (1 - self.rand() / 2)


def _asked_wait(error: BaseException | None, now: Callable[[], float]) -> float | None:
    if not isinstance(error, urllib.error.HTTPError) or error.code not in RETRY_AFTER_CODES or error.headers is None:
        return None
    return retry_after_seconds(error.headers.get("Retry-After"), now())


def _check_space(dest: Path, needed: int, disk_free: Callable[[Path], int]) -> None:
    free = disk_free(dest)
    if needed > free:
        raise RecordioPackError(f"{dest}: needs {needed:,} more bytes ({needed / 1e9:.1f} GB), "
                                f"has {free:,} free ({free / 1e9:.1f} GB)")


def _existing(path: Path, url: str, expected: Checksums | None, verify: bool,
              progress: Progress) -> DownloadResult:
    """The result for a complete file already at ``path``, re-checked when a checksum is known."""
    size = path.stat().st_size
    if not (verify and expected):
        return DownloadResult(path.name, str(path), url, size, size, 0, "", "", False, True,
                              "already present; not checked" + ("" if verify else " (--no-verify)"))
    sums = file_checksums(path, progress)
    problem = _mismatch(expected, sums.md5 or "", sums.sha256 or "")
    if problem:
        raise RecordioPackError(f"{path} exists but its {problem}; remove it or pass --overwrite to download "
                                "again")
    return DownloadResult(path.name, str(path), url, size, size, 0, sums.md5 or "", sums.sha256 or "", True, True,
                          "already present and verified")


class _Transfer:
    """One file's download state across attempts: bytes in ``part`` so far and their running digests."""

    def __init__(self, url: str, part: Path, progress: Progress, timeout: float,
                 check_space: Callable[[int], None]) -> None:
        self.url, self.part, self.progress, self.timeout = url, part, progress, timeout
        self.task = Task(progress, part.name[:-len(".part")])  # announced by each attempt that gets an answer
        self.hashes = _Hashes()
        self.offset = _hash_file(part, self.hashes, progress) if part.exists() else 0
        self._check_space: Callable[[int], None] | None = check_space

    def _restart(self) -> None:
        self.hashes, self.offset = _Hashes(), 0
        with open(self.part, "wb"):
            pass

    def attempt(self) -> None:
        """One request from ``offset`` to the end; returns when complete, raises on any failure."""
        headers = {"User-Agent": f"recordio-pack/{__version__}", "Accept-Encoding": "identity"}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
        request = urllib.request.Request(self.url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            if error.code == 416 and self.offset:
                match = _UNSATISFIED_RANGE.search(error.headers.get("Content-Range", ""))
                if match and int(match.group(1)) == self.offset:
                    return  # the .part already holds the whole file
                self._restart()
            raise
        with response:
            total = self._position(response)
            length = response.headers.get("Content-Length")
            end = self.offset + int(length) if length is not None else None
            if self._check_space is not None and end is not None:
                self._check_space(end - self.offset)  # once, before the first byte is written
                self._check_space = None
            self.task = start_task(self.progress, self.task.name, "bytes", total or end, done=self.offset)
            with open(self.part, "ab") as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    self.hashes.update(chunk)
                    self.offset += len(chunk)
                    self.task.advance(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        if end is not None and self.offset < end:
            raise _Dropped(f"connection closed after {self.offset:,} of {end:,} bytes")

    def retrying(self, attempt: int, delay: float, error: str) -> None:
        """Attempt ``attempt`` failed with ``error``; the next starts in ``delay`` seconds."""
        log.info("%s: attempt %d failed (%s); retrying in %.1f s", self.url, attempt, error, delay)
        self.progress.on_progress(Retrying(self.task.name, status=f"retry {attempt} in {delay:.0f}s: {error}"[:60],
                                           attempt=attempt, delay=delay, error=error))

    def _position(self, response: Any) -> int | None:
        """Check where the body starts (restarting when the server ignored the range); return the total size."""
        content_range = response.headers.get("Content-Range", "")
        if response.status == 206:
            match = _CONTENT_RANGE.search(content_range)
            if not match or int(match.group(1)) != self.offset:
                raise _Dropped(f"the server answered range {content_range!r} for bytes={self.offset}-")
            return None if match.group(3) == "*" else int(match.group(3))
        if self.offset:
            self._restart()  # a 200 answer: the server ignored the range, the whole file follows
        return None


def _attempts(transfer: _Transfer, url: str, retries: int, waits: Backoff,
              sleep: Callable[[float], None]) -> int:
    """Attempt ``transfer`` until it completes, waiting ``waits`` between failures; returns the retries made.
    RecordioPackError on an HTTP error that is not worth retrying, or after ``retries`` failures in a row."""
    failures = retried = 0
    while True:
        start = transfer.offset
        failure: BaseException | None = None
        try:
            transfer.attempt()
            return retried
        except urllib.error.HTTPError as error:
            if not _retryable_http(error.code) and error.code != 416:
                hint = " (the download link may have expired)" if error.code in (401, 403) else ""
                raise RecordioPackError(f"{url}: HTTP {error.code} {error.reason}{hint}") from None
            problem, failure = f"HTTP {error.code} {error.reason}", error
        except (urllib.error.URLError, http.client.HTTPException, OSError, _Dropped) as error:
            problem = str(getattr(error, "reason", None) or error) or type(error).__name__
        failures = 1 if transfer.offset > start else failures + 1
        if failures > retries:
            raise RecordioPackError(f"{url}: gave up after {retries} retries: {problem}")
        delay = waits.delay(failures, failure)
        retried += 1
        transfer.retrying(failures, delay, problem)
        sleep(delay)


def download(url: str, dest_dir: str | Path, *, checksums: Mapping[str, Checksums] = PUBLISHED,
             verify: bool = True, retries: int = 8, backoff: float = 1.0, max_backoff: float = 60.0,
             timeout: float = 60.0, overwrite: bool = False, progress: Progress | None = None,
             sleep: Callable[[float], None] = time.sleep, rand: Callable[[], float] = random.random,
             now: Callable[[], float] = time.time,
             disk_free: Callable[[Path], int] = lambda path: shutil.disk_usage(path).free) -> DownloadResult:
    """Download ``url`` into ``dest_dir`` under the URL's file name; resume a ``.part`` left by an earlier run.

    ``retries``: consecutive failed attempts allowed (an attempt that received data resets the count);
    waits ``backoff * 2**n`` seconds, at most ``max_backoff``, with jitter, or what a 429/503 answer's
    ``Retry-After`` asks (``Backoff``; ``sleep``, ``rand`` and ``now`` are injectable for tests).  ``timeout``:
    seconds without data before an attempt fails.  ``checksums``: file name -> published digests (injectable
    for tests).  ``verify=False`` skips the comparison (digests are still reported).  ``disk_free``: free bytes
    of a folder (injectable).
    An existing complete file is kept (and re-verified) unless ``overwrite``.
    """
    progress = progress or NullProgress()
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    name = _name_from_url(url)
    final, part = dest / name, dest / f"{name}.part"
    expected = checksums.get(name)
    if final.exists() and not overwrite:
        log.info("%s is already there; kept (pass overwrite to download it again)", final)
        return _existing(final, url, expected, verify, progress)
    transfer = _Transfer(url, part, progress, timeout, lambda needed: _check_space(dest, needed, disk_free))
    resumed_from = transfer.offset
    retried = _attempts(transfer, url, retries, Backoff(backoff, max_backoff, rand=rand, now=now), sleep)
    md5, sha256 = transfer.hashes.md5.hexdigest(), transfer.hashes.sha256.hexdigest()
    mismatch = _mismatch(expected, md5, sha256) if verify else None
    if mismatch:
        corrupt = dest / f"{name}.corrupt"
        os.replace(part, corrupt)
        raise RecordioPackError(f"{name}: checksum mismatch: {mismatch}; the data was moved to {corrupt}")
    os.replace(part, final)
    note = "" if expected or not verify else "no published checksum for this file name; not verified"
    return DownloadResult(name, str(final), url, transfer.offset, resumed_from, retried, md5, sha256,
                          bool(verify and expected), False, note)

"""``imagenet download`` against a small HTTP server on 127.0.0.1 that supports Range and can drop connections."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from recordio_pack.commands import imagenet as imagenet_command
from recordio_pack.errors import RecordioPackError
from recordio_pack.imagenet.download import (
    PUBLISHED, Backoff, Checksums, download, retry_after_seconds,
)
from recordio_pack.progress import Advanced, Progress, Retrying

PAYLOAD = bytes((index * 7919 + index // 251) % 256 for index in range(300_000))
NAME = "ILSVRC2012_fake.tar"


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=lambda: {NAME: PAYLOAD})
    drops: list[int] = field(default_factory=list)  # for the next GETs: send this many body bytes, then hang up
    honour_range: bool = True
    requests: list[str | None] = field(default_factory=list)  # Range header of each GET
    refusals: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # for the next GETs: status, headers


class _Handler(http.server.BaseHTTPRequestHandler):
    state: ServerState

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        data = self.state.files.get(self.path.lstrip("/"))
        header = self.headers.get("Range")
        self.state.requests.append(header)
        if data is None:
            self.send_error(404)
            return
        if self.state.refusals:
            self._refuse(*self.state.refusals.pop(0))
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", header or "")
        if match and self.state.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.state.drops:
            body = body[:self.state.drops.pop(0)]  # then the handler returns and the connection closes
        self.wfile.write(body)

    def _refuse(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": "0"}.items():
            self.send_header(key, value)
        self.end_headers()


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sums(data: bytes) -> dict[str, Checksums]:
    return {NAME: Checksums(hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())}


class _Recorder(Progress):
    def __init__(self) -> None:
        self.retries: list[str] = []
        self.received = 0

    def on_progress(self, event: Advanced) -> None:
        if isinstance(event, Retrying):
            self.retries.append(event.error)
        else:
            self.received += int(event.amount)


def test_dropped_connection_resumes_and_completes(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    state.drops = [120_000, 50_000]
    recorder = _Recorder()
    waits: list[float] = []
    result = download(f"{url}/{NAME}", tmp_path, checksums=_sums(PAYLOAD), progress=recorder, sleep=waits.append,
                      rand=lambda: 0.0)
    assert (tmp_path / NAME).read_bytes() == PAYLOAD
    assert result.verified and result.retries == 2 and result.bytes == len(PAYLOAD)
    assert state.requests == [None, "bytes=120000-", "bytes=170000-"]
    assert "connection closed after 120,000 of 300,000 bytes" in recorder.retries[0]
    assert waits == [1.0, 1.0]  # progress was made each time, so the backoff did not grow
    assert recorder.received == len(PAYLOAD)
    assert sorted(path.name for path in tmp_path.iterdir()) == [NAME]


def test_wrong_checksum_is_rejected(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, _ = server
    wrong = {NAME: Checksums(sha256="0" * 64)}
    with pytest.raises(RecordioPackError, match="checksum mismatch: SHA-256 is [0-9a-f]{64}, the published"):
        download(f"{url}/{NAME}", tmp_path, checksums=wrong, sleep=lambda _: None)
    assert not (tmp_path / NAME).exists() and not (tmp_path / f"{NAME}.part").exists()
    assert (tmp_path / f"{NAME}.corrupt").read_bytes() == PAYLOAD
    # --no-verify keeps it, still reporting the digests
    result = download(f"{url}/{NAME}", tmp_path, checksums=wrong, verify=False)
    assert not result.verified and result.sha256 == hashlib.sha256(PAYLOAD).hexdigest()


def test_part_left_by_an_earlier_run_is_resumed(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    (tmp_path / f"{NAME}.part").write_bytes(PAYLOAD[:100_000])
    result = download(f"{url}/{NAME}", tmp_path, checksums=_sums(PAYLOAD))
    assert result.resumed_from == 100_000 and result.verified and state.requests == ["bytes=100000-"]
    # a complete file is kept and re-verified without a request
    again = download(f"{url}/{NAME}", tmp_path, checksums=_sums(PAYLOAD))
    assert again.already_present and again.verified and len(state.requests) == 1


def test_server_ignoring_range_restarts_from_zero(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    state.honour_range = False
    (tmp_path / f"{NAME}.part").write_bytes(b"x" * 5000)  # stale bytes: must not stay in front
    result = download(f"{url}/{NAME}", tmp_path, checksums=_sums(PAYLOAD))
    assert result.verified and (tmp_path / NAME).read_bytes() == PAYLOAD


def test_complete_part_answered_416_is_finished(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, _ = server
    (tmp_path / f"{NAME}.part").write_bytes(PAYLOAD)
    result = download(f"{url}/{NAME}", tmp_path, checksums=_sums(PAYLOAD))
    assert result.verified and result.bytes == len(PAYLOAD)


def test_free_space_checked_before_writing(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(RecordioPackError, match="needs 300,000 more bytes"):
        download(f"{url}/{NAME}", tmp_path, checksums=_sums(PAYLOAD), disk_free=lambda path: 1000)
    part = tmp_path / f"{NAME}.part"
    assert not part.exists() or part.stat().st_size == 0


def test_gives_up_after_retries_without_progress(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    state.drops = [0, 0, 0, 0]
    waits: list[float] = []
    with pytest.raises(RecordioPackError, match="gave up after 2 retries"):
        download(f"{url}/{NAME}", tmp_path, retries=2, backoff=0.5, sleep=waits.append, rand=lambda: 0.0)
    assert waits == [0.5, 1.0]  # exponential backoff while nothing arrives


def test_backoff_has_jitter_from_the_injected_random_source(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    state.drops = [0, 0, 0]
    draws = iter([0.5, 0.999, 0.0])
    waits: list[float] = []
    result = download(f"{url}/{NAME}", tmp_path, checksums=_sums(PAYLOAD), backoff=2.0, sleep=waits.append,
                      rand=lambda: next(draws))
    assert result.verified and result.retries == 3
    assert waits == pytest.approx([2.0 * 0.75, 4.0 * 0.5005, 8.0])  # base * 2**n times (1 - rand / 2)


def test_backoff_stays_within_half_and_all_of_the_capped_delay() -> None:
    waits = Backoff(base=1.0, cap=10.0)
    for failures, full in [(1, 1.0), (3, 4.0), (5, 10.0), (30, 10.0)]:
        delays = [waits.delay(failures) for _ in range(200)]
        assert all(full / 2 < delay <= full for delay in delays) and len(set(delays)) > 1


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds_is_honoured(server: tuple[str, ServerState], tmp_path: Path, status: int) -> None:
    url, state = server
    state.refusals = [(status, {"Retry-After": "7"})]
    recorder = _Recorder()
    waits: list[float] = []
    result = download(f"{url}/{NAME}", tmp_path, checksums=_sums(PAYLOAD), progress=recorder, sleep=waits.append,
                      rand=lambda: pytest.fail("jitter drawn for a Retry-After wait"))
    assert result.verified and result.retries == 1 and waits == [7.0]
    assert recorder.retries == [f"HTTP {status} " + ("Too Many Requests" if status == 429 else "Service Unavailable")]


def test_retry_after_as_an_http_date_is_honoured(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    now = 1_700_000_000.0
    state.refusals = [(503, {"Retry-After": "Tue, 14 Nov 2023 22:33:20 GMT"})]  # now + 1,200 seconds
    waits: list[float] = []
    result = download(f"{url}/{NAME}", tmp_path, checksums=_sums(PAYLOAD), sleep=waits.append, now=lambda: now)
    assert result.verified and waits == [1200.0]


def test_retry_after_is_ignored_elsewhere_or_unreadable_and_capped(server: tuple[str, ServerState],
                                                                   tmp_path: Path) -> None:
    url, state = server
    state.refusals = [(500, {"Retry-After": "30"}), (429, {"Retry-After": "soon"}), (429, {}),
                      (503, {"Retry-After": "999999"})]
    waits: list[float] = []
    result = download(f"{url}/{NAME}", tmp_path, checksums=_sums(PAYLOAD), sleep=waits.append, rand=lambda: 0.0)
    assert result.verified and waits == [1.0, 2.0, 4.0, 3600.0]  # backoff three times, then the longest honoured


def test_retry_after_seconds_reads_both_forms() -> None:
    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    assert retry_after_seconds("120", now) == 120.0 and retry_after_seconds(" 0 ", now) == 0.0
    assert retry_after_seconds("Tue, 14 Nov 2023 22:14:20 GMT", now) == 60.0
    assert retry_after_seconds("Tuesday, 14-Nov-23 22:14:20 GMT", now) == 60.0  # RFC 850, still allowed
    assert retry_after_seconds("Mon, 13 Nov 2023 00:00:00 GMT", now) == 0.0  # already past
    for unreadable in (None, "", "-5", "1.5", "soon", "Tue, 99 Nov 2023 99:99:99 GMT"):
        assert retry_after_seconds(unreadable, now) is None, unreadable


def test_http_errors_are_not_retried(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    with pytest.raises(RecordioPackError, match="HTTP 404"):
        download(f"{url}/missing.tar", tmp_path, sleep=lambda _: pytest.fail("retried a 404"))
    assert len(state.requests) == 1


def test_cli_with_base_url(server: tuple[str, ServerState], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = server
    parser = argparse.ArgumentParser()
    imagenet_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["imagenet", "download", "--base-url", url, "--archives", NAME, "-o", str(tmp_path),
                              "--json"])
    assert args.run(args) == 0
    (result,) = json.loads(capsys.readouterr().out)["downloads"]
    assert not result["verified"] and "no published checksum" in result["note"]
    assert result["md5"] == hashlib.md5(PAYLOAD).hexdigest()


def test_published_table_has_the_official_archives() -> None:
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"):
        sums = PUBLISHED[name]
        assert sums.md5 and re.fullmatch(r"[0-9a-f]{32}", sums.md5)
        assert sums.sha256 and re.fullmatch(r"[0-9a-f]{64}", sums.sha256)

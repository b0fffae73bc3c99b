"""A small EC2 instance metadata service (IMDSv2 only) on 127.0.0.1, for tests and ``make demo``.

It speaks the token protocol the boot script uses: ``PUT /latest/api/token`` with the header
``X-aws-ec2-metadata-token-ttl-seconds`` (1-21600) returns a token; ``GET /latest/meta-data/...`` needs
that token in ``X-aws-ec2-metadata-token`` (401 without it, as on an instance with IMDSv1 disabled). It
serves ``instance-id``, ``placement/region`` and ``placement/availability-zone``. ``refuse_tokens`` answers
every token request with 403 (the metadata endpoint turned off); ``fail_first`` answers that many token
requests with 503 first, to exercise retries.

Run it: ``python tests/imds_stub.py --port 0 --instance-id i-... --region us-east-1 --az us-east-1a``
(``scripts/demo.sh`` does); it prints its URL on the first line of stdout and serves until interrupted. Tests
import it as ``imds_stub``, like the other helpers beside them; it is not part of the installed package.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Sequence

__all__ = ["Request", "ImdsStub", "main"]

TOKEN_PATH = "/latest/api/token"
META_PREFIX = "/latest/meta-data/"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TTL_SECONDS = 21600


@dataclass(frozen=True)
class Request:
    """One request the stub answered: method, path, whether it carried a valid token, and the status."""

    method: str
    path: str
    had_valid_token: bool
    status: int


@dataclass
class ImdsStub:
    """Serves metadata for one instance on ``host:port`` (port 0: a free one) from a background thread."""

    instance_id: str
    region: str
    availability_zone: str
    refuse_tokens: bool = False
    fail_first: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    _tokens: dict[str, float] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the value for RECORDIO_PACK_IMDS_ENDPOINT); valid after ``start``."""
        if self._server is None:
            raise RuntimeError("the metadata stub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def values(self) -> dict[str, str]:
        return {"instance-id": self.instance_id, "placement/region": self.region,
                "placement/availability-zone": self.availability_zone}

    def start(self) -> "ImdsStub":
        self._server = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="imds-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "ImdsStub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- protocol, called from the handler threads ---
    def issue_token(self, ttl_header: str | None) -> tuple[int, str]:
        with self._lock:
            if self.refuse_tokens:
                return 403, "Forbidden"
            if self.fail_first > 0:
                self.fail_first -= 1
                return 503, "Service Unavailable"
            try:
                ttl = int(ttl_header or "")
            except ValueError:
                return 400, "Missing or invalid TTL header"
            if not 1 <= ttl <= MAX_TTL_SECONDS:
                return 400, "TTL out of range"
            token = secrets.token_urlsafe(32)
            self._tokens[token] = time.monotonic() + ttl
            return 200, token

    def token_valid(self, token: str | None) -> bool:
        with self._lock:
            expiry = self._tokens.get(token or "")
            return expiry is not None and time.monotonic() < expiry

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


def _handler_for(stub: ImdsStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path != TOKEN_PATH:
                self._answer(404, "Not Found", valid=False)
            elif self.headers.get("X-Forwarded-For"):  # the real service refuses proxied token requests
                self._answer(403, "Forbidden", valid=False)
            else:
                status, body = stub.issue_token(self.headers.get(TTL_HEADER))
                self._answer(status, body, valid=False)

        def do_GET(self) -> None:  # noqa: N802
            valid = stub.token_valid(self.headers.get(TOKEN_HEADER))
            if not valid:
                self._answer(401, "Unauthorized", valid=False)
                return
            value = stub.values().get(self.path[len(META_PREFIX):]) if self.path.startswith(META_PREFIX) else None
            if value is None:
                self._answer(404, "Not Found", valid=True)
            else:
                self._answer(200, value, valid=True)

        def _answer(self, status: int, body: str, valid: bool) -> None:
            data = body.encode()
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            stub.record(Request(self.command, self.path, valid, status))

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/imds_stub.py",
                                     description="A local IMDSv2 stub for running the boot script off EC2.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one)")
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--az", required=True, help="availability zone, e.g. us-east-1a")
    parser.add_argument("--refuse-tokens", action="store_true", help="answer token requests with 403")
    parser.add_argument("--fail-first", type=int, default=0, help="answer the first N token requests with 503")
    args = parser.parse_args(argv)
    stub = ImdsStub(args.instance_id, args.region, args.az, refuse_tokens=args.refuse_tokens,
                    fail_first=args.fail_first, port=args.port).start()
    print(stub.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

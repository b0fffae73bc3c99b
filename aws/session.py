"""The one place boto3 sessions and clients are made, and AWS errors become one clear line.

Every command builds an ``AwsTarget`` from ``--profile/--region/--endpoint-url`` (the usual AWS_* environment
variables apply as boto3 reads them) and asks it for clients; tests pass a target pointing at moto.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from recordio_pack.errors import RecordioPackError

__all__ = ["AwsTarget", "AwsError", "aws_errors"]

# Standard retry mode with a generous budget: throttling is retried with backoff before it is an error.
_RETRIES = {"mode": "standard", "max_attempts": 10}


class AwsError(RecordioPackError):
    """An AWS call that failed, explained in one line. ``setting`` names the connection setting that is the
    likely fix (``region``, ``endpoint`` or ``concurrency``; None: none of them), for the CLI to name its flag."""

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class AwsTarget:
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    _session: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AwsTarget:
        return cls(getattr(args, "profile", None), getattr(args, "region", None),
                   getattr(args, "endpoint_url", None))

    def session(self) -> Any:
        if self._session is None:
            import boto3

            with aws_errors("starting an AWS session"):
                object.__setattr__(self, "_session", boto3.Session(profile_name=self.profile,
                                                                   region_name=self.region))
        return self._session

    def client(self, service: str, region: str | None = None, **config: Any) -> Any:
        from botocore.config import Config

        with aws_errors(f"creating the {service} client"):
            return self.session().client(
                service, region_name=region or self.region, endpoint_url=self.endpoint_url,
                config=Config(retries=_RETRIES, **config))

    @property
    def region_name(self) -> str | None:
        return self.region or self.session().region_name


def _setting(error: Exception) -> str | None:
    """The connection setting (region, endpoint, concurrency) most likely to fix ``error``, if one is."""
    from botocore import exceptions as bx

    if isinstance(error, bx.NoRegionError):
        return "region"
    if isinstance(error, bx.EndpointConnectionError):
        return "endpoint"
    if isinstance(error, bx.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in _THROTTLED:
            return "concurrency"
        if code.endswith(".NotFound") or code in _WRONG_REGION:
            return "region"
    return None


_THROTTLED = ("Throttling", "ThrottlingException", "RequestLimitExceeded", "SlowDown")
_WRONG_REGION = ("AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "PermanentRedirect")


def _explain(error: Exception, doing: str) -> str:
    from botocore import exceptions as bx

    if isinstance(error, bx.NoCredentialsError):
        return (f"{doing}: no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "or run on an instance with a role)")
    if isinstance(error, bx.ProfileNotFound):
        return f"{doing}: {error}"
    if isinstance(error, bx.NoRegionError):
        return f"{doing}: no AWS region given (set AWS_REGION, or a region in the profile)"
    if isinstance(error, bx.EndpointConnectionError):
        return f"{doing}: cannot reach {error.kwargs.get('endpoint_url', 'the endpoint')} (wrong region or endpoint URL?)"
    if isinstance(error, bx.ClientError):
        info = error.response.get("Error", {})
        code = info.get("Code", "Unknown")
        message = info.get("Message", "")
        operation = getattr(error, "operation_name", "?")
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "403", "Forbidden"):
            # EC2 appends a long encoded blob; keep the line readable and say how to decode it.
            message = re.sub(r"\s*Encoded authorization failure message: \S+",
                             " (details: aws sts decode-authorization-message)", message)
            return f"{doing}: access denied for {operation} ({message or code}); the IAM policies in aws/policies list what each role needs"
        if code in _THROTTLED:
            return f"{doing}: AWS kept throttling {operation} after retries ({code}); try again later, or with fewer parallel requests"
        if code in ("NoSuchBucket", "404", "NotFound") and operation in ("HeadBucket", "ListObjectsV2", "PutObject", "HeadObject", "CreateMultipartUpload", "GetObject"):
            return f"{doing}: {operation} failed: {code} {message}".rstrip()
        if code.endswith(".NotFound"):  # EC2 ids exist in one region only
            return f"{doing}: {operation} failed: {code}: {message} (is the region right?)"
        if code in _WRONG_REGION:
            return f"{doing}: wrong region for this resource ({code}: {message})"
        return f"{doing}: {operation} failed: {code}: {message}".rstrip(": ")
    if isinstance(error, bx.WaiterError):
        return f"{doing}: {error}"
    return f"{doing}: {type(error).__name__}: {error}"


@contextmanager
def aws_errors(doing: str) -> Iterator[None]:
    """Turn botocore/boto3 exceptions raised inside into ``AwsError`` with one explanatory line."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise AwsError(_explain(error, doing), _setting(error)) from error

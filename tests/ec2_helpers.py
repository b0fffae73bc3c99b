"""Helpers for the EC2 tests (snapshot, replicate, cleanup, policies): cheap boto3 sessions and stubbed targets."""

from __future__ import annotations

import os
from typing import Any, Iterator
from unittest import mock

import boto3
import botocore.session
from botocore.stub import Stubber
from moto import mock_aws

from recordio_pack.aws.session import AwsTarget

# botocore parses the (large) EC2 service model for every new session; sharing one loader parses it once.
_LOADER = botocore.session.get_session().get_component("data_loader")


def fast_session(region: str = "us-east-1") -> boto3.Session:
    """A fresh boto3 session (own event handlers) that reuses the already-parsed service models."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _LOADER)
    session = boto3.Session(botocore_session=core, region_name=region)
    _LOADER.search_paths[:] = list(dict.fromkeys(_LOADER.search_paths))  # boto3 appends its path each time
    return session


def moto_target(region: str = "us-east-1") -> Iterator[AwsTarget]:
    """Body of an ``aws`` fixture: an AwsTarget on moto in-process (without moto's ~1,300 default AMIs, which it
    would reload for every test; run_instances accepts any image id)."""
    with mock.patch.dict(os.environ, {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}), mock_aws():
        yield AwsTarget(region=region, _session=fast_session(region))


class StubTarget:
    """An AwsTarget look-alike handing out Stubber-wrapped clients: no request leaves the process."""

    def __init__(self, services: tuple[str, ...] = ("ec2",), region: str = "us-east-1") -> None:
        self.region_name = region
        session = fast_session(region)
        self.clients = {service: session.client(service, region_name=region) for service in services}
        self.stubs = {service: Stubber(client) for service, client in self.clients.items()}

    def client(self, service: str, region: str | None = None) -> Any:
        assert region in (None, self.region_name), f"unexpected client for region {region}"
        return self.clients[service]

    def __enter__(self) -> "StubTarget":
        for stubber in self.stubs.values():
            stubber.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        for stubber in self.stubs.values():
            stubber.deactivate()

    def assert_done(self) -> None:
        for stubber in self.stubs.values():
            stubber.assert_no_pending_responses()

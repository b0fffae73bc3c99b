"""Where a finished shard's files go: they stay in the output folder (``LocalFolder``), or they are uploaded to S3
and the local copy of the data file removed (``aws.s3_output.S3Output``), the manifest always last.

An output is a small picklable value: it travels with each shard task, so the shard's files are published where
they were written (a pool worker, a Ray task on another node, or this process for shards written from chunks).
Nothing here knows what a format or an executor is: files are manifest ``FileRecord``s in a folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from recordio_pack.digest import file_digests
from recordio_pack.manifest import FileRecord

__all__ = ["Output", "LocalFolder", "Presence", "local_copy_intact"]

Presence = Literal["here", "published", "missing"]  # in the local folder / already at the output / neither


class Output(Protocol):
    @property
    def remote(self) -> bool:
        """Whether files leave the local folder (then it only stages them)."""

    def describe(self) -> str: ...

    def prepare(self, out_dir: Path, name: str) -> None:
        """Before a pack: bring what the output already holds of NAME that a rerun needs into ``out_dir``
        (a finished dataset's manifest and small files), so that it is updated or refused as a local one is."""

    def presence(self, out_dir: Path, files: Sequence[FileRecord], verify: bool) -> Presence:
        """Whether a finished shard's files are in ``out_dir`` with their recorded size (and SHA-256 when
        ``verify``), already published, or neither (then the shard is packed again)."""

    def publish(self, out_dir: Path, files: Sequence[FileRecord]) -> None:
        """A finished shard's files, data file first, written and renamed in ``out_dir``: make them the output's."""

    def retract(self, names: Sequence[str]) -> None:
        """Remove published files (the manifest before an update, an older version's shards)."""

    def localize(self, out_dir: Path, files: Sequence[FileRecord]) -> None:
        """Make sure ``files`` are in ``out_dir`` as recorded (written on another machine, removed once published,
        or left there by an older version)."""

    def finish(self, out_dir: Path, files: Sequence[FileRecord], manifest: Path) -> None:
        """The dataset's own files (rejects, class map, list, indexes), then the manifest, last."""

    def published(self, out_dir: Path, files: Sequence[FileRecord]) -> bool:
        """Whether ``files`` are at the output as recorded (a finished dataset's own files and its manifest)."""

    def present(self, names: Sequence[str]) -> list[str]:
        """Those of ``names`` the output already holds (beside what ``out_dir`` holds)."""


def local_copy_intact(out_dir: Path, files: Sequence[FileRecord], verify: bool) -> bool:
    """Every file in ``out_dir`` with the recorded size and, when ``verify``, the recorded SHA-256."""
    for record in files:
        path = out_dir / record.name
        try:
            if path.stat().st_size != record.bytes:
                return False
        except OSError:
            return False
        if verify and file_digests(path).sha256 != record.sha256:
            return False
    return True


@dataclass(frozen=True)
class LocalFolder:
    """The output folder is the output: nothing moves."""

    remote: bool = False

    def describe(self) -> str:
        return "the output folder"

    def prepare(self, out_dir: Path, name: str) -> None:
        return None

    def presence(self, out_dir: Path, files: Sequence[FileRecord], verify: bool) -> Presence:
        return "here" if local_copy_intact(out_dir, files, verify) else "missing"

    def publish(self, out_dir: Path, files: Sequence[FileRecord]) -> None:
        return None

    def retract(self, names: Sequence[str]) -> None:
        return None

    def localize(self, out_dir: Path, files: Sequence[FileRecord]) -> None:
        return None

    def finish(self, out_dir: Path, files: Sequence[FileRecord], manifest: Path) -> None:
        return None

    def published(self, out_dir: Path, files: Sequence[FileRecord]) -> bool:
        return True

    def present(self, names: Sequence[str]) -> list[str]:
        return []

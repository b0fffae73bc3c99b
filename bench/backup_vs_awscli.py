"""Benchmark: ``recordio-pack backup`` and ``restore`` against ``aws s3 cp --recursive`` of the same files to
and from the same local S3 endpoint (a moto server this script starts on 127.0.0.1).

Backup: every tool uploads the same folder (a few big ``.rec`` shards, their ``.idx`` and some small files,
plus the manifest) to a fresh prefix of an emptied bucket. Restore: the folder is backed up once (untimed),
then every tool downloads that prefix into a fresh folder, and the result is compared with the source. Runs
rotate which tool goes first; the median of ``--runs`` wall times is reported as MB/s, with the ratio to the
AWS CLI. Ours does its full work: full-object CRC32 on every object, SHA-256 of every byte sent or received
checked against the manifest, the manifest last, restored files fsynced and renamed only once verified.
Times include each tool's start-up.

``--before DIR`` adds an earlier version of recordio-pack, installed into DIR (``pip install --no-deps
--target DIR ...``), as a third tool in the same runs, so a change is measured before and after on the
same machine at the same time.

    .venv/bin/python bench/backup_vs_awscli.py                # 4 x 64 MiB + 16 x 256 KiB, 3 runs
    .venv/bin/python bench/backup_vs_awscli.py --big-size 256MiB --runs 5 --json

Nothing leaves 127.0.0.1; the credentials are fake.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.metadata
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from recordio_pack.commands._common import parse_size
from recordio_pack.digest import file_digests
from recordio_pack.manifest import FileRecord, Manifest, ShardRecord, manifest_path

BUCKET = "bench-backup"


def make_dataset(directory: Path, big_files: int, big_size: int, small_files: int, small_size: int) -> int:
    """Random shards and small files with a manifest in ``directory``; returns the total bytes of the folder."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1234)
    shards, extras = [], []
    for index in range(big_files):
        rec = directory / f"bench-{index:05d}-of-{big_files:05d}.rec"
        with open(rec, "wb") as stream:
            for offset in range(0, big_size, 8 << 20):
                stream.write(os.urandom(min(8 << 20, big_size - offset)))
        idx = rec.with_suffix(".idx")
        idx.write_bytes(rng.randbytes(1024))
        shards.append(ShardRecord(index, 1, 0, FileRecord.of(rec.name, file_digests(rec)),
                                  FileRecord.of(idx.name, file_digests(idx))))
    for index in range(small_files):
        path = directory / f"bench-extra-{index:03d}.bin"
        path.write_bytes(rng.randbytes(small_size))
        extras.append(FileRecord.of(path.name, file_digests(path)))
    Manifest(name="bench", fingerprint="bench", options={}, key_convention="position", classes=None,
             label_convention="sorted", shards=shards, files=extras).save(manifest_path(directory, "bench"))
    return sum(path.stat().st_size for path in directory.iterdir())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            return process, url
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise SystemExit("moto server did not start")
            time.sleep(0.1)


def empty_bucket(url: str) -> None:
    """Reset moto (frees the previous run's objects) and create the bucket again."""
    import boto3

    urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset", method="POST"), timeout=30).read()
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=BUCKET)


def count_objects(url: str, prefix: str) -> int:
    import boto3

    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    return sum(len(page.get("Contents", [])) for page in
               client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"))


def tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found next to {sys.executable} or on PATH")
    return found


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed ({completed.returncode}):\n{completed.stderr[-2000:]}")
    return seconds


OURS, BEFORE, AWS = "recordio-pack", "recordio-pack (before)", "aws s3 cp"
# how each tool moves bytes, for RESULTS
CLIENTS = {OURS: "recordio-pack's own uploader and ranged-GET downloader on botocore (no s3transfer, no CRT)",
           BEFORE: "the earlier recordio-pack given with --before",
           AWS: "AWS CLI v1 (awscli on PyPI): the classic s3transfer client, no CRT"}


def before_command(site: str) -> list[str]:
    """Run the recordio-pack installed in ``site``, not the editable install of this checkout."""
    program = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
               "(getattr(f, '__module__', '') or type(f).__module__)]; "
               f"sys.path.insert(0, {site!r}); sys.argv[0] = 'recordio-pack'; "
               "from recordio_pack.cli import main; sys.exit(main())")
    return [sys.executable, "-c", program]


def versions() -> dict[str, str]:
    found = {}
    for name in ("recordio-pack", "boto3", "botocore", "s3transfer", "awscli", "moto", "awscrt"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def same_folder(source: Path, copy: Path) -> bool:
    names = sorted(path.name for path in source.iterdir())
    return (sorted(path.name for path in copy.iterdir()) == names
            and all(filecmp.cmp(source / name, copy / name, shallow=False) for name in names))


def timed_runs(args: argparse.Namespace, commands: dict[str, Any], prepare: Any, check: Any,
               env: dict[str, str]) -> dict[str, list[float]]:
    """``--runs`` rounds of every command, the first one rotating; ``prepare(name, run)`` before each and
    ``check(name, run)`` after (untimed)."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for run_index in range(args.runs):
        shift = run_index % len(names)
        for name in names[shift:] + names[:shift]:
            command = prepare(name, run_index)
            times[name].append(timed(commands[name](*command), env))
            check(name, run_index)
    return times


def summary(times: dict[str, list[float]], total: int) -> dict[str, Any]:
    tools = {}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        tools[name] = {"seconds": [round(s, 3) for s in seconds], "median_seconds": round(median, 3),
                       "mb_per_s": round(total / median / 1e6, 2)}
    ratios = {name: round(tools[name]["mb_per_s"] / tools[AWS]["mb_per_s"], 3) for name in tools if name != AWS}
    return {"tools": tools, "ratio_to_aws_cli": ratios}


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    data = workdir / "dataset"
    total = make_dataset(data, args.big_files, parse_size(args.big_size), args.small_files, parse_size(args.small_size))
    files = sum(1 for _ in data.iterdir())
    aws_config = workdir / "aws-config"
    aws_config.write_text(f"[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = {args.concurrency}\n"
                          "  multipart_threshold = 8MB\n  multipart_chunksize = 8MB\n")
    # fake credentials for this process and the tools: nothing here may ever sign with real ones
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(aws_config),
                      AWS_SHARED_CREDENTIALS_FILE=str(workdir / "no-credentials"))
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    env = dict(os.environ)
    moto, url = start_moto(env)
    ours = {OURS: [tool("recordio-pack")]} | ({BEFORE: before_command(args.before)} if args.before else {})
    ours_flags = ["--endpoint-url", url, "--concurrency", str(args.concurrency), "-q"]
    aws = [tool("aws"), "s3", "cp", "--recursive", "--only-show-errors", "--no-progress", "--endpoint-url", url]
    backups = {name: (lambda prefix, base=base: [*base, "backup", str(data), f"s3://{BUCKET}/{prefix}", *ours_flags,
                                                 *args.backup_arg]) for name, base in ours.items()}
    backups[AWS] = lambda prefix: [*aws, str(data), f"s3://{BUCKET}/{prefix}"]
    restores = {name: (lambda into, base=base: [*base, "restore", f"s3://{BUCKET}/source", str(into), *ours_flags])
                for name, base in ours.items()}
    restores[AWS] = lambda into: [*aws, f"s3://{BUCKET}/source", str(into)]

    def prefix_of(name: str, run_index: int) -> str:
        return f"{name.split()[0]}-{'before-' if name == BEFORE else ''}{run_index}"

    def fresh_bucket(name: str, run_index: int) -> tuple[str]:
        empty_bucket(url)
        return (prefix_of(name, run_index),)

    def uploaded_all(name: str, run_index: int) -> None:
        if count_objects(url, prefix_of(name, run_index)) != files:
            raise SystemExit(f"{name} uploaded {count_objects(url, prefix_of(name, run_index))} objects, "
                             f"expected {files}")

    copy = workdir / "restored"

    def fresh_folder(name: str, run_index: int) -> tuple[Path]:
        shutil.rmtree(copy, ignore_errors=True)
        return (copy,)

    def restored_all(name: str, run_index: int) -> None:
        if not same_folder(data, copy):
            raise SystemExit(f"{name} restored a folder that differs from the source")

    try:
        backup_times = timed_runs(args, backups, fresh_bucket, uploaded_all, env)
        empty_bucket(url)
        timed(backups[OURS]("source"), env)  # untimed: what every tool restores
        restore_times = timed_runs(args, restores, fresh_folder, restored_all, env)
    finally:
        moto.terminate()
        moto.wait(10)
        shutil.rmtree(copy, ignore_errors=True)
    return {"bytes": total, "files": files, "runs": args.runs, "concurrency": args.concurrency,
            "backup_args": args.backup_arg, "endpoint": "moto server on 127.0.0.1", "versions": versions(),
            "clients": {name: CLIENTS[name] for name in backup_times},
            "backup": summary(backup_times, total), "restore": summary(restore_times, total)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big-files", type=int, default=4, help="number of big .rec shards (4)")
    parser.add_argument("--big-size", default="64MiB", help="size of each shard (64MiB)")
    parser.add_argument("--small-files", type=int, default=16, help="number of small files (16)")
    parser.add_argument("--small-size", default="256KiB", help="size of each small file (256KiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool; the median is reported (3)")
    parser.add_argument("--concurrency", type=int, default=10, help="parallel requests for both tools (10)")
    parser.add_argument("--backup-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for recordio-pack backup (repeatable), "
                             "e.g. --backup-arg=--no-verify-local")
    parser.add_argument("--before", metavar="DIR",
                        help="also run the recordio-pack installed in DIR (pip install --no-deps --target DIR), "
                             "an earlier version to compare with")
    parser.add_argument("--workdir", help="where the dataset is written (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.workdir:
        result = run(args, Path(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-backup-") as workdir:
            result = run(args, Path(workdir))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['files']} files, {result['bytes'] / 1e6:.1f} MB, {result['runs']} runs, "
              f"concurrency {result['concurrency']}, {result['endpoint']}"
              + (f", backup {' '.join(args.backup_arg)}" if args.backup_arg else ""))
        for phase in ("backup", "restore"):
            print(f" {phase}:")
            for name, numbers in result[phase]["tools"].items():
                print(f"  {name:23} median {numbers['median_seconds']:7.2f} s  {numbers['mb_per_s']:8.1f} MB/s  "
                      f"(runs: {', '.join(f'{s:.2f}' for s in numbers['seconds'])} s)")
            for name, ratio in result[phase]["ratio_to_aws_cli"].items():
                print(f"  ratio {name} / aws s3 cp: {ratio:.2f}x")
        print(" versions: " + ", ".join(f"{name} {version}" for name, version in result["versions"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

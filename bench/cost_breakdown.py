#!/usr/bin/env python3
"""Where the time of one re-encoded image goes: the codec limit against our pipeline, one core, same images.

These stages are timed in this process with OpenCV single-threaded, at the short side and quality of
``pack_vs_im2rec.py``'s 256/q95 case:

- decode alone: full ``imdecode`` of in-memory bytes, the floor for any tool that decodes every pixel;
- decode + resize: the same and the bilinear resize, no encode (so encode = codec limit - this);
- codec limit: full decode + bilinear resize + JPEG encode of in-memory bytes (the loop that bench's codec
  limit times; there "90% of the codec limit" is measured against --workers of these loops running at once,
  which on a shared VM is slower per loop than one alone);
- ours without I/O: ``prepare_image`` (header probe, DCT-scaled decode where it applies, the anti-aliasing
  low-pass, bilinear resize, encode);
- ours, per image in a worker: ``shard.prepare_entry`` (read the file, ``prepare_image``, IRHeader, RecordIO
  framing, the record's CRC32): all that a worker does for an image that shares its shard with other workers;
- ours, whole shard loop: ``pack_shard`` on the same images as files (read, prepare, IRHeader, RecordIO
  framing, SHA-256 + CRC32 of the output, buffered writes, fsync, rename). Each batch is one shard: per-shard
  costs (open, fsync, rename) weigh about 20x more than in a real job's 256 MiB shards.

The images are split into batches of ``--batch``; the stages take turns on each batch, ``--rounds`` times,
and each stage's figure is the sum over batches of its fastest round: a shared machine's bursts of
contention (which move single runs by 10-30% here) fall out. Also printed: the mean PSNR of the codec limit's
and our output against full decode + INTER_AREA to the same size (the benchmark's reference).

Usage: python bench/cost_breakdown.py [--images DIR] [--count 1000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "ref" / "imagenet-samples"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default=str(SAMPLES), help="folder of JPEGs (default: the ImageNet samples)")
    parser.add_argument("--count", type=int, default=1000, help="images used, from the sorted folder")
    parser.add_argument("--batch", type=int, default=100, help="images per timed batch (and per shard)")
    parser.add_argument("--rounds", type=int, default=5, help="times each stage runs each batch")
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--quality", type=int, default=95)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import cv2
    import numpy as np

    from recordio_pack.imaging import ImageOptions, prepare_image
    from recordio_pack.options import PackOptions
    from recordio_pack.shard import ShardTask, pack_shard, prepare_entry
    from recordio_pack.sources import Entry, FolderSource

    cv2.setNumThreads(1)
    folder = Path(args.images)
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in (".jpg", ".jpeg"))[:args.count]
    if not files:
        raise SystemExit(f"{folder}: no JPEG files")
    blobs = [path.read_bytes() for path in files]
    size, quality = args.resize, args.quality

    def codec_limit(blob: bytes) -> bytes:
        image = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
        height, width = image.shape[:2]
        target = (size, height * size // width) if width <= height else (width * size // height, size)
        resized = cv2.resize(image, target, interpolation=cv2.INTER_LINEAR)
        return cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()

    image_options = ImageOptions(resize=size, upscale=True, quality=quality, reencode="always")
    pack_options = PackOptions(resize=size, upscale=True, quality=quality, reencode="always", workers=1)

    def ours(blob: bytes) -> bytes:
        return prepare_image(blob, image_options)[0]

    batches = [range(start, min(start + args.batch, len(files))) for start in range(0, len(files), args.batch)]
    out = Path(tempfile.mkdtemp(prefix="cost-breakdown-"))
    source = FolderSource(str(folder))

    def shard_loop(batch: range) -> None:
        entries = [Entry(number, (0.0,), files[number].name) for number in batch]
        pack_shard(ShardTask(batch.start // args.batch, len(batches), "data", str(out), entries, source,
                             pack_options))

    def decode(blob: bytes) -> Any:
        return cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)

    def decode_resize(blob: bytes) -> Any:
        image = decode(blob)
        height, width = image.shape[:2]
        target = (size, height * size // width) if width <= height else (width * size // height, size)
        return cv2.resize(image, target, interpolation=cv2.INTER_LINEAR)

    entries = [Entry(number, (0.0,), path.name) for number, path in enumerate(files)]
    stages: dict[str, Callable[[range], Any]] = {
        "decode alone": lambda batch: [decode(blobs[number]) for number in batch],
        "decode + resize": lambda batch: [decode_resize(blobs[number]) for number in batch],
        "codec limit": lambda batch: [codec_limit(blobs[number]) for number in batch],
        "ours without I/O": lambda batch: [ours(blobs[number]) for number in batch],
        "ours, per image in a worker": lambda batch: [prepare_entry(entries[number], source, pack_options)
                                                      for number in batch],
        "ours, whole shard loop": shard_loop,
    }
    fastest = {name: [math.inf] * len(batches) for name in stages}
    try:
        for _ in range(args.rounds):
            for position, batch in enumerate(batches):
                for name, stage in stages.items():
                    started = time.process_time()  # this process only: user + system CPU
                    stage(batch)
                    fastest[name][position] = min(fastest[name][position], time.process_time() - started)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    ms = {name: 1000 * sum(times) / len(files) for name, times in fastest.items()}
    result = {"images": len(files), "opencv": cv2.__version__, "ms_per_image": ms,
              "psnr_db": {"codec limit": mean_psnr(blobs, codec_limit), "ours": mean_psnr(blobs, ours)},
              "ceiling_percent": 100 * ms["codec limit"] / ms["ours, whole shard loop"]}
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


def mean_psnr(blobs: list[bytes], convert: Callable[[bytes], bytes]) -> float:
    """Mean PSNR (dB) of ``convert``'s output against full decode + INTER_AREA to the same size."""
    import cv2
    import numpy as np

    scores = []
    for blob in blobs:
        full = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
        output = cv2.imdecode(np.frombuffer(convert(blob), np.uint8), cv2.IMREAD_COLOR)
        reference = cv2.resize(full, (output.shape[1], output.shape[0]), interpolation=cv2.INTER_AREA)
        error = float(np.mean((output.astype(np.float64) - reference.astype(np.float64)) ** 2))
        scores.append(99.0 if error == 0 else 10 * math.log10(255.0**2 / error))
    return statistics.fmean(scores)


def render(result: dict[str, Any]) -> str:
    limit = result["ms_per_image"]["codec limit"]
    lines = [f"{result['images']} images, one core, OpenCV {result['opencv']}; CPU ms per image, fastest round "
             "per batch", "", "| stage | ms/image | over the codec limit, % |", "|---|---|---|"]
    for name, value in result["ms_per_image"].items():
        lines.append(f"| {name} | {value:.3f} | {100 * (value / limit - 1):+.1f} |")
    lines += ["", f"ceiling on packing efficiency (codec limit / whole shard loop, perfect scaling over cores): "
              f"{result['ceiling_percent']:.1f}%",
              f"mean PSNR against full decode + area resize: codec limit {result['psnr_db']['codec limit']:.2f} dB, "
              f"ours {result['psnr_db']['ours']:.2f} dB"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

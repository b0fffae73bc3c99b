#!/usr/bin/env python3
"""Reading packed shards for training: mxnet's MXIndexedRecordIO, DALI's CPU reader and ours, on the same shards.

The corpus is the one ``pack_vs_im2rec.py`` builds (``--images`` real photos, hard links of
``../shared/ref/imagenet-samples``), packed once by ``recordio-pack pack --resize 256`` into ``--shards`` shards
(with the ``NAME.all.idx`` pack writes).  All shards are read once before the timed runs, so every reader reads
from the page cache.

1. Payload reads, no decode: records/s and MB/s (MB of record payloads, 10**6 bytes, the same bytes for every
   reader), in order ("sequential") and in a random order of all keys ("random"), each reader in its own
   interpreter (mxnet 1.9.1 in ``--mxnet-python``; DALI in ``--train-python``; ours in this one), after one
   untimed pass over every record (as from the second epoch on: pages mapped, caches warm).  Ours also reads
   each shard front to back without its index (`iter_payloads`).  DALI's reader has no random access: its
   "random" row is ``random_shuffle=True`` (a shuffle buffer of ``initial_fill`` records over a sequential read).
2. A torch DataLoader (``--loader-workers`` workers, batches of 64, shuffled): decode to RGB + random-resized-crop
   to 224 (torchvision's parameters, in OpenCV), images/s, from our shards (`RecordIODataset`) against a
   file-per-image dataset (ImageFolder's logic) over the same image bytes written out as files.

Each measurement runs ``--repeats`` times, the readers alternating; the table shows the median and the range.

Usage: python bench/read_speed.py --mxnet-python .venv-mxnet/bin/python --train-python .venv-train/bin/python
       [--images 10000] [--shards 8] [--repeats 3] [--out bench/out]
Results: a printed table and OUT/read-IMAGES/results.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recordio_pack.manifest import Manifest  # noqa: E402
from recordio_pack.reader import IndexedRecordIO  # noqa: E402


def _pack_bench() -> Any:
    """pack_vs_im2rec.py as a module, for its corpus (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("pack_vs_im2rec", Path(__file__).with_name("pack_vs_im2rec.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pack_vs_im2rec"] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------ the readers, one script each
# Each prints one JSON object: {"sequential": seconds, "random": seconds, ...}; the records and bytes are known here.

OURS = r"""
import json, sys, time
import numpy as np
from recordio_pack.reader import IndexedRecordIO, iter_payloads
reader = IndexedRecordIO(sys.argv[1])
keys = reader.keys()
order = np.random.default_rng(0).permutation(len(keys)).tolist()
for key in keys:  # untimed: every page mapped into this process once, as after the first epoch
    reader.read(key)
result = {}
start = time.perf_counter()
for key in keys:
    reader.read(key)
result["sequential"] = time.perf_counter() - start
start = time.perf_counter()
for position in order:
    reader.read(keys[position])
result["random"] = time.perf_counter() - start
start = time.perf_counter()
for rec in reader.recs:
    for payload in iter_payloads(rec):
        pass
result["sequential, no index"] = time.perf_counter() - start
print(json.dumps(result))
"""

MXNET = r"""
import json, sys, time
import numpy as np
import mxnet as mx
shards = json.loads(sys.argv[1])
readers = [mx.recordio.MXIndexedRecordIO(idx, rec, "r") for rec, idx in shards]
pairs = [(reader, key) for reader in readers for key in reader.keys]
order = np.random.default_rng(0).permutation(len(pairs)).tolist()
for reader, key in pairs:  # untimed: the first pass, as for the others
    reader.read_idx(key)
result = {}
start = time.perf_counter()
for reader, key in pairs:
    reader.read_idx(key)
result["sequential"] = time.perf_counter() - start
start = time.perf_counter()
for position in order:
    reader, key = pairs[position]
    reader.read_idx(key)
result["random"] = time.perf_counter() - start
print(json.dumps(result))
"""

DALI = r"""
import json, math, sys, time
from nvidia.dali import fn, pipeline_def
recs, index, batch = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])

@pipeline_def(batch_size=batch, num_threads=1, device_id=None, prefetch_queue_depth=2)
def payloads(shuffle):
    data, _ = fn.readers.mxnet(path=recs, index_path=[index], random_shuffle=shuffle, initial_fill=1024,
                               name="reader")
    return data

result = {}
for name, shuffle in (("sequential", False), ("random", True)):
    pipe = payloads(shuffle=shuffle)
    pipe.build()
    size = pipe.reader_meta("reader")["epoch_size"]
    for _ in range(math.ceil(size / batch)):  # untimed: one epoch first, as for the others
        pipe.run()
    start = time.perf_counter()
    for _ in range(math.ceil(size / batch)):
        pipe.run()
    result[name] = time.perf_counter() - start
    del pipe
print(json.dumps(result))
"""

LOADER = r"""
import json, math, sys, time
from pathlib import Path
import cv2, numpy as np, torch
from torch.utils.data import DataLoader, Dataset
from recordio_pack.reader import decode_rgb
from recordio_pack.torch import RecordIODataset

mode, path, workers, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def random_resized_crop(image, size=224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    # torchvision's RandomResizedCrop parameters: 10 tries at a random area and aspect, else the centre
    rng = np.random.default_rng()
    height, width = image.shape[:2]
    for _ in range(10):
        area = height * width * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            break
    else:
        w, h = min(width, height), min(width, height)
        x, y = (width - w) // 2, (height - h) // 2
    crop = cv2.resize(image[y:y + h, x:x + w], (size, size), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(crop).permute(2, 0, 1)

class ImageFiles(Dataset):
    # torchvision ImageFolder's logic: one sorted folder per class, label = its position, files sorted
    def __init__(self, root, transform):
        classes = sorted(entry.name for entry in Path(root).iterdir() if entry.is_dir())
        self.samples = [(path, label) for label, name in enumerate(classes)
                        for path in sorted((Path(root) / name).iterdir())]
        self.transform = transform
    def __len__(self):
        return len(self.samples)
    def __getitem__(self, position):
        path, label = self.samples[position]
        return self.transform(decode_rgb(path.read_bytes())), label

def one_thread(_):
    cv2.setNumThreads(1)

dataset = RecordIODataset(path, transform=random_resized_crop) if mode == "shards" else \
    ImageFiles(path, random_resized_crop)
loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, worker_init_fn=one_thread)
start = time.perf_counter()
images = sum(len(labels) for _, labels in loader)
print(json.dumps({"images": images, "seconds": time.perf_counter() - start}))
"""


def run_script(python: str, script: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    completed = subprocess.run([python, "-c", script, *args], capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        raise SystemExit(f"{python}: the benchmark script failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def version_of(python: str, module: str) -> str:
    code = f"import {module} as m; print(m.__version__)"
    completed = subprocess.run([python, "-c", code], capture_output=True, text=True,
                               env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return completed.stdout.strip() or "?"


# ------------------------------------------------------------------------------------ data


def prepare(args: argparse.Namespace) -> tuple[Path, Path]:
    """The packed shards (``work/rec``, with NAME.all.idx) and the same images as files (``work/files``)."""
    bench = _pack_bench()
    out = Path(args.out)
    source = argparse.Namespace(samples=args.samples, source="auto", fake_classes=100, fake_per_class=10)
    _, sources = bench.source_images(source, out)
    corpus = out / f"corpus-{args.images}"
    bench.build_corpus(sources, args.images, corpus)
    work = out / f"read-{args.images}"
    rec_dir, files = work / "rec", work / "files"
    identity = f"{args.images} {args.shards} {args.resize}\n"
    marker = work / ".bench-complete"
    if marker.exists() and marker.read_text() == identity:
        return rec_dir, files
    subprocess.run([*bench.recordio_pack_command(), "pack", str(corpus), str(rec_dir), "--name", "data", "--resize",
                    str(args.resize), "--num-shards", str(args.shards), "--overwrite", "-q"], check=True,
                   stdout=subprocess.DEVNULL)
    reader = IndexedRecordIO(rec_dir / "data.manifest.json")
    for key in reader.keys():  # the same image bytes as files, one folder per class
        header, image = reader.unpack(key)
        folder = files / f"{int(header.label):04d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{key:06d}.jpg").write_bytes(image)
    marker.write_text(identity)
    return rec_dir, files


def warm(rec_dir: Path, files: Path) -> tuple[int, int]:
    """Read every shard and file once (into the page cache); return (records, payload bytes)."""
    for path in sorted(rec_dir.iterdir()):
        path.read_bytes()
    for path in files.rglob("*.jpg"):
        path.read_bytes()
    reader = IndexedRecordIO(rec_dir / "data.manifest.json")
    return len(reader), sum(len(payload) for payload in reader)


# ------------------------------------------------------------------------------------ the run


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rec_dir, files = prepare(args)
    records, payload_bytes = warm(rec_dir, files)
    manifest = Manifest.load(rec_dir / "data.manifest.json")
    shards = [[str(rec_dir / shard.rec.name), str(rec_dir / shard.idx.name)] for shard in manifest.shards]
    recs = json.dumps([rec for rec, _ in shards])
    readers = {
        "mxnet 1.9.1 MXIndexedRecordIO": lambda: run_script(args.mxnet_python, MXNET, json.dumps(shards)),
        "DALI fn.readers.mxnet (CPU)": lambda: run_script(args.train_python, DALI, recs,
                                                          str(rec_dir / "data.all.idx"), str(args.dali_batch)),
        "ours: reader.IndexedRecordIO": lambda: run_script(sys.executable, OURS, str(rec_dir / "data.manifest.json")),
    }
    reads: dict[str, dict[str, list[float]]] = {name: {} for name in readers}
    loader: dict[str, list[float]] = {"our shards (RecordIODataset)": [], "files (ImageFolder logic)": []}
    loader_args = {"our shards (RecordIODataset)": ("shards", str(rec_dir / "data.manifest.json")),
                   "files (ImageFolder logic)": ("files", str(files))}
    for repeat in range(args.repeats):
        names = list(readers) if repeat % 2 == 0 else list(reversed(readers))
        for name in names:
            for mode, seconds in readers[name]().items():
                reads[name].setdefault(mode, []).append(seconds)
        for name in (list(loader) if repeat % 2 == 0 else list(reversed(loader))):
            result = run_script(args.train_python, LOADER, *loader_args[name], str(args.loader_workers),
                                str(args.batch))
            if result["images"] != records:
                raise SystemExit(f"{name}: the DataLoader gave {result['images']} images of {records}")
            loader[name].append(result["images"] / result["seconds"])
        print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    return {"records": records, "payload_bytes": payload_bytes, "reads": reads, "loader": loader}


def table(results: dict[str, Any]) -> str:
    records, payload_bytes = results["records"], results["payload_bytes"]
    lines = [f"{records} records, {payload_bytes / 1e6:.1f} MB of payloads, {results['shards']} shards; "
             f"medians of {results['repeats']} (range)", "",
             "| reader | order | records/s | MB/s | vs mxnet |", "|---|---|---:|---:|---:|"]
    mxnet = results["reads"].get("mxnet 1.9.1 MXIndexedRecordIO", {})
    for name, modes in results["reads"].items():
        for mode, seconds in modes.items():
            rate = records / statistics.median(seconds)
            low, high = records / max(seconds), records / min(seconds)
            base = mxnet.get(mode if mode in mxnet else "sequential")
            versus = f"{statistics.median(base) / statistics.median(seconds):.2f}x" if base else ""
            label = "random (shuffle buffer)" if mode == "random" and name.startswith("DALI") else mode
            lines.append(f"| {name} | {label} | {rate:,.0f} ({low:,.0f}-{high:,.0f}) | "
                         f"{rate * payload_bytes / records / 1e6:,.0f} | {versus} |")
    lines += ["", f"| DataLoader ({results['loader_workers']} workers, decode + random-resized-crop 224) | "
              "images/s |", "|---|---:|"]
    for name, rates in results["loader"].items():
        lines.append(f"| {name} | {statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="DataLoader batch size")
    parser.add_argument("--dali-batch", type=int, default=256, help="DALI reader batch size")
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--samples", default=str(REPO.parent / "shared" / "ref" / "imagenet-samples"))
    parser.add_argument("--out", default=str(REPO / "bench" / "out"))
    parser.add_argument("--mxnet-python", default=str(REPO / ".venv-mxnet" / "bin" / "python"))
    parser.add_argument("--train-python", default=str(REPO / ".venv-train" / "bin" / "python"))
    args = parser.parse_args(argv)
    started = time.time()
    results = measure(args)
    results.update(
        shards=args.shards, repeats=args.repeats, loader_workers=args.loader_workers, images=args.images,
        resize=args.resize, seconds=round(time.time() - started, 1), cpus=os.cpu_count(),
        loadavg=os.getloadavg(), python=platform.python_version(),
        versions={"mxnet": version_of(args.mxnet_python, "mxnet"),
                  "dali": version_of(args.train_python, "nvidia.dali"),
                  "torch": version_of(args.train_python, "torch"),
                  "opencv (train env)": version_of(args.train_python, "cv2")})
    text = table(results)
    print(text)
    out = Path(args.out) / f"read-{args.images}" / "results.json"
    out.write_text(json.dumps({**results, "table": text}, indent=1) + "\n")
    print(f"\nversions: {results['versions']}; load average {results['loadavg']}; {results['seconds']} s; "
          f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Packing to TFRecord against packing to RecordIO, and against ``imagenet_to_gcs.py``'s conversion loop.

The same corpus as ``bench/pack_vs_im2rec.py`` (its helpers build it: the photos of ``../shared/ref/imagenet-samples``
repeated as hard links, else ``recordio-pack fake``), one ``.lst`` for every row, the same ``--workers`` processes
and ``--num-shards``.  Rows, run alternately ``--repeats`` times (medians shown):

- ``recordio 256``: ``pack --resize 256`` (the defaults: ``--reencode auto --validate full``);
- ``tfrecord 256``: the same with ``--format tfrecord`` (tpu layout): the issue's "within 5%" pair;
- ``tfrecord 256 always``: ``--format tfrecord --resize 256 --reencode always --validate header``, like for like
  with the TensorFlow loop, which re-encodes every image and validates nothing but the decode;
- ``tf loop 256``: ``bench/tf_convert.py`` in the TensorFlow environment: decode_jpeg, resize (bilinear,
  antialiased) when the shorter side is above 256, encode_jpeg q95, imagenet_to_gcs.py's Example, TFRecordWriter;
- ``tfrecord as-is`` / ``tf loop as-is``: no resize; ours keeps valid JPEGs (decoding them to validate), the loop
  stores the file's bytes after decoding it for height and width, as imagenet_to_gcs.py does.

Wall time is the whole command (start-up and imports included: a user pays them); for the TensorFlow loop the
loop alone (from when its processes have imported TensorFlow) is shown too.  CPU is user + system of the process
tree.

Usage: python bench/tfrecord_vs_recordio.py [--images 2000] [--repeats 3] [--workers 2] [--tf-python PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pack_vs_im2rec import (  # noqa: E402  (the corpus and measuring helpers of the im2rec bench)
    REPO,
    SAMPLES,
    become_subreaper,
    build_corpus,
    recordio_pack_command,
    run_measured,
    source_images,
    warm_cache,
    write_list,
)

ROWS = ("recordio 256", "tfrecord 256", "tfrecord 256 always", "tf loop 256", "tfrecord as-is", "tf loop as-is")
OURS = {"recordio 256": ["--resize", "256"],
        "tfrecord 256": ["--format", "tfrecord", "--resize", "256"],
        "tfrecord 256 always": ["--format", "tfrecord", "--resize", "256", "--reencode", "always",
                                "--validate", "header"],
        "tfrecord as-is": ["--format", "tfrecord"]}
TF_RESIZE = {"tf loop 256": 256, "tf loop as-is": 0}


def count_records(folder: Path) -> int:
    from recordio_pack import tfrecord
    from recordio_pack.format import Frame, scan_frames
    from recordio_pack.recordio import mapped

    total = 0
    for path in folder.iterdir():
        if path.is_file() and (path.suffix == ".rec" or path.name.startswith("train-")):
            scan = scan_frames if path.suffix == ".rec" else tfrecord.scan_frames
            with mapped(path) as data:
                total += sum(isinstance(item, Frame) for item in scan(data))
    return total


def run_row(row: str, lst: Path, corpus: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    log = work.parent / f"{work.name}.log"
    if row in OURS:
        command = [*recordio_pack_command(), "pack", str(lst), str(work), "--root", str(corpus), "--name", "train",
                   "--workers", str(args.workers), "--num-shards", str(args.shards), "-q", *OURS[row]]
        run = run_measured(command, log)
        loop = None
    else:
        command = [args.tf_python, str(Path(__file__).with_name("tf_convert.py")), str(lst), str(corpus),
                   str(lst.with_name("synsets.txt")), str(work), "--workers", str(args.workers), "--shards",
                   str(args.shards), "--resize", str(TF_RESIZE[row])]
        run = run_measured(command, log, env={"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
        loop = json.loads(log.read_text().strip().splitlines()[-1])
    records = count_records(work)
    if records != args.images:
        raise SystemExit(f"{row}: {records} records written, {args.images} expected (see {log})")
    return {"wall_s": run.wall_s, "cpu_s": run.cpu_s, "loop_s": loop["loop_s"] if loop else None,
            "import_s": loop["import_s"] if loop else None,
            "bytes": sum(path.stat().st_size for path in work.iterdir() if path.is_file())}


def versions(tf_python: str) -> dict[str, str]:
    from recordio_pack import __version__
    from recordio_pack.options import opencv_version

    tf = subprocess.run([tf_python, "-c", "import importlib.metadata as m; print(m.version('tensorflow-cpu'), "
                         "m.version('tensorflow-datasets'), m.version('numpy'))"], capture_output=True, text=True,
                        check=True).stdout.split()
    return {"recordio-pack": __version__, "opencv (ours)": opencv_version(), "tensorflow-cpu": tf[0],
            "tensorflow-datasets": tf[1], "numpy (tf env)": tf[2], "python": platform.python_version()}


def render(summary: dict[str, Any]) -> str:
    lines = [f"{summary['images']} images ({summary['source']}), {summary['workers']} workers, "
             f"{summary['shards']} shards, medians of {summary['repeats']}", "",
             "| row | wall s | images/s | CPU ms/image | TF loop alone s | output MiB |", "|---|---|---|---|---|---|"]
    for row in ROWS:
        item = summary["rows"][row]
        loop = f"{item['loop_s']:.2f}" if item["loop_s"] is not None else ""
        lines.append(f"| {row} | {item['wall_s']:.2f} | {summary['images'] / item['wall_s']:.0f} | "
                     f"{1000 * item['cpu_s'] / summary['images']:.2f} | {loop} | {item['bytes'] / 2**20:.1f} |")
    rows = summary["rows"]
    lines += ["", f"tfrecord 256 / recordio 256 wall: {rows['tfrecord 256']['wall_s'] / rows['recordio 256']['wall_s']:.3f}",
              f"tf loop 256 / tfrecord 256 always wall: "
              f"{rows['tf loop 256']['wall_s'] / rows['tfrecord 256 always']['wall_s']:.2f}x "
              f"(loop alone: {rows['tf loop 256']['loop_s'] / rows['tfrecord 256 always']['wall_s']:.2f}x)",
              f"tf loop as-is / tfrecord as-is wall: "
              f"{rows['tf loop as-is']['wall_s'] / rows['tfrecord as-is']['wall_s']:.2f}x", "",
              "versions: " + ", ".join(f"{key} {value}" for key, value in summary["versions"].items())]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--tf-python", default=str(REPO / ".venv-tf" / "bin" / "python"))
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "tfrecord"))
    parser.add_argument("--source", choices=["auto", "samples", "fake"], default="auto")
    parser.add_argument("--samples", default=str(SAMPLES))
    parser.add_argument("--fake-classes", type=int, default=20)
    parser.add_argument("--fake-per-class", type=int, default=10)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of the rows")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    become_subreaper()  # our workers are the forkserver's children: adopted, so their CPU time is counted
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source, sources = source_images(args, out)
    corpus = out / "corpus"
    build_corpus(sources, args.images, corpus)
    lst = write_list(corpus, out / "list")
    warm_cache(sources)
    wanted = [row for row in ROWS if row in args.rows.split(",")]
    runs: dict[str, list[dict[str, Any]]] = {row: [] for row in wanted}
    for repeat in range(args.repeats):
        for row in wanted:
            runs[row].append(run_row(row, lst, corpus, out / row.replace(" ", "-"), args))
            print(f"repeat {repeat + 1}/{args.repeats} {row}: {runs[row][-1]['wall_s']:.2f} s", flush=True)
    rows = {row: {key: statistics.median(run[key] for run in items) if items[0][key] is not None else None
                  for key in items[0]} for row, items in runs.items()}
    summary = {"images": args.images, "source": source, "workers": args.workers, "shards": args.shards,
               "repeats": args.repeats, "rows": rows, "runs": runs, "versions": versions(args.tf_python),
               "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    if set(wanted) == set(ROWS):
        print(render(summary))
    return summary


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The conversion loop of the Cloud TPU guide's ``imagenet_to_gcs.py``, with TensorFlow's own image ops, for
``bench/tfrecord_vs_recordio.py``; run by the TensorFlow environment's interpreter (.venv-tf), never imported.

Per image, in list order: read the file, ``tf.io.decode_jpeg(channels=3)``; with ``--resize N`` and a shorter
side above N, ``tf.image.resize`` (bilinear, antialiased) to shorter side N; ``tf.io.encode_jpeg(quality)``
(without ``--resize``: the file's own bytes are stored, as imagenet_to_gcs.py stores them, decoded only for the
height and width); a ``tf.train.Example`` with imagenet_to_gcs.py's nine keys; ``tf.io.TFRecordWriter``.  The
list is cut into ``--workers`` contiguous parts, each converted by its own process with one TensorFlow thread
(intra- and inter-op), so each holds one core as each of our workers does; each part writes its
``--shards``/``--workers`` shards.

Prints one JSON line: the loop's wall time (from when every process has imported TensorFlow and is ready, to the
last one done), the import time, images and bytes written.

Usage: tf_convert.py LST ROOT SYNSETS OUTDIR [--workers 2] [--shards 8] [--resize 256] [--quality 95]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time


def convert(part: int, rows: list[tuple[int, str]], args: argparse.Namespace, synsets: list[str], ready, go,
            results) -> None:
    started = time.perf_counter()
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.io.decode_jpeg(tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8)))  # load the kernels before the clock
    imported = time.perf_counter() - started
    ready.put(imported)
    go.wait()

    def feature(value):
        if isinstance(value, int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    per_part = max(1, args.shards // args.workers)
    written = 0
    loop_start = time.monotonic()
    for shard in range(per_part):
        chunk = rows[len(rows) * shard // per_part:len(rows) * (shard + 1) // per_part]
        name = os.path.join(args.out, f"train-{part * per_part + shard:05d}-of-{per_part * args.workers:05d}")
        with tf.io.TFRecordWriter(name) as writer:
            for label, path in chunk:
                data = tf.io.read_file(os.path.join(args.root, path))
                image = tf.io.decode_jpeg(data, channels=3)
                height, width = int(image.shape[0]), int(image.shape[1])
                if args.resize:
                    if min(height, width) > args.resize:
                        scale = args.resize / min(height, width)
                        height, width = max(1, round(height * scale)), max(1, round(width * scale))
                        image = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
                            image, [height, width], method="bilinear", antialias=True)), 0, 255), tf.uint8)
                    data = tf.io.encode_jpeg(image, quality=args.quality)
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image/height": feature(height), "image/width": feature(width),
                    "image/colorspace": feature(b"RGB"), "image/channels": feature(3),
                    "image/class/label": feature(label + 1), "image/class/synset": feature(synsets[label].encode()),
                    "image/format": feature(b"JPEG"), "image/filename": feature(os.path.basename(path).encode()),
                    "image/encoded": feature(data.numpy())}))
                writer.write(example.SerializeToString())
                written += 1
    results.put((loop_start, time.monotonic(), written))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("lst", "root", "synsets", "out"):
        parser.add_argument(name)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--quality", type=int, default=95)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with open(args.lst, encoding="utf-8") as stream:
        for line in stream:
            fields = line.rstrip("\n").split("\t")
            rows.append((int(float(fields[1])), fields[-1]))
    with open(args.synsets, encoding="utf-8") as stream:
        synsets = [line.rstrip("\n").split("\t")[1] for line in stream if line.strip()]
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    parts = [rows[len(rows) * part // args.workers:len(rows) * (part + 1) // args.workers]
             for part in range(args.workers)]
    processes = [context.Process(target=convert, args=(part, chunk, args, synsets, ready, go, results))
                 for part, chunk in enumerate(parts)]
    for process in processes:
        process.start()
    imports = [ready.get() for _ in processes]
    go.set()
    finished = [results.get() for _ in processes]
    for process in processes:
        process.join()
    loop_s = max(end for _, end, _ in finished) - min(start for start, _, _ in finished)
    size = sum(entry.stat().st_size for entry in os.scandir(args.out))
    print(json.dumps({"loop_s": loop_s, "import_s": max(imports), "images": sum(n for _, _, n in finished),
                      "bytes": size}))


if __name__ == "__main__":
    main()

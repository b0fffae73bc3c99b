#!/usr/bin/env bash
# `make demo`: the whole job on an embedded default — a generated fake ImageNet, listed, packed, verified,
# inspected, backed up to an S3 endpoint on 127.0.0.1 (moto), restored and verified again.
set -euo pipefail
out=${1:-demo}
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
step() { printf '\n== %s\n' "$*"; }

step "1. a fake ImageNet: 20 classes x 30 photo-like JPEGs, plus awkward files (CMYK, PNG named .JPEG, truncated, ...)"
recordio-pack fake "$out/imagenet/train" --classes 20 --images-per-class 30 --awkward --seed 1 -q

step "2. list it the im2rec way (labels from sorted class folders; class map beside the list)"
recordio-pack list "$out/imagenet/train" "$out/lists/train"

step "3. pack it: shorter side 256, 4 shards, all cores; bad inputs go to train.rejects.tsv"
recordio-pack pack "$out/lists/train.lst" "$out/packed" --root "$out/imagenet/train" --name train \
  --resize 256 --num-shards 4 -q

step "4. verify everything it wrote (framing, escaping, index, labels, checksums, every image decoded)"
recordio-pack verify "$out/packed" --decode

step "5. inspect: the first records, and a contact sheet to eyeball colours and labels"
recordio-pack inspect "$out/packed" --limit 8 --contact-sheet "$out/contact-sheet.png"

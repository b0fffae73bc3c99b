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

step "6. an S3 endpoint on 127.0.0.1 (moto; fake credentials, nothing leaves this machine)"
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint="http://127.0.0.1:$port"
python -m moto.server -H 127.0.0.1 -p "$port" >"$out/moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "$endpoint/moto-api/" >/dev/null && break; sleep 0.1; done
aws --endpoint-url "$endpoint" s3 mb s3://recordio-pack-demo

step "7. back the packed dataset up (content checksums decide what moves; manifest last)"
recordio-pack backup "$out/packed" s3://recordio-pack-demo/imagenet/train --endpoint-url "$endpoint" -q
recordio-pack backup "$out/packed" s3://recordio-pack-demo/imagenet/train --endpoint-url "$endpoint" --dry-run

step "8. restore it into a second folder, every checksum verified, and verify the result"
recordio-pack restore s3://recordio-pack-demo/imagenet/train "$out/restored" --endpoint-url "$endpoint" -q
recordio-pack verify "$out/restored"

#!/usr/bin/env bash
# `make demo`: the whole job on an embedded default — a generated fake ImageNet, listed, packed, verified,
# inspected, backed up to an S3 endpoint on 127.0.0.1 (moto), restored and verified again.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
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

step "9. snapshot the dataset's EBS volume (here a volume on the moto endpoint standing in for the download instance's)"
data_volume=$(aws --endpoint-url "$endpoint" ec2 create-volume --availability-zone us-east-1a --size 200 \
  --volume-type gp3 --query VolumeId --output text)
snap=$(recordio-pack snapshot --volume-id "$data_volume" --manifest "$out/packed/train.manifest.json" \
  --endpoint-url "$endpoint" --json -q | python -c 'import json, sys; print(json.load(sys.stdin)["snapshot_id"])')
echo "snapshot $snap of $data_volume, tagged with the manifest's SHA-256"

step "10. replicate it onto two running GPU instances in different zones, from a workstation"
ami=$(aws --endpoint-url "$endpoint" ec2 describe-images --owners amazon --query 'Images[0].ImageId' --output text)
for zone in us-east-1a us-east-1c; do
  aws --endpoint-url "$endpoint" ec2 run-instances --image-id "$ami" --instance-type p4d.24xlarge \
    --placement AvailabilityZone=$zone --tag-specifications 'ResourceType=instance,Tags=[{Key=role,Value=trainer}]' \
    --query 'Instances[0].InstanceId' --output text
done
recordio-pack replicate --snapshot-id "$snap" --filter tag:role=trainer --endpoint-url "$endpoint" -q

step "11. boot script: render the user-data for the snapshot and run it the way a new GPU instance would at boot"
boot="$out/boot"
mkdir -p "$boot/by-id" "$boot/mnt"
iid=$(aws --endpoint-url "$endpoint" ec2 run-instances --image-id "$ami" --instance-type g5.xlarge \
  --placement AvailabilityZone=us-east-1b --query 'Instances[0].InstanceId' --output text)
recordio-pack userdata --snapshot-id "$snap" --mount-point "$boot/mnt" -o "$boot/user-data.sh"
# The instance metadata service (IMDSv2) is a stub on 127.0.0.1 serving this instance's id and zone.
python "$repo/tests/imds_stub.py" --instance-id "$iid" --region us-east-1 --az us-east-1b >"$boot/imds.url" &
imds_pid=$!
trap 'kill $moto_pid $imds_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$boot/imds.url" ] && break; sleep 0.1; done
printf '#!/bin/sh\necho "mount $*" >>"%s/mount.log"\n' "$boot" >"$boot/mount" && chmod +x "$boot/mount"
: >"$boot/disk.img"
# Plays udev: the NVMe by-id link appears once the script has created the volume (the script polls for it).
( for _ in $(seq 300); do
    vol=$(aws --endpoint-url "$endpoint" ec2 describe-volumes --output text --query 'Volumes[0].VolumeId' \
      --filters "Name=tag:recordio-pack:target-instance,Values=$iid")
    if [ "$vol" != None ]; then ln -s "$boot/disk.img" "$boot/by-id/nvme-Amazon_Elastic_Block_Store_${vol/-/}"; break; fi
    sleep 0.5
  done ) &
AWS_ENDPOINT_URL="$endpoint" RECORDIO_PACK_IMDS_ENDPOINT=$(head -n 1 "$boot/imds.url") \
RECORDIO_PACK_DEVICE_DIR="$boot/by-id" RECORDIO_PACK_MOUNT_CMD="$boot/mount" RECORDIO_PACK_FSTAB="$boot/fstab" \
RECORDIO_PACK_LOG="$boot/userdata.log" RECORDIO_PACK_POLL_SECONDS=0.5 bash "$boot/user-data.sh"
aws --endpoint-url "$endpoint" ec2 describe-volumes --filters "Name=snapshot-id,Values=$snap" --output table \
  --query 'Volumes[].{volume:VolumeId,az:AvailabilityZone,attached_to:Attachments[0].InstanceId,state:Attachments[0].State}'
cat "$boot/mount.log" "$boot/fstab"

step "where everything went"
cat <<SUMMARY
  fake ImageNet            $out/imagenet/train   (awkward files: AWKWARD.tsv)
  lists + class map        $out/lists
  packed shards            $out/packed           (train.manifest.json, train.rejects.tsv)
  contact sheet            $out/contact-sheet.png
  S3 backup (moto)         s3://recordio-pack-demo/imagenet/train
  restored copy            $out/restored
  boot script + its log    $out/boot/user-data.sh, $out/boot/userdata.log
SUMMARY

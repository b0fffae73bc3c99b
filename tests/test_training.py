"""The readers GPU users train with, on shards we packed: NVIDIA DALI's fn.readers.mxnet (CPU-only pipeline) and
a real torch DataLoader with 2 workers over recordio_pack.torch, both in the training environment (.venv-train)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from recordio_pack.format import unpack_payload
from training_data import Packed, find_train_python, image_tree, pack_tree, run_train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def train_python() -> str:
    return find_train_python()


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Packed:
    root = tmp_path_factory.mktemp("training")
    return pack_tree(image_tree(root / "images", classes=4, per_class=9), root / "out", num_shards=3)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected_records(packed: Packed) -> list[tuple[str, float]]:
    """(SHA-256 of the image bytes, label) of every record, in shard order."""
    return [(digest(bytes(unpack_payload(payload)[1])), packed.labels[number])
            for number, payload in enumerate(packed.payloads)]


DALI_SCRIPT = r"""
import hashlib, json, sys
from nvidia.dali import fn, pipeline_def

recs, index, num_shards = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])

@pipeline_def(batch_size=1, num_threads=1, device_id=None)
def pipe(shard_id):
    data, labels = fn.readers.mxnet(path=recs, index_path=[index], shard_id=shard_id, num_shards=num_shards,
                                    random_shuffle=False, pad_last_batch=True, stick_to_shard=True, name="reader")
    return data, labels, fn.decoders.image(data, device="cpu")

parts = []
for shard_id in range(num_shards):
    p = pipe(shard_id=shard_id)
    p.build()
    size = p.reader_meta("reader")["epoch_size"]
    count = size * (shard_id + 1) // num_shards - size * shard_id // num_shards
    part = []
    for _ in range(count):
        data, labels, images = (output.at(0) for output in p.run())
        part.append([hashlib.sha256(data.tobytes()).hexdigest(), labels.tolist(), list(images.shape)])
    parts.append({"size": size, "records": part})
print(json.dumps(parts))
"""


def run_dali(train_python: str, packed: Packed, num_shards: int) -> list[dict]:
    recs = json.dumps([str(rec) for rec in packed.recs])
    return json.loads(run_train(train_python, DALI_SCRIPT, recs, str(packed.out / "data.all.idx"), str(num_shards)))


def test_dali_reads_every_record_once_with_our_labels_and_bytes(train_python: str, packed: Packed) -> None:
    """Through the NAME.all.idx that pack wrote."""
    (part,) = run_dali(train_python, packed, 1)
    expected = expected_records(packed)
    assert part["size"] == len(expected)
    assert [(sha, labels) for sha, labels, _ in part["records"]] == [(sha, [label]) for sha, label in expected]
    escaped = packed.escaped()
    assert len(escaped) >= 5  # among them, records split by escaping came back whole
    assert all(len(shape) == 3 and shape[2] == 3 for _, _, shape in part["records"])  # DALI decoded every one


def test_dali_two_shards_cover_every_record_exactly_once(train_python: str, packed: Packed) -> None:
    parts = run_dali(train_python, packed, 2)
    expected = expected_records(packed)
    seen = [(sha, labels[0]) for part in parts for sha, labels, _ in part["records"]]
    assert all(part["records"] for part in parts)
    assert Counter(seen) == Counter(expected) and len(seen) == len(expected)


TORCH_SCRIPT = r"""
import hashlib, json, sys
import cv2, numpy as np, torch
from torch.utils.data import DataLoader
from recordio_pack.torch import RecordIODataset, RecordIOIterableDataset

path = sys.argv[1]

def sha(data):
    return hashlib.sha256(data).hexdigest()

def listed(batch):
    return batch

result = {}
# map-style, shuffled by the sampler, two workers: bytes and labels
dataset = RecordIODataset(path, decode=False)
loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=2, collate_fn=listed,
                    generator=torch.Generator().manual_seed(0))
result["map"] = [[sha(image), label] for batch in loader for image, label in batch]
# decoded: HWC uint8 RGB, equal to OpenCV's decode turned to RGB; a transform gets that array
decoded = RecordIODataset(path, transform=lambda image: torch.from_numpy(image).permute(2, 0, 1))
raw = RecordIODataset(path, decode=False)
checks = []
for position in (0, len(decoded) - 1):
    tensor, label = decoded[position]
    image, _ = raw[position]
    reference = cv2.cvtColor(cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    checks.append(bool(torch.equal(tensor, torch.from_numpy(reference).permute(2, 0, 1))))
result["decoded_equal"] = checks
result["decoded_batch"] = [list(t.shape) + [str(t.dtype)] for batch in
                           DataLoader(decoded, batch_size=3, num_workers=2, collate_fn=listed) for t, _ in batch][:3]

# iterable: two workers, per epoch, and two ranks
def epoch(dataset, number):
    dataset.set_epoch(number)
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    return [[sha(image), label] for image, label in loader]

iterable = RecordIOIterableDataset(path, decode=False, seed=7, buffer_size=4)
result["iter_len"] = len(iterable)
result["iter_epochs"] = [epoch(iterable, 0), epoch(iterable, 1), epoch(iterable, 0)]
result["iter_ranks"] = []
for rank in range(2):
    part = RecordIOIterableDataset(path, decode=False, seed=7, buffer_size=4, rank=rank, world_size=2)
    result["iter_ranks"].append({"len": len(part), "records": epoch(part, 3)})
ordered = RecordIOIterableDataset(path, decode=False, shuffle=False)
result["iter_ordered"] = [[sha(image), label] for image, label in DataLoader(ordered, batch_size=None)]
batched = DataLoader(RecordIOIterableDataset(path, transform=lambda image: cv2.resize(image, (16, 16)), seed=1),
                     batch_size=5, num_workers=2)
result["iter_batches"] = [[list(images.shape), str(images.dtype), labels.tolist()] for images, labels in batched]
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def torch_result(train_python: str, packed: Packed) -> dict:
    return json.loads(run_train(train_python, TORCH_SCRIPT, str(packed.out)))


def as_pairs(rows: list[list]) -> list[tuple[str, float]]:
    return [(sha, float(label)) for sha, label in rows]


def test_map_style_dataset_in_a_two_worker_dataloader_reads_every_record_once(
        torch_result: dict, packed: Packed) -> None:
    expected = expected_records(packed)
    got = as_pairs(torch_result["map"])
    assert Counter(got) == Counter(expected) and len(got) == len(expected)
    assert got != expected  # the sampler shuffled
    assert all(isinstance(label, int) for _, label in torch_result["map"])
    assert torch_result["decoded_equal"] == [True, True]
    assert all(shape[0] == 3 and shape[-1] == "torch.uint8" for shape in torch_result["decoded_batch"])


def test_iterable_dataset_sees_every_record_once_per_epoch_shuffled_by_epoch(
        torch_result: dict, packed: Packed) -> None:
    expected = expected_records(packed)
    assert torch_result["iter_len"] == len(expected)
    first, second, again = (as_pairs(rows) for rows in torch_result["iter_epochs"])
    for rows in (first, second):
        assert Counter(rows) == Counter(expected) and len(rows) == len(expected)
    assert first != second and first != expected  # shuffled, differently per epoch
    assert again == first  # the same seed and epoch give the same order
    assert as_pairs(torch_result["iter_ordered"]) == expected


def test_iterable_dataset_splits_across_ranks_exactly(torch_result: dict, packed: Packed) -> None:
    expected = expected_records(packed)
    ranks = torch_result["iter_ranks"]
    assert [rank["len"] for rank in ranks] == [len(expected) // 2, len(expected) - len(expected) // 2]
    assert [len(rank["records"]) for rank in ranks] == [rank["len"] for rank in ranks]
    seen = [pair for rank in ranks for pair in as_pairs(rank["records"])]
    assert Counter(seen) == Counter(expected) and len(seen) == len(expected)


def test_iterable_dataset_batches_decoded_images(torch_result: dict, packed: Packed) -> None:
    batches = torch_result["iter_batches"]
    assert sum(shape[0] for shape, _, _ in batches) == len(packed.payloads)
    assert all(shape[1:] == [16, 16, 3] and dtype == "torch.uint8" for shape, dtype, _ in batches)
    assert Counter(label for _, _, labels in batches for label in labels) == Counter(int(x) for x in packed.labels)


def readme_training_blocks() -> list[str]:
    """The ```python blocks of the README's "Training from the shards" section."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Training from the shards", 1)[1].split("\n## ", 1)[0]
    return [block.split("\n```", 1)[0] for block in section.split("\n```python\n")[1:]]


def test_the_readme_training_examples_run_as_written(train_python: str, tmp_path: Path) -> None:
    blocks = readme_training_blocks()
    assert len(blocks) == 3 and "fn.readers.mxnet" in blocks[0] and "RecordIOIterableDataset" in blocks[1]
    packed = pack_tree(image_tree(tmp_path / "images", classes=4, per_class=20), tmp_path / "rec", name="train",
                       num_shards=2)
    dali, torch_out, compat = (run_train(train_python, block, cwd=tmp_path) for block in blocks)
    assert dali.strip() == "[64, 3, 224, 224] [64, 1]"
    lines = torch_out.strip().splitlines()
    assert lines[0].startswith("torch.Size([64, 3, 224, 224]) tensor([")
    assert lines[1:] == ["epoch 0: 80 of 80 images", "epoch 1: 80 of 80 images"]
    header_label, shape = compat.strip().split(" ", 1)
    assert float(header_label) == packed.labels[0] and shape.startswith("(") and shape.endswith(", 3)")


DIST_SCRIPT = r"""
import hashlib, json, os, sys
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader


def run(rank, world, path, out):
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=world)
    from recordio_pack.torch import RecordIOIterableDataset

    dataset = RecordIOIterableDataset(path, decode=False, seed=3)  # rank and world size from torch.distributed
    dataset.set_epoch(1)
    rows = [[hashlib.sha256(image).hexdigest(), label]
            for image, label in DataLoader(dataset, batch_size=None, num_workers=2)]
    with open(f"{out}/{rank}.json", "w") as stream:
        json.dump({"rank": dataset.rank, "world": dataset.world_size, "len": len(dataset), "records": rows}, stream)
    dist.destroy_process_group()


if __name__ == "__main__":
    path, out = sys.argv[1], sys.argv[2]
    mp.spawn(run, args=(2, path, out), nprocs=2)
    print(json.dumps([json.load(open(f"{out}/{rank}.json")) for rank in range(2)]))
"""


def test_iterable_dataset_takes_its_part_from_torch_distributed(train_python: str, packed: Packed,
                                                                  tmp_path: Path) -> None:
    """Two gloo ranks (file:// rendezvous, loopback), each with a two-worker DataLoader: every record once."""
    script = tmp_path / "dist_script.py"
    script.write_text(DIST_SCRIPT)
    ranks = json.loads(run_train(train_python, script, str(packed.out), str(tmp_path)))
    assert [(rank["rank"], rank["world"]) for rank in ranks] == [(0, 2), (1, 2)]
    expected = expected_records(packed)
    assert [len(rank["records"]) for rank in ranks] == [rank["len"] for rank in ranks] == [18, 18]
    seen = [pair for rank in ranks for pair in as_pairs(rank["records"])]
    assert Counter(seen) == Counter(expected) and len(seen) == len(expected)

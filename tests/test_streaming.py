"""Streaming shards: split across processes and workers without duplicates or gaps, resumed exactly across passes.

The shards are built at test time from coco-mini: webdataset tars as img2dataset writes
them (``key.jpg``, ``key.txt``, ``key.json``) and Parquet files.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from hf_hardneg.data.streaming import ResumableStream, StreamPosition

pytestmark = pytest.mark.coco


def _coco_rows(coco_mini, count: int):
    captions = json.loads((coco_mini / "annotations" / "captions_val2017.json").read_text())
    files = {img["id"]: img["file_name"] for img in captions["images"]}
    rows, seen = [], set()
    for ann in captions["annotations"]:
        if ann["image_id"] in seen:
            continue
        seen.add(ann["image_id"])
        rows.append((f"{ann['image_id']:012d}", coco_mini / "images" / "val2017" / files[ann["image_id"]],
                     ann["caption"].strip()))
        if len(rows) == count:
            break
    return rows


def write_webdataset(folder: Path, rows, shards: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    per = len(rows) // shards
    for s in range(shards):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for key, path, caption in rows[s * per:(s + 1) * per]:
                for ext, data in (("jpg", path.read_bytes()), ("txt", caption.encode()),
                                  ("json", json.dumps({"key": key, "caption": caption}).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder


def _keys_of_first_pass(dataset, num_processes=2, num_workers=2, batch_size=5, batches_per_pass=4):
    keys = []
    for rank in range(num_processes):
        stream = ResumableStream(dataset, rank, num_processes, batch_size)
        loader = torch.utils.data.DataLoader(stream, batch_size=batch_size, num_workers=num_workers,
                                             collate_fn=lambda rows: [r["__key__"] for r in rows])
        batches = iter(loader)
        for _ in range(batches_per_pass):
            keys += next(batches)
    return keys


def test_webdataset_shards_split_over_processes_and_workers_without_duplicates_or_gaps(coco_mini, tmp_path):
    import datasets

    rows = _coco_rows(coco_mini, 40)
    stream = datasets.load_dataset(str(write_webdataset(tmp_path / "wds", rows, 8)), split="train", streaming=True)
    assert stream.n_shards == 8 and {"jpg", "txt", "json", "__key__"} <= set(stream.features)
    # 8 shards x 5 rows; 2 processes x 2 workers: each worker reads 2 shards, 10 rows = 2 batches of 5 per pass
    keys = _keys_of_first_pass(stream)
    assert sorted(keys) == sorted(key for key, _, _ in rows)  # every row once: no duplicate, no gap


def test_parquet_shards_split_the_same_way(coco_mini, tmp_path):
    import datasets

    rows = _coco_rows(coco_mini, 40)
    folder = tmp_path / "parquet"
    folder.mkdir()
    for s in range(8):
        part = rows[s * 5:(s + 1) * 5]
        datasets.Dataset.from_dict({"__key__": [k for k, _, _ in part], "image": [str(p) for _, p, _ in part],
                                    "caption": [c for _, _, c in part]}).to_parquet(folder / f"{s:05d}.parquet")
    stream = datasets.load_dataset("parquet", data_files=str(folder / "*.parquet"), split="train", streaming=True)
    assert sorted(_keys_of_first_pass(stream)) == sorted(k for k, _, _ in rows)


def test_a_worker_without_shards_is_refused_with_the_fix(coco_mini, tmp_path):
    import datasets

    stream = datasets.load_dataset(str(write_webdataset(tmp_path / "wds", _coco_rows(coco_mini, 8), 2)),
                                   split="train", streaming=True)
    with pytest.raises(ValueError, match=r"2 shard\(s\), 1 per process over 2 process\(es\).*--dataloader_num_workers 1"):
        ResumableStream(stream, 0, 2).check_workers(2)
    assert ResumableStream(stream, 0, 1, batch_size=3, skip_batches=7).rows_to_skip(1, 2) == 3 * 3  # batches 1, 3, 5


def _train(train_script, model_dir, shards, out, max_steps, resume=None):
    args = ["--model_name_or_path", str(model_dir), "--dataset_path", str(shards), "--streaming",
            "--image_column", "jpg", "--caption_column", "txt", "--concepts", "object", "--num_hard_negatives", "1",
            "--per_device_train_batch_size", "4", "--max_steps", str(max_steps), "--save_strategy", "steps",
            "--save_steps", "6", "--logging_steps", "1", "--learning_rate", "1e-3", "--dataloader_num_workers", "2",
            "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--output_dir", str(out), "--seed", "3"]
    assert train_script.main(args + (["--resume_from_checkpoint", resume] if resume else [])) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    return {log["step"]: log["loss"] for log in state["log_history"] if "loss" in log}


@pytest.mark.slow
def test_resume_is_exact_across_pass_boundaries(train_script, coco_mini, tiny_clip_dir, tmp_path):
    # 4 shards of 10 photographs; the object subset keeps most captions: a pass is about 8-10 batches of 4,
    # so step 12 lies in the second pass of every worker
    shards = write_webdataset(tmp_path / "wds", _coco_rows(coco_mini, 40), 4)
    full = _train(train_script, tiny_clip_dir, shards, tmp_path / "full", max_steps=16)
    _train(train_script, tiny_clip_dir, shards, tmp_path / "job", max_steps=12)
    position = StreamPosition.load(tmp_path / "job" / "checkpoint-12")
    assert (position.global_step, position.num_workers, position.per_device_batch_size) == (12, 2, 4)
    resumed = _train(train_script, tiny_clip_dir, shards, tmp_path / "job", max_steps=16,
                     resume=str(tmp_path / "job" / "checkpoint-12"))
    assert sorted(resumed) == sorted(full) == list(range(1, 17))
    for step in range(13, 17):  # same machine, same computation: the same numbers
        assert resumed[step] == pytest.approx(full[step], rel=1e-6), f"step {step}"

    # another number of workers would continue another stream: refused, with what changed
    with pytest.raises(ValueError, match="changes num_workers 2 -> 1"):
        train_script.main(["--model_name_or_path", str(tiny_clip_dir), "--dataset_path", str(shards), "--streaming",
                           "--image_column", "jpg", "--caption_column", "txt", "--max_steps", "18",
                           "--per_device_train_batch_size", "4", "--dataloader_num_workers", "1", "--use_cpu", "true",
                           "--report_to", "none", "--output_dir", str(tmp_path / "job"),
                           "--resume_from_checkpoint", str(tmp_path / "job" / "checkpoint-12")])

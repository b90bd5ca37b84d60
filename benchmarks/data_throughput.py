"""Data-path throughput: images per CPU-second of the work done in the DataLoader workers.

On real coco-mini JPEGs (repeated to ``--images``), one real caption and one
other real caption as its hard negative per row, batch ``--batch-size``, through
a ``DataLoader`` with 0 and N workers, four ways of making a batch:

* ``naive``: ``PIL.Image.open(path).convert("RGB")`` + ``CLIPImageProcessor`` per
  image + the tokenizer per caption, then stacked (what a hand-written loop does);
* ``processor``: ``HardNegativeCollator(image_preprocessing="processor")``
  (draft decoding, the processor over the batch: the path before the tiers);
* ``cpu``: the CPU tier (decode, uint8 resize and crop, one table normalisation per batch);
* ``device``: the device tier's worker side (decode and pack uint8 only; the resize
  and normalisation then run on the GPU and are not counted here).

The rate is images divided by the CPU time (user + system) of the processes that
made the batches: this process with 0 workers (``time.process_time``), the
persistent workers with N (read from ``/proc/<pid>/stat`` around each pass, so
their start-up is left out, as in a long run; the main process's own CPU time is
reported beside it as ``main_cpu_s``). One warm-up pass per case, then rounds
alternate the cases (rotating their order) so that a busy shared machine slows all
alike; min and median over rounds are reported, speed-ups against ``naive`` use
the medians.

    python benchmarks/data_throughput.py --images 256 --rounds 3 --workers 0 2 --json /tmp/data.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_COCO = Path(os.environ.get("HF_HARDNEG_COCO_MINI", REPO.parent / "shared" / "data" / "coco-mini"))
CASES = ("naive", "processor", "cpu", "device")


def load_rows(coco: Path, count: int) -> list[dict]:
    """``count`` rows (image path, caption, negative_1) cycling over coco-mini's images and real captions."""
    rows = []
    for split in ("val2017", "train2017"):
        table = json.loads((coco / "annotations" / f"captions_{split}.json").read_text())
        files = {image["id"]: coco / "images" / split / image["file_name"] for image in table["images"]}
        captions: dict[int, list[str]] = {}
        for annotation in table["annotations"]:
            captions.setdefault(annotation["image_id"], []).append(annotation["caption"].strip())
        rows.extend({"image": str(files[i]), "caption": texts[0], "negative_1": texts[-1]}
                    for i, texts in sorted(captions.items()) if files[i].is_file())
    if not rows:
        sys.exit(f"no coco-mini images under {coco}; pass --coco")
    # the hard negative: another image's caption (the text differs, the tokenizer's work is the same)
    rows = [{**row, "negative_1": rows[(i + 1) % len(rows)]["caption"]} for i, row in enumerate(rows)]
    return (rows * (count // len(rows) + 1))[:count]


class NaiveCollator:
    """The per-item loop a hand-written training script would run."""

    def __init__(self, tokenizer, processor):
        self.tokenizer, self.processor = tokenizer, processor

    def __call__(self, rows):
        import PIL.Image

        pixels = [self.processor(images=PIL.Image.open(row["image"]).convert("RGB"), return_tensors="pt")["pixel_values"]
                  for row in rows]
        texts = [self.tokenizer(text, padding="max_length", truncation=True, max_length=32, return_tensors="pt")
                 for row in rows for text in (row["caption"], row["negative_1"])]
        return {"pixel_values": torch.cat(pixels), "input_ids": torch.cat([t["input_ids"] for t in texts]),
                "attention_mask": torch.cat([t["attention_mask"] for t in texts])}


def make_collator(case: str, tokenizer, processor):
    from hf_hardneg.collator import HardNegativeCollator

    if case == "naive":
        return NaiveCollator(tokenizer, processor)
    return HardNegativeCollator(tokenizer, processor, num_hard_negatives=1, image_preprocessing=case)


_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def make_loader(collator, rows, batch_size: int, workers: int):
    return torch.utils.data.DataLoader(rows, batch_size=batch_size, collate_fn=collator, num_workers=workers,
                                       prefetch_factor=2 if workers else None, persistent_workers=workers > 0)


def measure(loader, workers: int) -> dict:
    """One pass over ``loader``: images per CPU-second of the process(es) that made the batches."""
    iterator = iter(loader)  # persistent workers: started by the warm-up pass, not counted here
    pids = [worker.pid for worker in getattr(iterator, "_workers", [])]
    wall, main = time.perf_counter(), time.process_time()
    before = [process_cpu(pid) for pid in pids]
    count = 0
    for batch in iterator:
        count += next(iter(batch.values())).shape[0]
    wall, main = time.perf_counter() - wall, time.process_time() - main
    work = sum(process_cpu(pid) - start for pid, start in zip(pids, before)) if workers else main
    return {"images": count, "worker_cpu_s": round(work, 4), "main_cpu_s": round(main, 4), "wall_s": round(wall, 4),
            "images_per_cpu_s": count / work}


def run(args) -> dict:
    from transformers import CLIPImageProcessor

    from hf_hardneg.data.image_pipeline import fast_jpeg_available
    from hf_hardneg.testing import build_word_tokenizer

    torch.set_num_threads(1)  # what every DataLoader worker gets; keeps workers=0 comparable
    rows = load_rows(args.coco, args.images)
    tokenizer = build_word_tokenizer([row["caption"] for row in rows], max_length=32)
    processor = CLIPImageProcessor()  # openai/clip-vit-base-patch32's preprocessing: 224 px, bicubic
    results = {}
    for workers in args.workers:
        samples = {case: [] for case in args.cases}
        loaders = {case: make_loader(make_collator(case, tokenizer, processor), rows, args.batch_size, workers)
                   for case in args.cases}
        for loader in loaders.values():  # warm-up pass: starts the persistent workers, fills the file cache
            measure(loader, workers)
        for round_index in range(args.rounds):
            order = args.cases[round_index % len(args.cases):] + args.cases[: round_index % len(args.cases)]
            for case in order:
                sample = measure(loaders[case], workers)
                samples[case].append(sample)
                print(json.dumps({"workers": workers, "round": round_index, "case": case, **sample}), flush=True)
        summary = {}
        for case, runs in samples.items():
            rates = [run["images_per_cpu_s"] for run in runs]
            summary[case] = {"min": round(min(rates), 1), "median": round(statistics.median(rates), 1),
                             "wall_images_per_s_median": round(statistics.median(r["images"] / r["wall_s"]
                                                                                 for r in runs), 1)}
        if "naive" in summary:
            for case in summary:
                summary[case]["speedup_vs_naive"] = round(summary[case]["median"] / summary["naive"]["median"], 2)
        results[f"workers={workers}"] = summary
        del loaders  # shuts the persistent workers down
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} CPUs, "
                   f"load average {os.getloadavg()[0]:.1f}",
        "python": platform.python_version(), "torch": torch.__version__,
        "decoder": "simplejpeg" if fast_jpeg_available() else "Pillow",
        "images": args.images, "batch_size": args.batch_size, "rounds": args.rounds,
        "command": "python " + " ".join(sys.argv),
        "results": results,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coco", type=Path, default=DEFAULT_COCO)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, min(4, os.cpu_count() or 1)])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    report = run(args)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Throughput of the substitution engine on real COCO captions.

Measures captions per second (wall clock and per CPU-second of this process) for:

* the plain API: ``sample_negatives`` (object, k=3) and ``enumerate_negatives`` (object, all);
* ``Dataset.map`` (batched, one process) through ``add_hard_negatives``: object with k=3 and
  object with ``num_negatives="all"``, on an on-disk dataset as a real COCO set would be.

The captions of ../shared/data/coco-mini (1,195) are repeated to ``--rows`` rows (default
500,000). Goal from the issue: at least 50,000 captions/s per core for object k=3 via map.

    python benchmarks/substitution.py                 # full run (~1-2 min on one core)
    python benchmarks/substitution.py --rows 50000    # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_COCO = Path(os.environ.get("HF_HARDNEG_COCO_MINI", REPO.parent / "shared" / "data" / "coco-mini"))


def _captions(coco: Path) -> list[str]:
    out: list[str] = []
    for split in ("val", "train"):
        path = coco / "annotations" / f"captions_{split}2017.json"
        out += [a["caption"].strip() for a in json.loads(path.read_text(encoding="utf-8"))["annotations"]]
    return out


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500_000, help="rows for Dataset.map (default 500,000)")
    parser.add_argument("--api-rows", type=int, default=100_000, help="captions for the plain-API loops")
    parser.add_argument("--coco-mini", type=Path, default=DEFAULT_COCO)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import datasets
    from datasets import Dataset, load_from_disk

    from hf_hardneg.concepts import OBJECT
    from hf_hardneg.substitution import RowRandom, add_hard_negatives, enumerate_negatives, sample_negatives

    datasets.disable_progress_bars()
    base = _captions(args.coco_mini)
    rows = (base * (args.rows // len(base) + 1))[: args.rows]
    api = rows[: args.api_rows]
    OBJECT.pattern  # noqa: B018 - compile once, outside the timings
    results = []

    def record(name: str, n: int, wall: float, cpu: float) -> None:
        results.append({"case": name, "captions": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                        "captions_per_s": round(n / wall), "captions_per_cpu_s": round(n / cpu)})
        print(f"{name:<44} {n:>9,} captions  {n / wall:>10,.0f}/s wall  {n / cpu:>10,.0f}/s per CPU-second",
              flush=True)

    _, wall, cpu = _timed(lambda: [sample_negatives(c, OBJECT, 3, RowRandom(0, i)) for i, c in enumerate(api)])
    record("plain API sample_negatives object k=3", len(api), wall, cpu)
    _, wall, cpu = _timed(lambda: [enumerate_negatives(c, OBJECT) for c in api])
    record("plain API enumerate_negatives object all", len(api), wall, cpu)

    with tempfile.TemporaryDirectory() as tmp:
        Dataset.from_dict({"caption": rows, "row": list(range(len(rows)))}).save_to_disk(f"{tmp}/captions")
        ds = load_from_disk(f"{tmp}/captions")
        for k in (3, "all"):
            out, wall, cpu = _timed(lambda: add_hard_negatives(ds, OBJECT, num_negatives=k, keep_only_matching=False,
                                                               load_from_cache_file=False))
            record(f"Dataset.map (batched, 1 process) object k={k}", len(out), wall, cpu)
            assert out.num_columns == 2 + (k if k != "all" else 1) + 2
            del out

    info = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "datasets": datasets.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible ({platform.processor() or 'cpu'})",
        "rows": args.rows,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in info.items() if k != "results"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

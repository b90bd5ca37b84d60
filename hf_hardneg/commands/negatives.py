"""`hf-hardneg negatives`: write hard-negative captions of a caption file as JSON Lines (captions
are stripped of surrounding whitespace, as load_coco_captions does).

Each output line is one caption with ``negative_1 ... negative_k`` (or ``negatives`` for
``--num-negatives all``), ``hard_negative_concept`` and ``hard_negative_keyword`` -- the
same columns and, for the same seed, the same texts as
``add_hard_negatives(load_coco_captions(...))``: a caption's draws depend only on the seed
and its position in the file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hf_hardneg.commands import add_caption_file_argument, add_command, add_concept_arguments, captions_and_concepts

__all__ = ["register", "run"]

_BATCH = 1000


def _num_negatives(value: str) -> int | str:
    if value == "all":
        return value
    try:
        k = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {value!r}") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {value!r}")
    return k


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "negatives", run, help="write hard-negative captions of a caption file to JSON Lines")
    add_caption_file_argument(parser)
    add_concept_arguments(parser)
    parser.add_argument("--num-negatives", "-k", type=_num_negatives, default=1, metavar="K",
                        help="negatives per caption, or 'all' for every alternative of the first keyword (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--output", "-o", required=True, metavar="FILE.jsonl", help="where to write; '-' for stdout")
    parser.add_argument("--keep-all", action="store_true",
                        help="also write captions without a keyword (their negative fields are null)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="count and skip null, blank or non-text captions instead of stopping at the first")


def run(args: argparse.Namespace) -> int:
    from hf_hardneg.substitution import HardNegativeTransform, is_valid_caption

    concepts, records = captions_and_concepts(args)
    invalid = [i for i, r in enumerate(records) if not is_valid_caption(r.caption)]
    if invalid and not args.skip_invalid:
        first = records[invalid[0]]
        print(f"hf-hardneg negatives: error: {args.captions}: {first.where}: caption is {first.caption!r:.60}; "
              f"{len(invalid)} such caption(s) in all. Fix the file or pass --skip-invalid to count and skip them.",
              file=sys.stderr)
        return 2
    transform = HardNegativeTransform(concepts, args.num_negatives, seed=args.seed)
    columns = transform.output_columns
    skip = set(invalid)
    todo = [(i, r) for i, r in enumerate(records) if i not in skip]

    written = without = 0
    to_stdout = args.output == "-"
    out_path = Path(args.output)
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    if not to_stdout:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    stream = sys.stdout if to_stdout else tmp_path.open("w", encoding="utf-8")
    try:
        for start in range(0, len(todo), _BATCH):
            chunk = todo[start : start + _BATCH]
            result = transform([r.caption.strip() for _, r in chunk], [i for i, _ in chunk])
            for row, (_, record) in enumerate(chunk):
                if result[columns[-2]][row] is None:
                    without += 1
                    if not args.keep_all:
                        continue
                line = {"caption": record.caption.strip()}
                if record.caption_id is not None:
                    line["caption_id"] = record.caption_id
                if record.image_id is not None:
                    line["image_id"] = record.image_id
                line.update({c: result[c][row] for c in columns})
                stream.write(json.dumps(line, ensure_ascii=False) + "\n")
                written += 1
    except BaseException:
        if not to_stdout:
            stream.close()
            tmp_path.unlink(missing_ok=True)
        raise
    if not to_stdout:
        stream.close()
        os.replace(tmp_path, out_path)  # no half-written file under the final name
    names = ", ".join(c.name for c in concepts)
    print(
        f"{args.captions}: {len(records)} captions read; {len(todo) - without} with a keyword of {names}; "
        f"{without} without ({'written with null negatives' if args.keep_all else 'not written'}); "
        f"{len(invalid)} invalid skipped; {written} rows written to {args.output}",
        file=sys.stderr,
    )
    return 0

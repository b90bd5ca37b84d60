"""`hf-hardneg stats`: how many captions of a file each concept can turn into hard negatives
(invalid captions -- null, blank, not text -- are counted and reported).

Answers "is this concept worth training on this data?" before any training: captions read,
captions with a keyword (the paper's per-concept subset), and how many negatives exist. The
paper's concepts match case-sensitively, as its Table 5 was counted (``--case-insensitive``
counts sentence-initial "Small ..." too); each concept's matching is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from hf_hardneg.commands import add_caption_file_argument, add_command, add_concept_arguments, captions_and_concepts
from hf_hardneg.concepts import CONCEPTS, Concept

__all__ = ["register", "run", "caption_stats"]


def caption_stats(captions: list[Any], concepts: list[Concept], top: int = 10) -> dict[str, dict[str, Any]]:
    """Per concept: captions read, invalid ones (counted, not used), captions with a keyword,
    keyword occurrences, negatives over all occurrences, negatives for the first occurrence
    (the candidates of the concept-accuracy evaluation) and the most frequent keywords."""
    from hf_hardneg.substitution import find_keywords, is_valid_caption

    valid = [c for c in captions if is_valid_caption(c)]
    out: dict[str, dict[str, Any]] = {}
    for concept in concepts:
        table = concept.substitutions
        with_keyword = occurrences = negatives = first = 0
        keywords: Counter[str] = Counter()
        for caption in valid:
            found = [m.keyword for m in find_keywords(caption, concept)]
            if not found:
                continue
            with_keyword += 1
            occurrences += len(found)
            negatives += sum(len(table[k]) for k in found)
            first += len(table[found[0]])
            keywords.update(found)
        out[concept.name] = {
            "captions": len(captions),
            "invalid": len(captions) - len(valid),
            "with_keyword": with_keyword,
            "keyword_occurrences": occurrences,
            "negatives": negatives,
            "negatives_first_occurrence": first,
            "top_keywords": dict(keywords.most_common(top)),
            "case_sensitive": concept.case_sensitive,
        }
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "stats", run, help="per concept: captions with a keyword and negatives available")
    add_caption_file_argument(parser)
    add_concept_arguments(parser, default=list(CONCEPTS))
    parser.add_argument("--json", action="store_true", help="print one JSON object {concept: {...}} on stdout")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="most frequent keywords to list (default 10)")


def run(args: argparse.Namespace) -> int:
    concepts, records = captions_and_concepts(args)
    stats = caption_stats([r.caption for r in records], concepts, top=args.top)
    if args.json:
        json.dump(stats, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    n = len(records)
    print(f"{args.captions}: {n} captions")
    modes = ", ".join(f"{name} {'case-sensitive' if s['case_sensitive'] else 'case-insensitive'}"
                      for name, s in stats.items())
    print(f"keyword matching: {modes} (the paper's concepts match case-sensitively; --case-insensitive to change)")
    header = f"{'concept':<14}{'with keyword':>16}{'occurrences':>13}{'negatives':>11}{'first occ.':>12}  top keywords"
    print(header)
    for name, s in stats.items():
        share = f"{s['with_keyword']} ({100 * s['with_keyword'] / n:.1f}%)" if n else "0"
        top = ", ".join(f"{k} {v}" for k, v in list(s["top_keywords"].items())[:5])
        print(f"{name:<14}{share:>16}{s['keyword_occurrences']:>13}{s['negatives']:>11}"
              f"{s['negatives_first_occurrence']:>12}  {top}")
    invalid = next(iter(stats.values()))["invalid"] if stats else 0
    if invalid:
        print(f"{invalid} invalid caption(s) (null, blank or not text) were counted but not used", file=sys.stderr)
    return 0

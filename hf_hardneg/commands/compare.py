"""`hf-hardneg compare`: one table across models from their results.json, and the Figure-4 plot from histories.

    hf-hardneg compare eval/orig eval/classic eval/hn1 --names Orig.,Clas.,HN1 --output table.md
    hf-hardneg compare --histories runs/*/*.concept_eval.json --plot tradeoff.png --concept color
"""

from __future__ import annotations

from pathlib import Path

from hf_hardneg.commands import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "compare", run,
                    help="compare evaluation results of several models in one table; plot concept/retrieval trade-offs")
    p.add_argument("results", nargs="*", help="results.json files (or folders holding one)")
    p.add_argument("--names", default=None, help="comma-separated column names (default: each file's model name)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated row prefixes to keep, e.g. concept/,retrieval/t2i/R@5")
    p.add_argument("--digits", type=int, default=3)
    p.add_argument("--output", default=None, help="write the Markdown table here (always printed)")
    p.add_argument("--histories", nargs="+", default=None,
                   help="*.concept_eval.json files written by ConceptEvalCallback, one line each in --plot")
    p.add_argument("--plot", default=None, help="PNG path for the concept-accuracy vs R@5 plot")
    p.add_argument("--concept", default=None, help="concept to plot (default: macro average over concepts)")


def run(args) -> int:
    from hf_hardneg.evaluation.plotting import load_history, plot_tradeoff
    from hf_hardneg.evaluation.report import compare_table, history_table, load_results

    if not args.results and not args.histories:
        raise SystemExit("nothing to compare: give results.json files and/or --histories")
    if bool(args.histories) != bool(args.plot):
        raise SystemExit("--histories and --plot go together")
    if args.results:
        loaded = [load_results(p) for p in args.results]
        names = [n.strip() for n in args.names.split(",")] if args.names else [r.get("model", p)
                                                                              for r, p in zip(loaded, args.results)]
        if len(names) != len(loaded):
            raise SystemExit(f"{len(names)} names for {len(loaded)} results files")
        if len(set(names)) != len(names):
            raise SystemExit(f"column names must be unique, got {names}; pass --names")
        metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
        table = compare_table(dict(zip(names, loaded)), digits=args.digits, metrics=metrics)
        print(table)
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(table, encoding="utf-8")
            print(f"wrote {args.output}")
    if args.histories:
        histories = {}
        for path in args.histories:
            name, points = load_history(path)
            while name in histories:
                name += "'"
            histories[name] = points
        print(history_table(histories, concept=args.concept, digits=args.digits))
        out = plot_tradeoff(histories, args.plot, concept=args.concept)
        print(f"wrote {out}")
    return 0

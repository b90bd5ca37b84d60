"""`python -m hf_hardneg.demo` (what `make demo` runs): classic vs hard-negative training, offline, in minutes.

The demo reproduces the paper's setting in miniature on the synthetic world of
:mod:`hf_hardneg.synthetic`, through the library's real training and
evaluation path (:class:`~hf_hardneg.trainer.HardNegCLIPTrainer`,
:mod:`hf_hardneg.loss`, :mod:`hf_hardneg.evaluation`):

1. **Stage 1, "alt-text" pretraining** of a tiny CLIP from scratch on
   ``coarse_caption`` (object nouns only). Like CLIP's web pretraining, it never
   needs colour or size to tell a batch apart. The checkpoint is cached under
   ``<output_dir>/seed<N>/stage1`` and reused while the configuration is unchanged.
2. **Stage 2, continued pretraining** on the detailed captions, twice from the
   same stage-1 weights, with the same data, seed and budget: *classic* (CLIP's
   loss) and *HN1* (one substituted caption per image replaces one random
   in-batch negative, the paper's recipe). A
   :class:`~hf_hardneg.evaluation.ConceptEvalCallback` measures both at every
   checkpoint.
3. **Evaluation** of the stage-1, classic and HN1 models on held-out scenes:
   concept accuracy per concept (the true caption must beat every substitution
   of its first keyword; ties count against it) and text-to-image Recall@5.
   A table is printed, ``results.json``/``results.md`` are written, and the
   Figure-4 trade-off plot is drawn per concept (``tradeoff_<concept>.png``).

Why two stages: trained from scratch on detailed captions, a small world
teaches colour through random in-batch negatives alone, leaving nothing for
hard negatives to add. The paper continues the pretraining of a model whose
pretraining never needed the concept, which is what stage 1 provides.

Everything is set in ``configs/demo.yaml`` (see :class:`DemoConfig`); flags
override the file. ``--seeds 0 1 2`` repeats the whole pipeline per seed and
prints mean and spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

logger = logging.getLogger(__name__)

__all__ = ["DemoConfig", "load_demo_config", "build_demo_datasets", "train_stage1", "train_stage2",
           "evaluate_checkpoint", "run_demo", "summarize_seeds", "main"]

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
RUN_LABELS = {"stage1": "stage 1 (start)", "classic": "classic"}  # and "hnK" -> "HNK"
RETRIEVAL_KEY = "t2i_R@5"


# Defaults equal configs/demo.yaml (a test keeps them in sync), so an installed package without
# the configs/ folder runs the same demo.
def _default_stage1() -> dict[str, Any]:
    return {"max_steps": 4000, "learning_rate": 1e-3, "lr_scheduler_type": "cosine", "warmup_steps": 0.05,
            "per_device_train_batch_size": 64, "dataloader_num_workers": 1,
            "dataloader_persistent_workers": True}


def _default_stage2() -> dict[str, Any]:
    return {"max_steps": 1000, "learning_rate": 5e-4, "lr_scheduler_type": "constant",
            "per_device_train_batch_size": 64, "dataloader_num_workers": 1,
            "dataloader_persistent_workers": True}


@dataclass
class DemoConfig:
    """Everything the demo does, in one place (``configs/demo.yaml`` mirrors it).

    ``world`` holds :class:`~hf_hardneg.synthetic.WorldConfig` fields; ``model``
    the arguments of :func:`~hf_hardneg.testing.make_tiny_model`; ``stage1`` and
    ``stage2`` any :class:`~hf_hardneg.config.HardNegCLIPConfig` (hence
    ``TrainingArguments``) fields. The world's scenes are fixed by
    ``world_seed``; ``seed`` drives initialisation, data order and the
    hard-negative draws, and is shared by the classic and HN1 runs.

    Evaluation: ``eval_concepts`` are measured on all held-out scenes at the
    end; ``checkpoint_concepts`` (default: ``eval_concepts``) every
    ``eval_every`` stage-2 steps on ``checkpoint_eval_examples`` examples per
    concept, for the trade-off plots. The *object* concept has 80 candidates
    per caption, which makes it the slow one to evaluate at every checkpoint.
    ``num_threads`` sets torch's CPU threads (``None``: torch's default).
    """

    output_dir: str = "outputs/demo"
    seed: int = 0
    world_seed: int = 0
    world: dict[str, Any] = field(default_factory=lambda: {"image_size": 32, "layout": "grid"})
    stage1_scenes: int = 20000
    stage2_scenes: int = 20000
    eval_scenes: int = 1000
    model: dict[str, Any] = field(default_factory=lambda: {
        "kind": "clip", "image_size": 32, "patch_size": 8, "hidden_size": 64, "num_layers": 2,
        "projection_dim": 64, "max_length": 40})
    stage1: dict[str, Any] = field(default_factory=_default_stage1)
    stage2: dict[str, Any] = field(default_factory=_default_stage2)
    hard_negative_concepts: list[str] = field(default_factory=lambda: ["color", "size"])
    num_hard_negatives: int = 1
    eval_concepts: list[str] = field(default_factory=lambda: ["color", "size", "location", "object"])
    eval_every: int = 200
    checkpoint_concepts: list[str] | None = field(default_factory=lambda: ["color", "size", "location"])
    checkpoint_eval_examples: int | None = 300
    eval_batch_size: int = 256
    num_threads: int | None = 1
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("stage1_scenes", "stage2_scenes", "eval_scenes", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"demo config: {name} must be >= 1, got {getattr(self, name)}")
        if self.num_hard_negatives < 1:
            raise ValueError("demo config: num_hard_negatives must be >= 1 (the classic run is always included)")
        if not self.hard_negative_concepts:
            raise ValueError("demo config: hard_negative_concepts is empty; name at least one concept")
        from hf_hardneg.concepts import get_concept

        if self.checkpoint_concepts is None:
            self.checkpoint_concepts = list(self.eval_concepts)
        for name in [*self.hard_negative_concepts, *self.eval_concepts, *self.checkpoint_concepts]:
            get_concept(name)  # unknown names fail here with the list of known ones
        from hf_hardneg.config import HardNegCLIPConfig

        known = {f.name for f in dataclasses.fields(HardNegCLIPConfig)}
        for stage in ("stage1", "stage2"):
            unknown = sorted(set(getattr(self, stage)) - known)
            if unknown:
                raise ValueError(f"demo config: {stage} has unknown training arguments {unknown} "
                                 "(any HardNegCLIPConfig / TrainingArguments field is accepted)")
            reserved = sorted(set(getattr(self, stage)) & {"output_dir", "seed", "concepts", "num_hard_negatives"})
            if reserved:
                raise ValueError(f"demo config: {stage} may not set {reserved}; the demo sets them "
                                 "(use the top-level seed / hard_negative_concepts / num_hard_negatives)")
        self.world_config()  # validate early

    def world_config(self):
        from hf_hardneg.synthetic import WorldConfig

        world = {k: tuple(v) if isinstance(v, list) else v for k, v in self.world.items()}
        try:
            return WorldConfig(**world)
        except TypeError as err:
            known = [f.name for f in dataclasses.fields(WorldConfig)]
            raise ValueError(f"demo config: world: {err}; known world fields: {known}") from None


def load_demo_config(path: str | os.PathLike | None = None, **overrides: Any) -> DemoConfig:
    """Read a demo YAML file (default ``configs/demo.yaml``); keyword arguments override its values."""
    import yaml

    values: dict[str, Any] = {}
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"demo config {path} not found (the default lives in configs/demo.yaml)")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of demo settings, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(DemoConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown demo settings {unknown}; known: {sorted(known)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return DemoConfig(**values)


def _fingerprint(*parts: Any) -> str:
    from hf_hardneg import __version__

    blob = json.dumps([__version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _data_fingerprint(cfg: DemoConfig) -> str:
    """Changes with the world, the split sizes, the world seed and the generator's source code."""
    from hf_hardneg import synthetic

    source = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()
    sizes = {"stage1": cfg.stage1_scenes, "stage2": cfg.stage2_scenes, "eval": cfg.eval_scenes}
    return _fingerprint(dataclasses.asdict(cfg.world_config()), sizes, cfg.world_seed, source)


# --------------------------------------------------------------------------- data


def build_demo_datasets(cfg: DemoConfig) -> dict[str, Any]:
    """The three splits (``stage1``, ``stage2``, ``eval``), disjoint scene ranges of one world.

    Rendering is the slow part, so the splits are cached with ``save_to_disk``
    under ``<output_dir>/data/<fingerprint>`` and reloaded while the world and
    sizes are unchanged.
    """
    import datasets

    from hf_hardneg.synthetic import make_synthetic_dataset

    world = cfg.world_config()
    sizes = {"stage1": cfg.stage1_scenes, "stage2": cfg.stage2_scenes, "eval": cfg.eval_scenes}
    root = Path(cfg.output_dir) / "data" / _data_fingerprint(cfg)
    out: dict[str, Any] = {}
    start = 0
    for split, n in sizes.items():
        path = root / split
        if (path / "state.json").is_file():
            out[split] = datasets.load_from_disk(str(path))
        else:
            ds = make_synthetic_dataset(n, seed=cfg.world_seed, config=world, start=start, progress=cfg.progress)
            shutil.rmtree(path, ignore_errors=True)  # a save interrupted earlier
            ds.save_to_disk(str(path))
            out[split] = datasets.load_from_disk(str(path))  # memory-mapped, like any cached dataset
        start += n
    return out


def _tokenizer_texts(data: Mapping[str, Any], concepts: Sequence[str]) -> list[str]:
    """Training captions plus every keyword of the evaluated concepts.

    The keywords make every substituted caption tokenizable: a replacement the
    model never saw gets its own (untrained) token instead of collapsing to
    ``<unk>``, which would make different candidates identical.
    """
    from hf_hardneg.concepts import get_concept

    texts = [*data["stage1"]["coarse_caption"], *data["stage1"]["caption"], *data["stage2"]["caption"]]
    for name in concepts:
        concept = get_concept(name)
        texts.extend(concept.keywords)
        texts.extend(r for reps in concept.substitutions.values() for r in reps)
    return texts


# --------------------------------------------------------------------------- training


def _training_args(cfg: DemoConfig, stage: str, output_dir: Path, **fields: Any):
    import torch

    from hf_hardneg.config import HardNegCLIPConfig

    values: dict[str, Any] = {
        "output_dir": str(output_dir),
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "substitution_seed": cfg.seed,
        "report_to": "none",
        "save_strategy": "no",
        "save_fraction_of_data": 0,
        "logging_steps": 100,
        "dataloader_num_workers": 0,
        "bf16": False,
        "use_cpu": not torch.cuda.is_available(),
        "disable_tqdm": not cfg.progress,
        "dataloader_drop_last": True,
    }
    values.update(getattr(cfg, stage))
    values.update(fields)
    return HardNegCLIPConfig(**values)


def _stage1_fingerprint(cfg: DemoConfig) -> str:
    return _fingerprint(_data_fingerprint(cfg), cfg.seed, cfg.model, cfg.stage1, cfg.eval_concepts)


def train_stage1(cfg: DemoConfig, data: Mapping[str, Any], run_dir: Path, force: bool = False) -> Path:
    """Pretrain a tiny CLIP from scratch on the coarse captions; cached in ``run_dir/stage1``."""
    from hf_hardneg.testing import make_tiny_model
    from hf_hardneg.trainer import HardNegCLIPTrainer

    out = run_dir / "stage1"
    stamp = out / "demo_stage1.json"
    key = _stage1_fingerprint(cfg)
    if not force and stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == key:
        logger.info("reusing the stage-1 checkpoint in %s (same configuration)", out)
        print(f"[demo] stage 1: reusing {out} (delete it or pass --retrain-stage1 to train it again)", flush=True)
        return out
    if out.exists():
        shutil.rmtree(out)
    print("[demo] stage 1: pretraining a tiny CLIP from scratch on coarse (object-only) captions", flush=True)
    model_kwargs = dict(cfg.model)
    model, tokenizer, image_processor = make_tiny_model(_tokenizer_texts(data, cfg.eval_concepts),
                                                        seed=cfg.seed, **model_kwargs)
    args = _training_args(cfg, "stage1", out / "trainer")
    trainer = HardNegCLIPTrainer(model, args, train_dataset=data["stage1"], processing_class=tokenizer,
                                 image_processor=image_processor, caption_column="coarse_caption")
    trainer.train()
    trainer.save_model(str(out))
    shutil.rmtree(out / "trainer", ignore_errors=True)
    stamp.write_text(json.dumps({"fingerprint": key, "steps": trainer.state.global_step}, indent=2) + "\n")
    return out


def train_stage2(cfg: DemoConfig, data: Mapping[str, Any], stage1_dir: Path, run_dir: Path, name: str,
                 num_hard_negatives: int) -> tuple[Path, list[dict], dict[str, Any]]:
    """Continue pretraining the stage-1 model on detailed captions.

    Returns the model folder, the checkpoint history of the
    :class:`~hf_hardneg.evaluation.ConceptEvalCallback` and a few facts about
    the run (rows trained on, steps, the last training log).

    Both runs train on the same rows (those with a keyword of
    ``hard_negative_concepts``), in the same order, for the same steps; they
    differ only in ``num_hard_negatives``.
    """
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from hf_hardneg.evaluation import ConceptEvalCallback
    from hf_hardneg.data.prepare import apply_concepts
    from hf_hardneg.trainer import HardNegCLIPTrainer

    out = run_dir / name
    if out.exists():
        shutil.rmtree(out)
    kind = "classic CLIP loss" if num_hard_negatives == 0 else f"{num_hard_negatives} hard negative(s) per image"
    print(f"[demo] stage 2 ({name}): continued pretraining on detailed captions, {kind}", flush=True)
    model = AutoModel.from_pretrained(stage1_dir)
    tokenizer = AutoTokenizer.from_pretrained(stage1_dir)
    image_processor = AutoImageProcessor.from_pretrained(stage1_dir)
    args = _training_args(cfg, "stage2", out, concepts=list(cfg.hard_negative_concepts),
                          num_hard_negatives=num_hard_negatives, save_strategy="steps",
                          save_steps=cfg.eval_every, save_total_limit=1, save_only_model=True, run_name=name)
    callback = ConceptEvalCallback(
        data["eval"], cfg.checkpoint_concepts, tokenizer, image_processor, output_dir=out, run_name=name,
        max_examples=cfg.checkpoint_eval_examples, batch_size=cfg.eval_batch_size, plot=False,
        evaluate_on_epoch_end=False, seed=0)
    # the paper's per-concept subset for both runs (the trainer applies it too; done here to share the rows)
    train_dataset = apply_concepts(data["stage2"], args)
    trainer = HardNegCLIPTrainer(model, args, train_dataset=train_dataset, processing_class=tokenizer,
                                 image_processor=image_processor, callbacks=[callback])
    trainer.train()
    trainer.save_model(str(out))
    for ckpt in out.glob("checkpoint-*"):
        shutil.rmtree(ckpt, ignore_errors=True)
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry or "train_loss" in entry]
    facts = {"train_rows": len(train_dataset), "steps": trainer.state.global_step,
             "last_train_log": train_logs[-1] if train_logs else {}}
    return out, callback.history, facts


def evaluate_checkpoint(cfg: DemoConfig, model_dir: Path, eval_dataset: Any, name: str) -> dict[str, Any]:
    """Concept accuracy (all of ``eval_concepts``) and retrieval on the held-out scenes, all examples."""
    from hf_hardneg.evaluation import evaluate_model

    return evaluate_model(str(model_dir), tasks=("concept", "retrieval"), sources={"coco": eval_dataset},
                          concepts=list(cfg.eval_concepts), batch_size=cfg.eval_batch_size,
                          device="auto", progress=cfg.progress, name=name)


def headline(results: Mapping[str, Any], concepts: Sequence[str]) -> dict[str, float]:
    """``{concept: accuracy, ..., "t2i_R@5": recall}`` from an ``evaluate_model`` result."""
    concept_metrics = results["tasks"]["concept"]["metrics"]
    row = {c: float(concept_metrics[c]["accuracy"]) for c in concepts if c in concept_metrics}
    row[RETRIEVAL_KEY] = float(results["tasks"]["retrieval"]["metrics"][RETRIEVAL_KEY])
    return row


def _chance(results: Mapping[str, Any], concepts: Sequence[str]) -> dict[str, float]:
    metrics = results["tasks"]["concept"]["metrics"]
    return {c: metrics[c].get("chance") for c in concepts if c in metrics and isinstance(metrics[c], dict)}


def _label(name: str) -> str:
    return RUN_LABELS.get(name) or (name.upper() if name.startswith("hn") else name)


def format_table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str],
                 chance: Mapping[str, Any] | None = None) -> str:
    """Markdown table, one row per model; values are floats or (mean, std) pairs."""

    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, (tuple, list)):
            return f"{v[0]:.3f} ± {v[1]:.3f}"
        return f"{v:.3f}"

    header = ["model", *[c.replace("_", " ") for c in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    if chance:
        lines.append("| chance | " + " | ".join(cell(chance.get(c)) for c in columns) + " |")
    for name, values in rows.items():
        lines.append(f"| {_label(name)} | " + " | ".join(cell(values.get(c)) for c in columns) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- pipeline


def run_demo(cfg: DemoConfig, retrain_stage1: bool = False) -> dict[str, Any]:
    """Run stage 1 (or reuse it), classic and HN1 stage 2, and the evaluation for ``cfg.seed``.

    Returns (and writes to ``<output_dir>/seed<N>/demo_results.json``) the
    headline numbers per model, the full evaluation results, the checkpoint
    histories and timings.
    """
    import torch

    from hf_hardneg.evaluation import plot_tradeoff

    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    run_dir = Path(cfg.output_dir) / f"seed{cfg.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = build_demo_datasets(cfg)
    timings["data_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    stage1_dir = train_stage1(cfg, data, run_dir, force=retrain_stage1)
    timings["stage1_s"] = time.perf_counter() - t

    histories: dict[str, list[dict]] = {}
    runs: dict[str, dict[str, Any]] = {}
    model_dirs = {"stage1": stage1_dir}
    for name, k in (("classic", 0), (f"hn{cfg.num_hard_negatives}", cfg.num_hard_negatives)):
        t = time.perf_counter()
        model_dirs[name], histories[name], runs[name] = train_stage2(cfg, data, stage1_dir, run_dir, name, k)
        timings[f"{name}_s"] = time.perf_counter() - t

    t = time.perf_counter()
    print("[demo] evaluating the three models on held-out scenes", flush=True)
    results = {name: evaluate_checkpoint(cfg, path, data["eval"], name) for name, path in model_dirs.items()}
    timings["evaluation_s"] = time.perf_counter() - t

    plots = {}
    for concept in cfg.checkpoint_concepts:
        plots[concept] = str(plot_tradeoff(
            {_label(name): points for name, points in histories.items()},
            run_dir / f"tradeoff_{concept}.png", concept=concept,
            title=f"Synthetic world, seed {cfg.seed}: {concept} accuracy vs. text-to-image R@5",
            dataset_name="held-out synthetic scenes"))
    timings["total_s"] = time.perf_counter() - t0

    summary = {name: headline(res, cfg.eval_concepts) for name, res in results.items()}
    report = {
        "seed": cfg.seed,
        "config": dataclasses.asdict(cfg),
        "summary": summary,
        "chance": _chance(results["stage1"], cfg.eval_concepts),
        "results": results,
        "histories": histories,
        "stage2_runs": runs,
        "plots": plots,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (run_dir / "demo_results.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    columns = [*cfg.eval_concepts, RETRIEVAL_KEY]
    table = format_table(summary, columns, report["chance"])
    (run_dir / "demo_results.md").write_text(
        f"# Demo results, seed {cfg.seed}\n\nConcept accuracy (ties count against the true caption) and "
        f"text-to-image Recall@5 on {cfg.eval_scenes} held-out scenes.\n\n{table}\n", encoding="utf-8")
    print(f"\n[demo] seed {cfg.seed}: concept accuracy and {RETRIEVAL_KEY} on {cfg.eval_scenes} held-out scenes "
          f"(ties count against the true caption)\n{table}\n"
          f"[demo] wrote {run_dir / 'demo_results.json'} and trade-off plots {run_dir}/tradeoff_*.png "
          f"({timings['total_s']:.0f} s)", flush=True)
    return report


def summarize_seeds(reports: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and sample standard deviation (0 for one seed) of every headline number over seeds."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name in reports[0]["summary"]:
        out[name] = {}
        for metric in reports[0]["summary"][name]:
            vals = [r["summary"][name][metric] for r in reports]
            spread = statistics.stdev(vals) if len(vals) > 1 else 0.0
            out[name][metric] = (statistics.fmean(vals), spread)
    return out


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m hf_hardneg.demo",
        description="Offline demo: a tiny CLIP pretrained on coarse captions of a synthetic world, then "
                    "continued pretraining with the classic loss and with hard negatives, side by side.")
    p.add_argument("--config", default=None, help=f"demo YAML file (default: {DEFAULT_CONFIG})")
    p.add_argument("--output-dir", default=None, help="where data, checkpoints and results go")
    p.add_argument("--seed", type=int, default=None, help="training seed (default from the config)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="run the whole pipeline once per seed and report mean and standard deviation")
    p.add_argument("--num-threads", type=int, default=None,
                   help="torch CPU threads (default: the config's num_threads, 1 in configs/demo.yaml)")
    p.add_argument("--retrain-stage1", action="store_true", help="ignore a cached stage-1 checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the network
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # weight loading/saving bars; training bars stay
    overrides = {"output_dir": args.output_dir, "num_threads": args.num_threads,
                 "progress": False if args.no_progress else None}
    seeds = args.seeds or [args.seed]
    reports = []
    for seed in seeds:
        cfg = load_demo_config(args.config, seed=seed, **overrides)
        reports.append(run_demo(cfg, retrain_stage1=args.retrain_stage1))
    if len(reports) > 1:
        cfg = load_demo_config(args.config, **overrides)
        stats = summarize_seeds(reports)
        columns = [*cfg.eval_concepts, RETRIEVAL_KEY]
        table = format_table(stats, columns, reports[0]["chance"])
        seeds_txt = ", ".join(str(r["seed"]) for r in reports)
        out = Path(cfg.output_dir)
        (out / "demo_summary.json").write_text(json.dumps(
            {"seeds": [r["seed"] for r in reports],
             "mean_std": {n: {m: list(v) for m, v in row.items()} for n, row in stats.items()},
             "per_seed": {str(r["seed"]): r["summary"] for r in reports},
             "timings_s": {str(r["seed"]): r["timings_s"] for r in reports}}, indent=2) + "\n", encoding="utf-8")
        (out / "demo_summary.md").write_text(f"# Demo over seeds {seeds_txt}: mean ± standard deviation\n\n"
                                             f"{table}\n", encoding="utf-8")
        print(f"\n[demo] seeds {seeds_txt}: mean ± standard deviation\n{table}\n"
              f"[demo] wrote {out / 'demo_summary.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

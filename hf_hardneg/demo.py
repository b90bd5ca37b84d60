"""`python -m hf_hardneg.demo` (what `make demo` runs): classic vs hard-negative training, offline, in minutes.

The demo reproduces the paper's setting in miniature on the synthetic world of
:mod:`hf_hardneg.synthetic`, through the library's real training and
evaluation path (:class:`~hf_hardneg.trainer.HardNegCLIPTrainer`,
:mod:`hf_hardneg.loss`, :mod:`hf_hardneg.evaluation`):

1. **Stage 1, "alt-text" pretraining** of a tiny CLIP from scratch on
   ``coarse_caption`` (object nouns only). Like CLIP's web pretraining, it never
   needs colour, size or position to tell a batch apart. The checkpoint is cached
   under ``<output_dir>/seed<N>/stage1`` and reused while the configuration is unchanged.
2. **Stage 2, continued pretraining** on the detailed captions, from the same
   stage-1 weights, on the same rows (the scenes whose caption names every
   concept), in the same order, for the same steps: one *classic* run (CLIP's
   loss) and one *HN* run per concept (``hn_object``, ``hn_color``,
   ``hn_location``, ``hn_size``: one substituted caption of that concept per image
   replaces one random in-batch negative, the paper's recipe). The runs are
   independent and run ``parallel_runs`` at a time.
3. **Evaluation** of every model on the held-out scenes: concept accuracy per
   concept (the true caption must beat every substitution of its first keyword;
   ties count against it), text-to-image Recall@5 and, on InpaintCOCO-style pairs
   of the held-out scenes (:func:`~hf_hardneg.synthetic.make_edited_pairs`), the
   paper's Equation (1) pair accuracy. The checkpoint evaluations behind the
   Figure-4 plots use the same held-out scenes, all of them, so a plot's last
   point is the table's value.

With ``image_negatives`` (``--image-negatives``), two more runs per concept in
``image_negative_concepts`` compare text-only and text-and-image hard negatives
made from edited pairs of the stage-2 scenes (``edit_<concept>`` and
``edit_<concept>_img``; both train on the same original and edited rows, the
second also scores the other image of its pair as a negative).

Why two stages: trained from scratch on detailed captions, a small world
teaches colour through random in-batch negatives alone, leaving nothing for
hard negatives to add. The paper continues the pretraining of a model whose
pretraining never needed the concept, which is what stage 1 provides.

Everything is set in ``configs/demo.yaml`` (see :class:`DemoConfig`); flags
override the file. ``--seeds 0 1 2 3 4`` repeats the whole pipeline per seed
and prints mean, spread and on how many seeds each effect held.
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

__all__ = ["DemoConfig", "StageTwoRun", "load_demo_config", "build_demo_datasets", "stage2_runs", "train_stage1",
           "train_stage2", "evaluate_checkpoint", "run_demo", "summarize_seeds", "effects", "main"]

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
RUN_LABELS = {"stage1": "stage 1 (start)", "classic": "classic"}
RETRIEVAL_KEY = "t2i_R@5"
PAIR_KEY = "pair_accuracy"  # Equation (1) on the held-out edited pairs


# Defaults equal configs/demo.yaml (a test keeps them in sync), so an installed package without
# the configs/ folder runs the same demo.
def _default_stage1() -> dict[str, Any]:
    return {"max_steps": 800, "learning_rate": 1e-3, "lr_scheduler_type": "cosine", "warmup_steps": 0.05,
            "per_device_train_batch_size": 64}


def _default_stage2() -> dict[str, Any]:
    return {"max_steps": 1200, "learning_rate": 1e-3, "lr_scheduler_type": "constant",
            "per_device_train_batch_size": 64}


@dataclass
class DemoConfig:
    """Everything the demo does, in one place (``configs/demo.yaml`` mirrors it).

    ``world`` holds :class:`~hf_hardneg.synthetic.WorldConfig` fields; ``model``
    the arguments of :func:`~hf_hardneg.testing.make_tiny_model`; ``stage1`` and
    ``stage2`` any :class:`~hf_hardneg.config.HardNegCLIPConfig` (hence
    ``TrainingArguments``) fields. The world's scenes are fixed by
    ``world_seed``; ``seed`` drives initialisation, data order and the
    hard-negative draws, and is shared by all stage-2 runs.

    ``concepts``: one HN run per concept, each with ``num_hard_negatives``
    substitutions of that concept per image; all of them are evaluated.
    ``checkpoint_concepts`` (default: ``concepts``) are measured every
    ``eval_every`` stage-2 steps on all held-out scenes, for the trade-off plots;
    the *object* concept has 80 candidates per caption, which makes it the slow
    one to evaluate at every checkpoint. Zero-shot classification of the world's
    objects is measured on ``zeroshot_scenes`` held-out one-object scenes, for
    every model and for a WiSE-FT interpolation (``wise_ft_alpha``) between the
    stage-1 weights and those of ``wise_ft_run`` (``None``: none). ``image_negatives`` adds the
    text-only/text-and-image comparison for ``image_negative_concepts``.
    ``parallel_runs`` stage-2 runs train at once, each in its own process with
    ``num_threads`` torch threads (``None``: torch's default).
    """

    output_dir: str = "outputs/demo"
    seed: int = 0
    world_seed: int = 0
    world: dict[str, Any] = field(default_factory=lambda: {
        "image_size": 32, "layout": "grid", "min_objects": 1, "max_objects": 2, "p_relation": 0.0, "p_side": 1.0})
    stage1_scenes: int = 16000
    stage2_scenes: int = 16000
    eval_scenes: int = 1000
    model: dict[str, Any] = field(default_factory=lambda: {
        "kind": "clip", "image_size": 32, "patch_size": 8, "hidden_size": 64, "num_layers": 2,
        "projection_dim": 64, "max_length": 40})
    stage1: dict[str, Any] = field(default_factory=_default_stage1)
    stage2: dict[str, Any] = field(default_factory=_default_stage2)
    concepts: list[str] = field(default_factory=lambda: ["object", "color", "location", "size"])
    num_hard_negatives: int = 1
    eval_every: int = 300
    checkpoint_concepts: list[str] | None = field(default_factory=lambda: ["color", "location", "size"])
    image_negatives: bool = False
    image_negative_concepts: list[str] = field(default_factory=lambda: ["color", "size"])
    zeroshot_scenes: int = 360
    wise_ft_run: str | None = "hn_color"
    wise_ft_alpha: float = 0.5
    eval_batch_size: int = 256
    parallel_runs: int = 5
    num_threads: int | None = 1
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("stage1_scenes", "stage2_scenes", "eval_scenes", "eval_every", "parallel_runs",
                     "zeroshot_scenes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"demo config: {name} must be >= 1, got {getattr(self, name)}")
        if self.num_hard_negatives < 1:
            raise ValueError("demo config: num_hard_negatives must be >= 1 (the classic run is always included)")
        if not self.concepts:
            raise ValueError("demo config: concepts is empty; name at least one concept")
        from hf_hardneg.concepts import get_concept
        from hf_hardneg.synthetic import EDITABLE_CONCEPTS

        if self.checkpoint_concepts is None:
            self.checkpoint_concepts = list(self.concepts)
        for name in [*self.concepts, *self.checkpoint_concepts, *self.image_negative_concepts]:
            get_concept(name)  # unknown names fail here with the list of known ones
        not_editable = [c for c in self.image_negative_concepts if c not in EDITABLE_CONCEPTS]
        if not_editable:
            raise ValueError(f"demo config: image_negative_concepts {not_editable}: the world can edit only "
                             f"{list(EDITABLE_CONCEPTS)}")
        from hf_hardneg.config import HardNegCLIPConfig

        known = {f.name for f in dataclasses.fields(HardNegCLIPConfig)}
        for stage in ("stage1", "stage2"):
            unknown = sorted(set(getattr(self, stage)) - known)
            if unknown:
                raise ValueError(f"demo config: {stage} has unknown training arguments {unknown} "
                                 "(any HardNegCLIPConfig / TrainingArguments field is accepted)")
            reserved = sorted(set(getattr(self, stage)) & {"output_dir", "seed", "concepts", "num_hard_negatives",
                                                           "num_hard_negative_images"})
            if reserved:
                raise ValueError(f"demo config: {stage} may not set {reserved}; the demo sets them "
                                 "(use the top-level seed / concepts / num_hard_negatives)")
        runs = {"classic", *(f"hn_{c}" for c in self.concepts)}
        if self.wise_ft_run is not None and self.wise_ft_run not in runs:
            raise ValueError(f"demo config: wise_ft_run {self.wise_ft_run!r} is not a stage-2 run; choose one of "
                             f"{sorted(runs)} or null")
        if not 0.0 <= float(self.wise_ft_alpha) <= 1.0:
            raise ValueError(f"demo config: wise_ft_alpha must be in [0, 1], got {self.wise_ft_alpha}")
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
    sizes = {"stage1": cfg.stage1_scenes, "stage2": cfg.stage2_scenes, "eval": cfg.eval_scenes,
             "zeroshot": cfg.zeroshot_scenes}
    return _fingerprint(dataclasses.asdict(cfg.world_config()), sizes, cfg.world_seed, source)


# --------------------------------------------------------------------------- data


def _cached(path: Path, make):
    """``load_from_disk(path)``, building and saving it with ``make()`` first when it is not there."""
    import datasets

    if not (path / "state.json").is_file():
        ds = make()
        shutil.rmtree(path, ignore_errors=True)  # a save interrupted earlier
        ds.save_to_disk(str(path))
    return datasets.load_from_disk(str(path))  # memory-mapped, like any cached dataset


class _NamesEveryConcept:
    """Row filter (picklable, so ``datasets`` can fingerprint it): the caption names every concept."""

    def __init__(self, concepts: Sequence[str]):
        self.concepts = tuple(concepts)

    def __call__(self, caption: str) -> bool:
        from hf_hardneg.substitution import find_keywords

        return all(find_keywords(caption, c) for c in self.concepts)


def build_demo_datasets(cfg: DemoConfig) -> dict[str, Any]:
    """The splits of one world, disjoint scene ranges, cached under ``<output_dir>/data/<fingerprint>``.

    ``stage1``, ``stage2`` and ``eval`` are rendered scenes; ``stage2_rows`` are the
    stage-2 scenes whose caption names every one of ``cfg.concepts`` (what every
    stage-2 run trains on; how many were left out is in ``counts``); ``eval_pairs``
    are InpaintCOCO-style edited pairs of the held-out scenes; with
    ``image_negatives``, ``edits_<concept>`` are edited pairs of the stage-2 scenes.
    """
    from hf_hardneg.synthetic import make_edited_pairs, make_synthetic_dataset

    world = cfg.world_config()
    sizes = {"stage1": cfg.stage1_scenes, "stage2": cfg.stage2_scenes, "eval": cfg.eval_scenes}
    root = Path(cfg.output_dir) / "data" / _data_fingerprint(cfg)
    out: dict[str, Any] = {}
    starts: dict[str, int] = {}
    start = 0
    for split, n in sizes.items():
        starts[split] = start
        out[split] = _cached(root / split, lambda n=n, start=start: make_synthetic_dataset(
            n, seed=cfg.world_seed, config=world, start=start, progress=cfg.progress))
        start += n
    keep = _NamesEveryConcept(cfg.concepts)
    rows_key = _fingerprint(sorted(cfg.concepts))
    out["stage2_rows"] = _cached(root / f"stage2_rows_{rows_key}", lambda: out["stage2"].filter(
        keep, input_columns="caption", desc="stage-2 rows naming every concept"))
    out["eval_pairs"] = _cached(root / "eval_pairs", lambda: make_edited_pairs(
        cfg.eval_scenes, seed=cfg.world_seed, config=world, start=starts["eval"]))
    one_object = dataclasses.replace(world, min_objects=1, max_objects=1)
    out["zeroshot"] = _cached(root / "zeroshot", lambda: make_synthetic_dataset(
        cfg.zeroshot_scenes, seed=cfg.world_seed, config=one_object, start=start))
    if cfg.image_negatives:
        for concept in cfg.image_negative_concepts:
            out[f"edits_{concept}"] = _cached(root / f"edits_{concept}", lambda concept=concept: make_edited_pairs(
                cfg.stage2_scenes, seed=cfg.world_seed, config=world, start=starts["stage2"], concepts=[concept],
                progress=cfg.progress))
    out["root"] = root
    out["counts"] = {"stage2_scenes": len(out["stage2"]), "stage2_rows": len(out["stage2_rows"]),
                     "stage2_left_out": len(out["stage2"]) - len(out["stage2_rows"]),
                     "eval_scenes": len(out["eval"]), "eval_pairs": len(out["eval_pairs"]),
                     "zeroshot_scenes": len(out["zeroshot"])}
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
    return _fingerprint(_data_fingerprint(cfg), cfg.seed, cfg.model, cfg.stage1, sorted(cfg.concepts))


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
    model, tokenizer, image_processor = make_tiny_model(_tokenizer_texts(data, cfg.concepts),
                                                        seed=cfg.seed, **dict(cfg.model))
    args = _training_args(cfg, "stage1", out / "trainer")
    trainer = HardNegCLIPTrainer(model, args, train_dataset=data["stage1"], processing_class=tokenizer,
                                 image_processor=image_processor, caption_column="coarse_caption")
    trainer.train()
    trainer.save_model(str(out))
    shutil.rmtree(out / "trainer", ignore_errors=True)
    stamp.write_text(json.dumps({"fingerprint": key, "steps": trainer.state.global_step}, indent=2) + "\n")
    return out


@dataclass(frozen=True)
class StageTwoRun:
    """One stage-2 run: its name, the concept of its hard negatives (``None``: classic) and its rows.

    ``rows`` names a split of :func:`build_demo_datasets`; ``image_negatives``
    keeps the ``negative_image_1`` column of edited-pair rows (the other image of
    the pair), otherwise it is dropped.
    """

    name: str
    concept: str | None
    num_hard_negatives: int
    rows: str = "stage2_rows"
    edited_pairs: bool = False
    image_negatives: bool = False


def stage2_runs(cfg: DemoConfig) -> list[StageTwoRun]:
    """The classic run, one HN run per concept and, with ``image_negatives``, the edited-pair comparison."""
    runs = [StageTwoRun("classic", None, 0)]
    runs += [StageTwoRun(f"hn_{c}", c, cfg.num_hard_negatives) for c in cfg.concepts]
    if cfg.image_negatives:
        for c in cfg.image_negative_concepts:
            runs.append(StageTwoRun(f"edit_{c}", c, 1, rows=f"edits_{c}", edited_pairs=True))
            runs.append(StageTwoRun(f"edit_{c}_img", c, 1, rows=f"edits_{c}", edited_pairs=True,
                                    image_negatives=True))
    return runs


def _rows_for(run: StageTwoRun, data: Mapping[str, Any]):
    """The run's training rows: scenes for the substitution runs, both sides of each pair for edit runs."""
    if not run.edited_pairs:
        return data[run.rows]
    from hf_hardneg.data.paired_edits import paired_edit_rows

    rows = paired_edit_rows(data[run.rows], pairing="both")
    return rows if run.image_negatives else rows.remove_columns("negative_image_1")


def train_stage2(cfg: DemoConfig, data: Mapping[str, Any], stage1_dir: Path, run_dir: Path,
                 run: StageTwoRun) -> tuple[Path, list[dict], dict[str, Any]]:
    """Continue pretraining the stage-1 model on detailed captions, as ``run`` says.

    Returns the model folder, the checkpoint history of the
    :class:`~hf_hardneg.evaluation.ConceptEvalCallback` (all held-out scenes, the
    table's evaluation) and a few facts about the run (rows, steps, the last
    training log).
    """
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback

    from hf_hardneg.evaluation import ConceptEvalCallback
    from hf_hardneg.trainer import HardNegCLIPTrainer

    out = run_dir / run.name
    if out.exists():
        shutil.rmtree(out)
    model = AutoModel.from_pretrained(stage1_dir)
    tokenizer = AutoTokenizer.from_pretrained(stage1_dir)
    image_processor = AutoImageProcessor.from_pretrained(stage1_dir)
    fields: dict[str, Any] = {"num_hard_negatives": run.num_hard_negatives, "save_strategy": "steps",
                              "save_steps": cfg.eval_every, "save_total_limit": 1, "save_only_model": True,
                              "run_name": run.name, "disable_tqdm": True}
    if run.concept is not None and not run.edited_pairs:
        fields["concepts"] = [run.concept]
    if run.image_negatives:
        fields["num_hard_negative_images"] = 1
    args = _training_args(cfg, "stage2", out, **fields)
    callback = ConceptEvalCallback(
        data["eval"], cfg.checkpoint_concepts, tokenizer, image_processor, output_dir=out, run_name=run.name,
        batch_size=cfg.eval_batch_size, plot=False, evaluate_on_epoch_end=False, seed=0,
        dataset_name="held-out synthetic scenes")
    train_dataset = _rows_for(run, data)
    trainer = HardNegCLIPTrainer(model, args, train_dataset=train_dataset, processing_class=tokenizer,
                                 image_processor=image_processor, callbacks=[callback])
    trainer.remove_callback(PrinterCallback)  # runs train side by side: their logs go to the report, not stdout
    trainer.train()
    if not callback.history or callback.history[-1]["step"] != trainer.state.global_step:
        trainer.evaluate()  # the final weights get their point (the table's evaluation)
    trainer.save_model(str(out))
    for ckpt in out.glob("checkpoint-*"):
        shutil.rmtree(ckpt, ignore_errors=True)
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry or "train_loss" in entry]
    facts = {"train_rows": len(train_dataset), "steps": trainer.state.global_step,
             "last_train_log": train_logs[-1] if train_logs else {}}
    return out, callback.history, facts


def _timed_stage2(cfg: DemoConfig, data: Mapping[str, Any], stage1_dir: Path, run_dir: Path, run: StageTwoRun):
    """:func:`train_stage2` with its wall time in the facts."""
    t = time.perf_counter()
    out, history, facts = train_stage2(cfg, data, stage1_dir, run_dir, run)
    facts["seconds"] = round(time.perf_counter() - t, 1)
    return out, history, facts


def _train_stage2_in_process(cfg: DemoConfig, stage1_dir: str, run_dir: str, run: StageTwoRun):
    """Entry point of a worker process: reload the cached data (memory-mapped) and train one run."""
    import torch
    import transformers

    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    data = build_demo_datasets(dataclasses.replace(cfg, progress=False))
    out, history, facts = _timed_stage2(cfg, data, Path(stage1_dir), Path(run_dir), run)
    return str(out), history, facts


def _run_stage2(cfg: DemoConfig, data: Mapping[str, Any], stage1_dir: Path, run_dir: Path,
                runs: Sequence[StageTwoRun]) -> dict[str, tuple[Path, list[dict], dict[str, Any]]]:
    """All stage-2 runs, ``cfg.parallel_runs`` at a time (separate processes) or one after another."""
    for run in runs:
        kind = ("classic CLIP loss" if run.concept is None else
                f"{run.num_hard_negatives} {run.concept} hard negative(s) per image"
                + (" from edited pairs" if run.edited_pairs else "")
                + (", plus the edited image" if run.image_negatives else ""))
        print(f"[demo] stage 2 ({run.name}): {kind}", flush=True)
    results: dict[str, tuple[Path, list[dict], dict[str, Any]]] = {}
    if cfg.parallel_runs <= 1 or len(runs) == 1:
        for run in runs:  # in this process, on the data already loaded
            results[run.name] = out, history, facts = _timed_stage2(cfg, data, stage1_dir, run_dir, run)
            print(f"[demo]   {run.name} done ({facts['seconds']:.0f} s)", flush=True)
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # no forked torch/tokenizer state
    with ProcessPoolExecutor(max_workers=min(cfg.parallel_runs, len(runs)), mp_context=context) as pool:
        futures = {pool.submit(_train_stage2_in_process, cfg, str(stage1_dir), str(run_dir), run): run.name
                   for run in runs}
        for future in as_completed(futures):
            out, history, facts = future.result()
            results[futures[future]] = (Path(out), history, facts)
            print(f"[demo]   {futures[future]} done ({facts['seconds']:.0f} s)", flush=True)
    return {run.name: results[run.name] for run in runs}


# --------------------------------------------------------------------------- evaluation


#: zero-shot prompts: the world's own caption templates around "the <object>"
ZEROSHOT_TEMPLATES = ("the {}", "a photo of the {}", "a picture of the {}", "an image of the {}")
ZEROSHOT_KEY = "zeroshot_top1"


def zeroshot_set(cfg: DemoConfig, data: Mapping[str, Any]):
    """One-object held-out scenes labelled with their object: the world's classification task."""
    from hf_hardneg.evaluation.tasks import ClassificationSet

    names = list(cfg.world_config().objects)
    ds = data["zeroshot"]
    labels = [names.index(objects[0]["noun"]) for objects in ds["objects"]]
    return ClassificationSet(list(ds["image"]), labels, names, notes={"set": "held-out one-object scenes"})


def evaluate_checkpoint(cfg: DemoConfig, model_dir: Path, data: Mapping[str, Any], name: str,
                        zeroshot=None) -> dict[str, Any]:
    """Concept accuracy, retrieval, Equation-(1) pair accuracy and zero-shot accuracy on held-out scenes.

    ``zeroshot``: the :func:`zeroshot_set` (made here when not given; pass it to evaluate several models).
    """
    from hf_hardneg.evaluation import evaluate_model

    zeroshot = zeroshot_set(cfg, data) if zeroshot is None else zeroshot
    return evaluate_model(str(model_dir), tasks=("concept", "retrieval", "inpaintcoco", "zeroshot"),
                          sources={"coco": data["eval"], "inpaintcoco": data["eval_pairs"],
                                   "zeroshot": {"source": zeroshot,
                                                "templates": list(ZEROSHOT_TEMPLATES)}},
                          concepts=list(cfg.concepts), batch_size=cfg.eval_batch_size,
                          device="auto", progress=False, name=name)


def wise_ft(cfg: DemoConfig, stage1_dir: Path, finetuned_dir: Path, run_dir: Path) -> Path:
    """The WiSE-FT interpolation of the stage-1 and a stage-2 model, saved as a plain checkpoint."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from hf_hardneg.interpolation import interpolate_state_dicts

    out = run_dir / "wise_ft"
    model = interpolate_state_dicts(AutoModel.from_pretrained(stage1_dir), AutoModel.from_pretrained(finetuned_dir),
                                    cfg.wise_ft_alpha)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(finetuned_dir).save_pretrained(out)
    AutoImageProcessor.from_pretrained(finetuned_dir).save_pretrained(out)
    return out


def headline(results: Mapping[str, Any], concepts: Sequence[str]) -> dict[str, float]:
    """``{concept: accuracy, ..., "t2i_R@5": recall, "pair_accuracy": ...}`` from an ``evaluate_model`` result."""
    tasks = results["tasks"]
    concept_metrics = tasks["concept"]["metrics"]
    row = {c: float(concept_metrics[c]["accuracy"]) for c in concepts if c in concept_metrics}
    row[RETRIEVAL_KEY] = float(tasks["retrieval"]["metrics"][RETRIEVAL_KEY])
    if "inpaintcoco" in tasks:
        pairs = tasks["inpaintcoco"]["metrics"]
        row[PAIR_KEY] = float(pairs["micro_average"]["image_score"])
        for group, values in pairs.items():
            if group in concepts and isinstance(values, Mapping) and values.get("count"):
                row[f"{PAIR_KEY}/{group}"] = float(values["image_score"])
    if "zeroshot" in tasks:
        row[ZEROSHOT_KEY] = float(tasks["zeroshot"]["metrics"]["top1"])
    return row


def _chance(results: Mapping[str, Any], concepts: Sequence[str]) -> dict[str, float]:
    metrics = results["tasks"]["concept"]["metrics"]
    chance = {c: metrics[c].get("chance") for c in concepts if c in metrics and isinstance(metrics[c], dict)}
    if "zeroshot" in results["tasks"]:
        chance[ZEROSHOT_KEY] = results["tasks"]["zeroshot"]["metrics"].get("chance")
    return chance


def _label(name: str) -> str:
    if name == "wise_ft":
        return "WiSE-FT"
    if name in RUN_LABELS:
        return RUN_LABELS[name]
    if name.startswith("hn_"):
        return f"HN {name[3:]}"
    if name.startswith("edit_"):
        concept = name[5:].removesuffix("_img")
        return f"edits {concept}, " + ("text+image" if name.endswith("_img") else "text only")
    return name


def format_table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str],
                 chance: Mapping[str, Any] | None = None, bold: Mapping[str, str] | None = None) -> str:
    """Markdown table, one row per model; values are floats or (mean, std) pairs.

    ``bold`` maps a column to the row whose cell is emphasised (a concept's own HN model).
    """

    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, (tuple, list)):
            return f"{v[0]:.3f} ± {v[1]:.3f}"
        return f"{v:.3f}"

    bold = bold or {}
    header = ["model", *[c.replace("_", " ") for c in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    if chance:
        lines.append("| chance | " + " | ".join(cell(chance.get(c)) for c in columns) + " |")
    for name, values in rows.items():
        cells = [f"**{cell(values.get(c))}**" if bold.get(c) == name else cell(values.get(c)) for c in columns]
        lines.append(f"| {_label(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def effects(reports: Sequence[Mapping[str, Any]], concepts: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per concept: on how many seeds its HN model beat classic on it, and by how much (points).

    Also, for every edited-pair comparison, how often text-and-image negatives beat
    text-only ones on the concept and on the pair accuracy.
    """
    out: dict[str, dict[str, Any]] = {}

    def compare(key: str, better: str, worse: str, metric: str) -> None:
        diffs = [r["summary"][better][metric] - r["summary"][worse][metric] for r in reports
                 if better in r["summary"] and worse in r["summary"]]
        if diffs:
            out[key] = {"better": better, "worse": worse, "metric": metric, "seeds": len(diffs),
                        "wins": sum(d > 0 for d in diffs), "min_points": 100 * min(diffs),
                        "max_points": 100 * max(diffs), "mean_points": 100 * statistics.fmean(diffs)}

    for c in concepts:
        compare(c, f"hn_{c}", "classic", c)
    names = {name for r in reports for name in r["summary"]}
    for name in sorted(names):
        if name.startswith("edit_") and name.endswith("_img"):
            c = name[5:-4]
            compare(f"image_negatives/{c}", name, f"edit_{c}", c)
            compare(f"image_negatives/{c}/{PAIR_KEY}", name, f"edit_{c}", f"{PAIR_KEY}/{c}")
    return out


def describe_effects(found: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One sentence per comparison, e.g. "HN color beats classic on color on 5 of 5 seeds, by +12 to +19 points"."""
    lines = []
    for e in found.values():
        span = (f"{e['min_points']:+.1f} points" if e["seeds"] == 1 else
                f"{e['min_points']:+.1f} to {e['max_points']:+.1f} points, mean {e['mean_points']:+.1f}")
        metric = e["metric"].replace(f"{PAIR_KEY}/", "pair accuracy on ").replace(PAIR_KEY, "pair accuracy")
        lines.append(f"{_label(e['better'])} beats {_label(e['worse'])} on {metric} on {e['wins']} of "
                     f"{e['seeds']} seed{'s' if e['seeds'] > 1 else ''} ({span})")
    return lines


# --------------------------------------------------------------------------- pipeline


def _columns(cfg: DemoConfig) -> list[str]:
    return [*cfg.concepts, RETRIEVAL_KEY, PAIR_KEY, ZEROSHOT_KEY]


def _own_concept(cfg: DemoConfig) -> dict[str, str]:
    return {c: f"hn_{c}" for c in cfg.concepts}


def _tables(cfg: DemoConfig, rows: Mapping[str, Mapping[str, Any]], chance: Mapping[str, Any]) -> str:
    """The main table (stage 1, classic, one HN model per concept) and, with image negatives, the edit table."""
    main = {name: v for name, v in rows.items() if not name.startswith("edit_")}
    text = format_table(main, _columns(cfg), chance, bold=_own_concept(cfg))
    edits = {name: v for name, v in rows.items() if name == "classic" or name.startswith("edit_")}
    if len(edits) > 1:
        columns = [c for concept in cfg.image_negative_concepts for c in (concept, f"{PAIR_KEY}/{concept}")]
        text += ("\n\nText-only vs text-and-image hard negatives from edited pairs (pair accuracy = Equation (1) "
                 "on the held-out edited pairs of that concept):\n\n" + format_table(edits, columns, chance))
    return text


def run_demo(cfg: DemoConfig, retrain_stage1: bool = False) -> dict[str, Any]:
    """Run stage 1 (or reuse it), every stage-2 run and the evaluation for ``cfg.seed``.

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
    counts = data["counts"]
    print(f"[demo] stage 2 trains on the {counts['stage2_rows']} of {counts['stage2_scenes']} scenes whose caption "
          f"names every concept ({counts['stage2_left_out']} left out)", flush=True)
    timings["data_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    stage1_dir = train_stage1(cfg, data, run_dir, force=retrain_stage1)
    timings["stage1_s"] = time.perf_counter() - t

    t = time.perf_counter()
    trained = _run_stage2(cfg, data, stage1_dir, run_dir, stage2_runs(cfg))
    timings["stage2_s"] = time.perf_counter() - t
    model_dirs = {"stage1": stage1_dir, **{name: v[0] for name, v in trained.items()}}
    if cfg.wise_ft_run is not None:
        model_dirs["wise_ft"] = wise_ft(cfg, stage1_dir, model_dirs[cfg.wise_ft_run], run_dir)
    histories = {name: v[1] for name, v in trained.items()}
    runs = {name: v[2] for name, v in trained.items()}

    t = time.perf_counter()
    print(f"[demo] evaluating {len(model_dirs)} models on {cfg.eval_scenes} held-out scenes", flush=True)
    zeroshot = zeroshot_set(cfg, data)  # decoded once for all models
    results = {name: evaluate_checkpoint(cfg, path, data, name, zeroshot) for name, path in model_dirs.items()}
    timings["evaluation_s"] = time.perf_counter() - t

    plots = {}
    for concept in cfg.checkpoint_concepts:
        shown = {_label(name): points for name, points in histories.items()
                 if name == "classic" or name.startswith("hn_")}
        plots[concept] = str(plot_tradeoff(
            shown, run_dir / f"tradeoff_{concept}.png", concept=concept,
            title=f"Synthetic world, seed {cfg.seed}: {concept} accuracy vs. text-to-image R@5",
            dataset_name="held-out synthetic scenes"))
    timings["total_s"] = time.perf_counter() - t0

    summary = {name: headline(res, cfg.concepts) for name, res in results.items()}
    report = {
        "seed": cfg.seed,
        "config": dataclasses.asdict(cfg),
        "counts": counts,
        "summary": summary,
        "chance": _chance(results["stage1"], cfg.concepts),
        "results": results,
        "histories": histories,
        "stage2_runs": runs,
        "plots": plots,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    report["effects"] = effects([report], cfg.concepts)
    (run_dir / "demo_results.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    table = _tables(cfg, summary, report["chance"])
    statements = "\n".join(f"- {line}" for line in describe_effects(report["effects"]))
    what = (f"Concept accuracy (ties count against the true caption), text-to-image Recall@5 and Equation (1) "
            f"pair accuracy on {cfg.eval_scenes} held-out scenes (the plots' last points are these values).")
    (run_dir / "demo_results.md").write_text(
        f"# Demo results, seed {cfg.seed}\n\n{what}\n\n{table}\n\n{statements}\n", encoding="utf-8")
    print(f"\n[demo] seed {cfg.seed}: {what}\n{table}\n{statements}\n"
          f"[demo] wrote {run_dir / 'demo_results.json'} and trade-off plots {run_dir}/tradeoff_*.png "
          f"({timings['total_s']:.0f} s)", flush=True)
    return report


def summarize_seeds(reports: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and sample standard deviation (0 for one seed) of every headline number over seeds."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    names = dict.fromkeys(name for r in reports for name in r["summary"])  # runs of some seeds only count there
    for name in names:
        having = [r for r in reports if name in r["summary"]]
        out[name] = {}
        for metric in having[0]["summary"][name]:
            vals = [r["summary"][name][metric] for r in having if metric in r["summary"][name]]
            spread = statistics.stdev(vals) if len(vals) > 1 else 0.0
            out[name][metric] = (statistics.fmean(vals), spread)
    return out


def write_summary(cfg: DemoConfig, reports: Sequence[Mapping[str, Any]]) -> str:
    """``demo_summary.json``/``.md`` over the seeds' reports; returns the printed text."""
    stats = summarize_seeds(reports)
    table = _tables(cfg, stats, reports[0]["chance"])
    found = effects(reports, cfg.concepts)
    statements = "\n".join(f"- {line}" for line in describe_effects(found))
    seeds_txt = ", ".join(str(r["seed"]) for r in reports)
    out = Path(cfg.output_dir)
    (out / "demo_summary.json").write_text(json.dumps(
        {"seeds": [r["seed"] for r in reports],
         "mean_std": {n: {m: list(v) for m, v in row.items()} for n, row in stats.items()},
         "effects": found,
         "per_seed": {str(r["seed"]): r["summary"] for r in reports},
         "timings_s": {str(r["seed"]): r["timings_s"] for r in reports}}, indent=2) + "\n", encoding="utf-8")
    text = f"seeds {seeds_txt}: mean ± standard deviation\n\n{table}\n\n{statements}\n"
    (out / "demo_summary.md").write_text(f"# Demo over {text}", encoding="utf-8")
    return text


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m hf_hardneg.demo",
        description="Offline demo: a tiny CLIP pretrained on coarse captions of a synthetic world, then "
                    "continued pretraining with the classic loss and with each concept's hard negatives.")
    p.add_argument("--config", default=None, help=f"demo YAML file (default: {DEFAULT_CONFIG})")
    p.add_argument("--output-dir", default=None, help="where data, checkpoints and results go")
    p.add_argument("--seed", type=int, default=None, help="training seed (default from the config)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="run the whole pipeline once per seed and report mean, spread and on how many seeds "
                        "each effect held")
    p.add_argument("--image-negatives", action="store_true", default=None,
                   help="add the text-only vs text-and-image hard-negative runs on edited pairs")
    p.add_argument("--parallel-runs", type=int, default=None, help="stage-2 runs trained at once (processes)")
    p.add_argument("--num-threads", type=int, default=None,
                   help="torch CPU threads per process (default: the config's num_threads, 1 in configs/demo.yaml)")
    p.add_argument("--retrain-stage1", action="store_true", help="ignore a cached stage-1 checkpoint")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: summarise the seeds' demo_results.json already in --output-dir")
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
                 "parallel_runs": args.parallel_runs, "image_negatives": args.image_negatives,
                 "progress": False if args.no_progress else None}
    seeds = args.seeds or [args.seed]
    reports = []
    for seed in seeds:
        cfg = load_demo_config(args.config, seed=seed, **overrides)
        if args.report_only:
            path = Path(cfg.output_dir) / f"seed{cfg.seed}" / "demo_results.json"
            if not path.is_file():
                print(f"[demo] --report-only: {path} is missing; run the demo for seed {cfg.seed} first",
                      file=sys.stderr)
                return 2
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        else:
            reports.append(run_demo(cfg, retrain_stage1=args.retrain_stage1))
    if len(reports) > 1 or args.report_only:
        cfg = load_demo_config(args.config, **overrides)
        text = write_summary(cfg, reports)
        print(f"\n[demo] {text}[demo] wrote {Path(cfg.output_dir) / 'demo_summary.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

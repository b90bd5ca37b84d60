"""The evaluation tasks, in one table: what each is called, how it is scored and how the Hub lists it.

``hf-hardneg evaluate --tasks`` and :func:`~hf_hardneg.evaluation.evaluate_model` run
tasks by these names; model cards name them in their ``model-index`` by ``title`` and
``model_index_type``. The table is plain data (importing it costs nothing): the code
that runs a task is named by ``"module:function"`` and imported when the task runs.

Adding a benchmark whose data gives one of the four set kinds is an adapter (a
function returning a :class:`~hf_hardneg.evaluation.tasks.MultipleChoiceSet`,
``PairedSet`` or ``ClassificationSet``) and one entry here with ``loader=`` pointing
at it; see the README's "Extending" section. Tasks whose data needs more than that
(COCO's two tasks share their images; SugarCrepe finds COCO's images) name their
own ``runner``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Literal

__all__ = ["TASKS", "Task", "register_task"]

Kind = Literal["multiple_choice", "retrieval", "paired", "classification", "triplet"]


@dataclass(frozen=True)
class Task:
    """One evaluation task.

    Args:
        name: what ``--tasks`` and ``sources=`` call it.
        kind: the set it scores: one image against candidate texts (``multiple_choice``), a
            gallery (``retrieval``), two images x two texts (``paired``, Winoground-style),
            class prompts (``classification``) or one image with two true captions and a false
            one (``triplet``, SugarCrepe++).
        title: its ``task_name`` in a model card's ``model-index``.
        model_index_type: its ``task_type`` there.
        label: how results name the data when it comes from the default source.
        loader: ``"module:function"`` returning the task's set from ``source=`` keyword
            arguments (and ``.subset(n, seed)``); used by the generic runner of its kind.
        runner: ``"module:function"`` taking the runner's shared state and returning
            ``(dataset label, kind, metrics)`` (or with a fourth item, a dict of extra entries
            such as ``notes``), for tasks the generic runner cannot do.
        coco_images_argument: for ``runner=...:run_with_coco_images``, the loader argument
            that receives COCO's val2017 folder from ``coco_dir``.
    """

    name: str
    kind: Kind
    title: str
    model_index_type: str = "zero-shot-image-classification"
    label: str | None = None
    loader: str | None = None
    runner: str | None = None
    coco_images_argument: str | None = None

    def __post_init__(self) -> None:
        if (self.loader is None) == (self.runner is None):
            raise ValueError(f"task {self.name!r}: give exactly one of loader= and runner=")
        if self.coco_images_argument is not None and self.loader is None:
            raise ValueError(f"task {self.name!r}: coco_images_argument= needs loader=")

    def load(self, **kwargs: Any):
        """The task's set, from its loader."""
        return _resolve(self.loader)(**kwargs)

    def run_function(self) -> Callable:
        if self.runner is not None:
            return _resolve(self.runner)
        if self.coco_images_argument is not None:
            return _resolve("hf_hardneg.evaluation.runner:run_with_coco_images")
        return _resolve("hf_hardneg.evaluation.runner:run_loaded_task")


def _resolve(path: str) -> Callable:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


#: Task name -> :class:`Task`, in the order ``--tasks`` lists them.
TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add (or replace) a task; returns it."""
    TASKS[task.name] = task
    return task


_RUNNER = "hf_hardneg.evaluation.runner"
_ADAPTERS = "hf_hardneg.evaluation.adapters"
_SUITES = "hf_hardneg.evaluation.compositional"
for _task in (
    Task("concept", "multiple_choice", "Fine-grained concept understanding", runner=f"{_RUNNER}:run_concept"),
    Task("retrieval", "retrieval", "Image-text retrieval", model_index_type="image-text-retrieval",
         runner=f"{_RUNNER}:run_retrieval"),
    Task("inpaintcoco", "paired", "InpaintCOCO: original vs. inpainted image, Equation (1)", label="InpaintCOCO",
         loader=f"{_ADAPTERS}:load_inpaintcoco_pairs"),
    Task("sugarcrepe", "multiple_choice", "SugarCrepe compositionality", runner=f"{_RUNNER}:run_sugarcrepe"),
    Task("aro", "multiple_choice", "ARO attribution, relation and order", runner=f"{_RUNNER}:run_aro"),
    Task("winoground", "paired", "Winoground", label="Winoground", loader=f"{_ADAPTERS}:load_winoground"),
    # the newer compositional suites (hf_hardneg.evaluation.compositional)
    Task("sugarcrepe_pp", "triplet", "SugarCrepe++", label="SugarCrepe++",
         loader=f"{_SUITES}:load_sugarcrepe_pp", coco_images_argument="images_dir"),
    Task("mmvp_vlm", "paired", "MMVP-VLM", label="MMVP-VLM", loader=f"{_SUITES}:load_mmvp_vlm"),
    Task("valse", "multiple_choice", "VALSE", label="VALSE", loader=f"{_SUITES}:load_valse"),
    Task("whatsup", "multiple_choice", "What'sUp spatial relations", label="What'sUp",
         loader=f"{_SUITES}:load_whatsup", coco_images_argument="coco_images_dir"),
    Task("colorswap", "paired", "ColorSwap", label="ColorSwap", loader=f"{_SUITES}:load_colorswap"),
    Task("zeroshot", "classification", "Zero-shot image classification", runner=f"{_RUNNER}:run_zeroshot"),
    # the paper's generalisation sets (Table 2): concept accuracy on other captioned images
    *(Task(name, "multiple_choice", f"Fine-grained concept understanding on {title}",
           runner=f"{_RUNNER}:run_captioned")
      for name, title in (("flickr30k", "Flickr30k"), ("sbu", "SBU Captions"), ("fashion200k", "Fashion200K"),
                          ("nasa_earth_instagram", "NASA Earth Instagram"),
                          ("oldbookillustrations", "Old Book Illustrations"))),
):
    register_task(_task)

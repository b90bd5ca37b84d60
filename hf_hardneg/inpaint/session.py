"""One annotator's session on one concept: the paper's workflow as state, independent of any user interface.

The workflow (appendix A): show a photograph with its captions that hold a keyword of the
concept; mask the object with a prompt (and enlarge the mask) until it fits; inpaint three
candidates from a prompt, retrying as often as needed; choose one, rate it "very good" or
"okay", write the new caption from one of the COCO captions; save, or skip the photograph.
The web app (:mod:`hf_hardneg.inpaint.webapp`) and tests drive this class.

Resuming: the photographs are visited in a fixed random order (the seed is stored), those
with a sample of this concept in the export are done, and skipped ones are kept in a small
state file beside the export (written atomically). A restart after a crash therefore
continues with the next unannotated photograph and loses at most the one in hand.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

import numpy as np
from PIL import Image

from hf_hardneg.concepts import Concept
from hf_hardneg.inpaint import rules
from hf_hardneg.inpaint.catalog import CocoCatalog, CocoPhoto, ImagePool
from hf_hardneg.inpaint.export import ExportFolder, SavedEdit
from hf_hardneg.inpaint.files import atomic_write_json
from hf_hardneg.inpaint.models import Candidate, ClipSegMasker, Inpainter, Mask

__all__ = ["AnnotationSession", "GenerationSettings", "Task"]

STATE_VERSION = 1


@dataclass
class GenerationSettings:
    """Inpainting settings of a session; the web app may change them per request."""

    num_candidates: int = 3
    guidance_scale: float = 7.5
    num_inference_steps: int = 50
    resolution: int = 512
    negative_prompt: str | None = None


@dataclass
class Task:
    """The photograph in hand and what the annotator has made of it so far (lost on a crash, by design)."""

    photo: CocoPhoto
    shown_at: float
    scores: tuple[str, np.ndarray] | None = None  # (mask prompt, CLIPSeg probabilities): a new threshold reuses them
    mask: Mask | None = None
    inpaint_prompt: str | None = None
    candidates: list[Candidate] = field(default_factory=list)
    guidance_scale: float | None = None
    num_inference_steps: int | None = None

    @cached_property
    def image(self) -> Image.Image:
        """The photograph, decoded once per task."""
        with Image.open(self.photo.path) as source:
            return source.convert("RGB")


class AnnotationSession:
    """Offers photographs of one concept, makes masks and candidates, and saves or skips each photograph."""

    def __init__(
        self,
        catalog: CocoCatalog,
        export: ExportFolder,
        concept: str,
        annotator: str,
        masker: ClipSegMasker,
        inpainter: Inpainter,
        *,
        keywords: Concept | None = None,
        seed: int = 0,
        settings: GenerationSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.concept = rules.check_concept(concept)
        if not annotator or not annotator.strip():
            raise ValueError("give an annotator id (--annotator, e.g. your initials); it is saved with every sample")
        if self.concept == "object" and not catalog.has_instances:
            raise ValueError(
                "the object concept needs COCO's instances_val2017.json (objects are replaced only within their "
                "super-category); put it in COCO_DIR/annotations/ or pass --instances"
            )
        self.catalog, self.export, self.annotator = catalog, export, annotator.strip()
        self.masker, self.inpainter = masker, inpainter
        self.settings = settings or GenerationSettings()
        self._clock = clock
        self.state_path = export.root / f".annotate-{self.concept}.json"
        self._state = self._load_state(seed)
        self.pool: ImagePool = catalog.pool(self.concept, keywords, seed=int(self._state["seed"]))
        self._keywords = keywords
        self._task: Task | None = None

    # -- state ---------------------------------------------------------------------------------
    def _load_state(self, seed: int) -> dict[str, Any]:
        if self.state_path.exists():
            try:
                state = json.loads(self.state_path.read_text(encoding="utf-8"))
                if state.get("version") != STATE_VERSION or state.get("concept") != self.concept:
                    raise ValueError("written by another version or for another concept")
                state["seed"] = int(state["seed"])
                state["skipped"] = {str(k): str(v) for k, v in state.get("skipped", {}).items()}
                return state
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise ValueError(
                    f"session state {self.state_path} cannot be read ({err}); delete it to start over "
                    "(saved samples stay; skipped photographs would be offered again)"
                ) from None
        state = {"version": STATE_VERSION, "concept": self.concept, "seed": int(seed), "skipped": {}}
        atomic_write_json(self.state_path, state)  # fixes the order of the photographs for every restart
        return state

    def _save_state(self) -> None:
        atomic_write_json(self.state_path, self._state)

    def remaining(self) -> list[int]:
        done = self.export.done(self.concept)
        skipped = self._state["skipped"]
        return [i for i in self.pool.image_ids if i not in done and str(i) not in skipped]

    def progress(self) -> dict[str, Any]:
        remaining = len(self.remaining())
        saved = len(self.export.done(self.concept) & set(self.pool.image_ids))
        return {
            "concept": self.concept,
            "saved": saved,
            "skipped": len(self._state["skipped"]),
            "remaining": remaining,
            "offered": len(self.pool.image_ids),
            "held_back": self.pool.held_back,
            "saved_by_concept": self.export.counts(),
        }

    # -- the photograph in hand ------------------------------------------------------------------
    def current(self) -> Task | None:
        """The photograph to annotate now (the clock for its duration starts when it is first shown)."""
        if self._task is None:
            remaining = self.remaining()
            if not remaining:
                return None
            photo = self.catalog.photo(remaining[0])
            rules.check_licence(photo)  # the pool never holds one; checked again because this is what gets edited
            self._task = Task(photo, self._clock())
        return self._task

    @property
    def in_hand(self) -> Task | None:
        """The photograph shown now, without choosing a new one (None before the first :meth:`current`)."""
        return self._task

    def captions(self, task: Task) -> list[dict[str, Any]]:
        """The photograph's captions with a keyword of the concept, each with its keyword spans."""
        from hf_hardneg.inpaint.catalog import keyword_concept_for
        from hf_hardneg.substitution import find_keywords

        keywords = self._keywords or keyword_concept_for(self.concept)
        out = []
        for text in task.photo.captions:
            spans = [(m.start, m.end) for m in find_keywords(text, keywords)]
            if spans:
                out.append({"text": text, "keywords": spans})
        return out

    def _require(self, image_id: int | None) -> Task:
        task = self.current()
        if task is None:
            raise ValueError(f"every photograph offered for {self.concept} is done")
        if image_id is not None and int(image_id) != task.photo.image_id:
            raise ValueError(
                f"COCO image {image_id} is not the photograph in hand ({task.photo.image_id}); reload the page"
            )
        return task

    def make_mask(
        self, prompt: str, threshold: float = 0.4, dilate_x: int = 0, dilate_y: int = 0, image_id: int | None = None
    ) -> Mask:
        """Mask the photograph in hand; a new threshold or enlargement with the same prompt reuses the scores."""
        task = self._require(image_id)
        prompt = (prompt or "").strip()
        if task.scores is None or task.scores[0] != prompt:
            task.scores = (prompt, self.masker.probabilities(task.image, prompt))
        task.mask = self.masker.mask_from_probabilities(task.scores[1], prompt, threshold, dilate_x, dilate_y)
        task.candidates = []  # candidates belong to the mask they were painted into
        return task.mask

    def inpaint(
        self,
        prompt: str,
        *,
        seed: int | None = None,
        num_candidates: int | None = None,
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        image_id: int | None = None,
    ) -> list[Candidate]:
        """New candidates for the mask in hand; seeds are ``seed, seed + 1, ...`` (random ``seed`` if None)."""
        task = self._require(image_id)
        if task.mask is None:
            raise ValueError("make a mask first: enter a mask prompt for the object to change")
        count = int(num_candidates or self.settings.num_candidates)
        base = int(seed) if seed is not None else secrets.randbelow(2**31 - count)
        guidance = float(guidance_scale if guidance_scale is not None else self.settings.guidance_scale)
        steps = int(num_inference_steps or self.settings.num_inference_steps)
        task.candidates = self.inpainter.candidates(
            task.image, task.mask, prompt, [base + i for i in range(count)],
            guidance_scale=guidance, num_inference_steps=steps,
            negative_prompt=self.settings.negative_prompt, resolution=self.settings.resolution,
        )
        task.inpaint_prompt, task.guidance_scale, task.num_inference_steps = prompt.strip(), guidance, steps
        return task.candidates

    def save(
        self,
        choice: int,
        quality: str,
        coco_caption: str,
        inpaint_caption: str,
        *,
        category: str | None = None,
        replacement: str | None = None,
        image_id: int | None = None,
    ) -> dict[str, Any]:
        """Check the rules, write the chosen candidate, its mask and the table row; move to the next photograph."""
        task = self._require(image_id)
        rules.check_licence(task.photo)
        if task.mask is None or not task.candidates:
            raise ValueError("nothing to save yet: make a mask and inpaint candidates first")
        if not 0 <= int(choice) < len(task.candidates):
            raise ValueError(f"choose one of the {len(task.candidates)} candidates (1-{len(task.candidates)})")
        quality = rules.check_quality(quality)
        original, new = rules.check_new_caption(coco_caption, inpaint_caption)
        original = rules.check_coco_caption(task.photo, original)
        change = rules.check_object_change(
            self.catalog, task.photo, self.concept, task.mask.prompt, task.inpaint_prompt or "", category, replacement
        )
        candidate = task.candidates[int(choice)]
        edit = SavedEdit(
            sample_id=self.export.next_sample_id(self.concept, task.photo.image_id),
            coco_image_id=task.photo.image_id,
            concept=self.concept,
            coco_caption=original,
            inpaint_caption=new,
            quality=quality,
            mask_prompt=task.mask.prompt,
            inpaint_prompt=task.inpaint_prompt or "",
            coco_category=change.category,
            mask_threshold=task.mask.threshold,
            mask_dilate_x=task.mask.dilate_x,
            mask_dilate_y=task.mask.dilate_y,
            mask_model=self.masker.model_id,
            inpaint_model=self.inpainter.model_id,
            inpaint_seed=candidate.seed,
            guidance_scale=float(task.guidance_scale),
            num_inference_steps=int(task.num_inference_steps),
            annotator=self.annotator,
            annotation_seconds=max(0.0, self._clock() - task.shown_at),
        )
        row = self.export.add(edit, candidate.image, task.mask.image)
        self._task = None
        return row

    def skip(self, reason: str = "", image_id: int | None = None) -> None:
        """Leave the photograph in hand out for good (recorded in the state file, so a restart skips it too)."""
        task = self._require(image_id)
        self._state["skipped"][str(task.photo.image_id)] = (reason or "skipped").strip()
        self._save_state()
        self._task = None

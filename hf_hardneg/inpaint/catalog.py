"""Which COCO 2017 val photographs the annotation tool may offer for a concept, with their captions and objects.

A photograph is offered when its Flickr licence allows derivative works (never COCO licences
3 and 6) and at least one of its captions holds a keyword of the concept, as in the paper
(appendix A, step 1). Everything else is counted by reason, so the annotator sees how many
photographs were held back and why. Licences, captions and super-categories come from the
same :class:`~hf_hardneg.data.inpaintcoco_export.CocoIndex` the dataset builder uses, so the
tool and ``build-inpaintcoco`` cannot disagree about what is allowed.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_hardneg.concepts import Concept, get_concept
from hf_hardneg.data.inpaintcoco_builder import resolve_coco_paths
from hf_hardneg.data.inpaintcoco_export import CocoIndex, is_no_derivs

__all__ = ["CocoCatalog", "CocoPhoto", "ImagePool", "keyword_concept_for"]

# The keyword list that selects photographs for each InpaintCOCO concept. ``object_coco`` is
# Table 3's object list plus COCO's own spellings (motorcycle, couch, ...), which captions use.
_DEFAULT_KEYWORDS = {"object": "object_coco", "color": "color", "size": "size"}


def keyword_concept_for(concept: str) -> Concept:
    """The default keyword concept for an InpaintCOCO concept (object -> object_coco)."""
    return get_concept(_DEFAULT_KEYWORDS.get(concept, concept))


@dataclass(frozen=True)
class CocoPhoto:
    """One COCO photograph as the tool shows it."""

    image_id: int
    file_name: str
    path: Path
    width: int
    height: int
    license_id: int
    license_name: str
    license_url: str
    captions: tuple[str, ...]
    categories: tuple[str, ...]  # COCO categories annotated in it (sorted); empty without instances

    @property
    def no_derivs(self) -> bool:
        return is_no_derivs({"id": self.license_id, "name": self.license_name, "url": self.license_url})


@dataclass(frozen=True)
class ImagePool:
    """The photographs offered for one concept, in the fixed random order of ``seed``, and what was held back."""

    concept: str
    keyword_concept: str
    image_ids: tuple[int, ...]
    held_back: dict[str, int]  # reason -> count

    def describe(self) -> str:
        held = ", ".join(f"{n} {reason}" for reason, n in self.held_back.items()) or "none"
        return (f"{len(self.image_ids)} photograph(s) offered for {self.concept} (keywords: {self.keyword_concept}); "
                f"held back: {held}")


class CocoCatalog:
    """COCO 2017 val: photographs, licences, verbatim captions and (optionally) object instances."""

    def __init__(self, index: CocoIndex, captions: dict[int, list[str]]):
        self.index = index
        self._captions = captions

    @classmethod
    def load(
        cls,
        coco_dir: str | os.PathLike | None = None,
        *,
        captions_json: str | os.PathLike | None = None,
        images_dir: str | os.PathLike | None = None,
        instances_json: str | os.PathLike | None = None,
    ) -> "CocoCatalog":
        """Read COCO from the download layout (``annotations/``, ``val2017/`` or ``images/val2017/``)
        under ``coco_dir``, or from explicit paths; the same rules as ``build-inpaintcoco``."""
        base = Path(coco_dir) if coco_dir is not None else None
        if base is None and captions_json is None:
            raise ValueError("give the COCO 2017 folder (--coco-dir) or the captions file (--coco-captions)")
        captions_path, images_path, instances_path = resolve_coco_paths(
            base or Path("."),
            base,
            Path(captions_json) if captions_json else None,
            Path(images_dir) if images_dir else None,
            Path(instances_json) if instances_json else None,
        )
        index = CocoIndex.load(captions_path, images_path, instances_path)
        with captions_path.open(encoding="utf-8") as handle:
            raw = json.load(handle)
        captions: dict[int, list[str]] = {}
        for ann in sorted(raw.get("annotations", []), key=lambda a: a.get("id", 0)):
            text = str(ann.get("caption", "")).strip()
            if text:
                captions.setdefault(int(ann["image_id"]), []).append(text)
        return cls(index, captions)

    @property
    def has_instances(self) -> bool:
        return self.index.has_instances

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.index.images

    def photo(self, image_id: int) -> CocoPhoto:
        record = self.index.images.get(int(image_id))
        if record is None:
            raise ValueError(f"COCO image {image_id} is not in the captions file; InpaintCOCO uses COCO 2017 val ids")
        license_id = int(record["license"])
        licence: dict[str, Any] = self.index.licenses.get(license_id, {})
        categories = sorted(
            self.index.categories[cid]["name"] for cid in self.index.image_categories.get(int(image_id), set())
        )
        return CocoPhoto(
            image_id=int(image_id),
            file_name=str(record["file_name"]),
            path=self.index.images_dir / str(record["file_name"]),
            width=int(record.get("width", 0)),
            height=int(record.get("height", 0)),
            license_id=license_id,
            license_name=str(licence.get("name", "")),
            license_url=str(licence.get("url", "")),
            captions=tuple(self._captions.get(int(image_id), [])),
            categories=tuple(categories),
        )

    # -- objects and super-categories -------------------------------------------------------
    def category(self, name: str) -> dict[str, Any] | None:
        """A COCO category by name or alias ("sofa" -> couch), or None."""
        return self.index.category_by_name(name) if name and name.strip() else None

    def categories_named(self, text: str, image_id: int | None = None) -> list[str]:
        """COCO category names a prompt names; those annotated in ``image_id`` first, then the others."""
        found = self.index.categories_named(text)
        present = self.index.image_categories.get(int(image_id), set()) if image_id is not None else set()
        ordered = sorted(found, key=lambda cid: (cid not in present, self.index.categories[cid]["name"]))
        return [self.index.categories[cid]["name"] for cid in ordered]

    def same_supercategory(self, name: str) -> list[str]:
        """The other COCO categories of ``name``'s super-category, sorted (empty for "person")."""
        category = self.category(name)
        if category is None:
            return []
        return sorted(
            c["name"] for c in self.index.categories.values()
            if c["supercategory"] == category["supercategory"] and c["id"] != category["id"]
        )

    # -- what may be offered ------------------------------------------------------------------
    def pool(self, concept: str, keywords: Concept | None = None, seed: int = 0) -> ImagePool:
        """The photographs to offer for ``concept``, shuffled by ``seed`` (the same order on every restart)."""
        from hf_hardneg.substitution import find_keywords

        keywords = keywords or keyword_concept_for(concept)
        held: Counter[str] = Counter()
        offered: list[int] = []
        for image_id in sorted(self.index.images):
            photo = self.photo(image_id)
            if photo.no_derivs:
                held["noderivs_license"] += 1
            elif not any(find_keywords(c, keywords) for c in photo.captions):
                held["no_keyword_in_captions"] += 1
            elif not photo.path.is_file():
                held["photograph_missing"] += 1
            else:
                offered.append(image_id)
        random.Random(seed).shuffle(offered)
        return ImagePool(concept, keywords.name, tuple(offered), dict(held.most_common()))

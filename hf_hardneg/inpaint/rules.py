"""The InpaintCOCO annotation rules, checked before anything is generated or saved.

The paper (section 4, appendix A) allows only photographs whose licence permits
adaptations, replaces an object only by another object of the same COCO super-category
(so that nothing implausible, "a plane in a kitchen", has to be painted), and asks for a
new caption, written from one of the photograph's COCO captions, that describes the edit.
Each rule raises :class:`RuleViolation` with a one-line message that says what to do
instead; the web app shows it, the batch mode reports it with the plan row. The caption
and licence rules are the dataset builder's own (``same_caption``, ``is_no_derivs``), so a
sample the tool accepts is never rejected by ``build-inpaintcoco`` for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hf_hardneg.data.inpaintcoco import INPAINTCOCO_CONCEPTS, INPAINTCOCO_QUALITIES
from hf_hardneg.data.inpaintcoco_export import parse_number, same_caption
from hf_hardneg.inpaint.catalog import CocoCatalog, CocoPhoto

__all__ = [
    "ObjectChange",
    "RuleViolation",
    "check_coco_caption",
    "check_concept",
    "check_licence",
    "check_new_caption",
    "check_object_change",
    "check_quality",
    "read_number",
]


class RuleViolation(ValueError):
    """An edit the InpaintCOCO rules forbid; ``reason`` is a stable id, the message says how to fix it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def check_concept(concept: str) -> str:
    name = (concept or "").strip().lower()
    if name not in INPAINTCOCO_CONCEPTS:
        raise RuleViolation(
            "unknown_concept",
            f"concept {concept!r} is not one of {', '.join(INPAINTCOCO_CONCEPTS)} (InpaintCOCO has no location subset)",
        )
    return name


def check_licence(photo: CocoPhoto) -> None:
    """NoDerivs photographs (COCO licences 3 and 6) may be neither edited nor published."""
    if photo.no_derivs:
        raise RuleViolation(
            "noderivs_license",
            f"COCO image {photo.image_id} is under licence {photo.license_id} ({photo.license_name or '?'}), which "
            "forbids derivative works: it may not be inpainted; choose another photograph",
        )


def check_quality(quality: str) -> str:
    text = " ".join((quality or "").lower().replace("_", " ").replace("-", " ").split())
    if text not in INPAINTCOCO_QUALITIES:
        raise RuleViolation(
            "invalid_quality",
            f"rating {quality!r} is not one of {', '.join(repr(q) for q in INPAINTCOCO_QUALITIES)}; rate the chosen image",
        )
    return text


def check_new_caption(coco_caption: str, inpaint_caption: str) -> tuple[str, str]:
    """Both captions stripped; refuses an empty one, or a new caption equal to the original."""
    original, new = (coco_caption or "").strip(), (inpaint_caption or "").strip()
    if not original:
        raise RuleViolation("empty_caption", "choose the COCO caption the new caption is based on")
    if not new:
        raise RuleViolation("empty_caption", "the new caption is empty; describe the edited image, starting from "
                                             f"the original {original!r}")
    if same_caption(original, new):
        raise RuleViolation(
            "unchanged_caption",
            f"the new caption equals the original ({original!r}); change the words that the edit made false",
        )
    return original, new


def check_coco_caption(photo: CocoPhoto, caption: str) -> str:
    """The COCO caption a new caption starts from, spelt as COCO spells it; any other text is refused."""
    for text in photo.captions:
        if same_caption(text, caption):
            return text
    raise RuleViolation(
        "caption_not_from_coco",
        f"{caption!r} is not one of the COCO captions of image {photo.image_id}; start from one of them",
    )


def read_number(values: Mapping[str, Any], key: str, kind: type, default: Any = None) -> Any:
    """``values[key]`` as an int or float (``default`` when absent or blank), read as the dataset builder reads it."""
    try:
        number = parse_number(values.get(key), key, kind)
    except ValueError as err:
        raise RuleViolation("unreadable_row", str(err)) from None
    return default if number is None else number


@dataclass(frozen=True)
class ObjectChange:
    """The COCO object an edit changed and, for the object concept, the one that replaced it (None: not COCO)."""

    category: str | None
    replacement: str | None = None


def check_object_change(
    catalog: CocoCatalog,
    photo: CocoPhoto,
    concept: str,
    mask_prompt: str,
    inpaint_prompt: str,
    category: str | None = None,
    replacement: str | None = None,
) -> ObjectChange:
    """Resolve which COCO object changed (given, else read off the mask prompt) and, for ``object``,
    what replaced it (given, else read off the inpainting prompt); refuses a replacement from
    another super-category, naming the allowed ones.

    A changed thing that is no COCO category ("jacket") is allowed and left unnamed: the
    super-category rule is about COCO objects, and a user's own domain has other things.
    """
    concept = check_concept(concept)
    if category:
        changed = _resolve(catalog, category, "changed object")
    else:
        named = catalog.categories_named(mask_prompt, photo.image_id)
        candidates = [n for n in named if n in photo.categories] or named
        if len(candidates) > 1 and concept == "object":
            raise RuleViolation(
                "ambiguous_object",
                f"the mask prompt {mask_prompt!r} names several COCO objects ({', '.join(candidates)}); "
                "say which one is replaced",
            )
        changed = candidates[0] if len(candidates) == 1 else None
    if concept != "object":
        return ObjectChange(changed)
    if changed is None:
        new = _resolve(catalog, replacement, "new object") if replacement else None
        return ObjectChange(None, new)
    allowed = catalog.same_supercategory(changed)
    supercategory = catalog.category(changed)["supercategory"]
    if not allowed:
        raise RuleViolation(
            "outside_supercategory",
            f"{changed!r} is the only COCO category of the super-category {supercategory!r}, so it cannot be "
            "replaced by another object of it; change its colour or size instead, or choose another object",
        )
    if replacement:
        new = _resolve(catalog, replacement, "new object")
    else:
        named = [n for n in catalog.categories_named(inpaint_prompt) if n != changed]
        if not named:
            raise RuleViolation(
                "unknown_object",
                f"the inpainting prompt {inpaint_prompt!r} names no COCO object to put in place of {changed!r}; "
                f"name one of the same super-category ({supercategory}): {', '.join(allowed)}",
            )
        new = next((n for n in named if n in allowed), named[0])
    if new == changed:
        raise RuleViolation("unchanged_object", f"the new object is again {changed!r}; choose one of {', '.join(allowed)}")
    if new not in allowed:
        raise RuleViolation(
            "outside_supercategory",
            f"{new!r} ({catalog.category(new)['supercategory']}) cannot replace {changed!r}: objects are replaced "
            f"only within the super-category {supercategory!r}; allowed: {', '.join(allowed)}",
        )
    return ObjectChange(changed, new)


def _resolve(catalog: CocoCatalog, name: str, what: str) -> str:
    category = catalog.category(name)
    if category is None:
        raise RuleViolation("unknown_object", f"{what} {name!r} is not one of COCO's 80 categories")
    return str(category["name"])

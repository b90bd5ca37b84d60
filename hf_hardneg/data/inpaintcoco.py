"""InpaintCOCO: the schema of the published challenge set and the loader the evaluation suite calls.

InpaintCOCO (paper section 4) pairs a COCO 2017 val photograph with a copy in which
one object was inpainted so that one *concept* changed (which object, its colour, or
its size), plus the original caption and a new caption that matches the edit. A
model understands the concept when each caption prefers its own image (Equation (1);
the evaluation itself lives in :mod:`hf_hardneg.evaluation`).

This module only knows the published layout: configs ``all`` (default), ``object``,
``color`` and ``size``, one split ``test``, and the columns in :data:`INPAINTCOCO_FEATURES`:
every column of the published dataset, phiyodr/InpaintCOCO (``concept`` as a string,
``coco_caption``, ``coco_image``, ``inpaint_caption``, ``inpaint_image``, ``mask``,
``worker``, the ``coco_details`` and ``inpaint_details`` structs; see
:data:`PUBLISHED_INPAINTCOCO_FEATURES`), then flat columns of our own.
Building that layout from an annotation export is
:mod:`hf_hardneg.data.inpaintcoco_builder`.
"""

from __future__ import annotations

import os
from typing import Any

import datasets

__all__ = [
    "COCO_TEXT_LICENSE",
    "INPAINT_DETAILS_FEATURE",
    "PUBLISHED_INPAINTCOCO_FEATURES",
    "INPAINTCOCO_COLUMNS",
    "INPAINTCOCO_CONCEPTS",
    "INPAINTCOCO_CONFIGS",
    "INPAINTCOCO_FEATURES",
    "INPAINTCOCO_QUALITIES",
    "INPAINTCOCO_SPLIT",
    "NO_DERIVS_LICENSE_IDS",
    "load_inpaintcoco",
]

# Paper order; builds write the shards and configs in it.
INPAINTCOCO_CONCEPTS: tuple[str, ...] = ("object", "color", "size")
INPAINTCOCO_CONFIGS: tuple[str, ...] = ("all", *INPAINTCOCO_CONCEPTS)
# It is a challenge set: nobody should train on it, so there is only a test split.
INPAINTCOCO_SPLIT = "test"
# The annotators' two-level rating of the chosen inpainting (paper appendix A, step 5).
INPAINTCOCO_QUALITIES: tuple[str, ...] = ("very good", "okay")
# COCO's Flickr licences 3 (BY-NC-ND) and 6 (BY-ND) forbid derivative works: such a
# photograph may neither be inpainted nor published beside an inpainted copy.
NO_DERIVS_LICENSE_IDS: frozenset[int] = frozenset({3, 6})

#: COCO's licence for the captions (the images keep their Flickr licence, ``image_license``).
COCO_TEXT_LICENSE = "Creative Commons Attribution 4.0 License"

#: The columns of the published dataset, phiyodr/InpaintCOCO, with their types: a build of
#: ours carries each of them with this very feature, so code written for the one reads the
#: other. ``inpaint_details`` is a struct there too; the fields ours holds are listed in
#: :data:`INPAINT_DETAILS_FEATURE` (guidance_scale and num_inference_steps are fields of the
#: published struct as well).
PUBLISHED_INPAINTCOCO_FEATURES = datasets.Features(
    {
        "concept": datasets.Value("string"),
        "coco_caption": datasets.Value("string"),
        "coco_image": datasets.Image(),
        "inpaint_caption": datasets.Value("string"),
        "inpaint_image": datasets.Image(),
        "mask": datasets.Image(),  # the region the inpainting model repainted (white)
        "worker": datasets.Value("string"),  # pseudonymous annotator id
        "coco_details": {
            "captions": datasets.List(datasets.Value("string")),  # all COCO captions of the photograph
            "coco_url": datasets.Value("string"),
            "date_captured": datasets.Value("string"),
            "flickr_url": datasets.Value("string"),
            "height": datasets.Value("int64"),
            "id": datasets.Value("int64"),
            "image_license": datasets.Value("string"),
            "text_license": datasets.Value("string"),
            "width": datasets.Value("int64"),
        },
    }
)

#: How the edit was made, as one struct (null fields where the export does not record them;
#: the annotation tool, hf_hardneg.inpaint, records all of them).
INPAINT_DETAILS_FEATURE = {
    "mask_prompt": datasets.Value("string"),
    "inpaint_prompt": datasets.Value("string"),
    "quality": datasets.Value("string"),
    "mask_threshold": datasets.Value("float64"),
    "mask_dilate_x": datasets.Value("int32"),
    "mask_dilate_y": datasets.Value("int32"),
    "mask_model": datasets.Value("string"),
    "inpaint_model": datasets.Value("string"),
    "inpaint_seed": datasets.Value("int64"),
    "guidance_scale": datasets.Value("float64"),
    "num_inference_steps": datasets.Value("int32"),
    "annotation_seconds": datasets.Value("float64"),
}

INPAINTCOCO_FEATURES = datasets.Features(
    {
        **PUBLISHED_INPAINTCOCO_FEATURES,
        "inpaint_details": INPAINT_DETAILS_FEATURE,
        # Flat columns beside the published ones: ids, licence, rating and super-category for
        # filtering without unpacking the structs.
        "sample_id": datasets.Value("string"),
        "coco_image_id": datasets.Value("int64"),
        "quality": datasets.Value("string"),
        # null when the edited thing is not one of COCO's 80 categories (e.g. "jacket")
        "supercategory": datasets.Value("string"),
        "license_id": datasets.Value("int32"),
        "license_name": datasets.Value("string"),
        "license_url": datasets.Value("string"),
        "flickr_url": datasets.Value("string"),
        "coco_url": datasets.Value("string"),
        # the edit's settings flat, typed as in inpaint_details (its quality is above, its time last)
        **{name: feature for name, feature in INPAINT_DETAILS_FEATURE.items()
           if name not in ("quality", "annotation_seconds")},
        "annotator": datasets.Value("string"),
        "annotation_seconds": INPAINT_DETAILS_FEATURE["annotation_seconds"],
    }
)
INPAINTCOCO_COLUMNS: tuple[str, ...] = tuple(INPAINTCOCO_FEATURES)


# What an evaluation needs; a dataset lacking these cannot be InpaintCOCO in any layout.
_CORE_COLUMNS: tuple[str, ...] = ("coco_image", "inpaint_image", "coco_caption", "inpaint_caption")


def _config_for(concept: str | None) -> str:
    if concept is None:
        return "all"
    if not isinstance(concept, str) or concept.strip().lower() not in INPAINTCOCO_CONFIGS:
        raise ValueError(
            f"unknown InpaintCOCO concept {concept!r}; use one of {', '.join(INPAINTCOCO_CONCEPTS)} "
            "(or None / 'all' for every sample). InpaintCOCO has no 'location' subset: moving an "
            "object cannot be done by inpainting a single region."
        )
    return concept.strip().lower()


def _declared_configs(path: str, load_dataset_kwargs: dict[str, Any]) -> list[str] | None:
    """The dataset's config names, or None when they cannot be listed (then we just try to load)."""
    options = {k: load_dataset_kwargs[k] for k in ("revision", "token", "download_config") if k in load_dataset_kwargs}
    try:
        return list(datasets.get_dataset_config_names(path, **options))
    except (OSError, ValueError):  # offline Hub id, missing repo, ...: load_dataset reports it properly
        return None


def _concept_names(dataset: datasets.Dataset) -> list[str]:
    feature = dataset.features["concept"]
    values = dataset["concept"]
    if isinstance(feature, datasets.ClassLabel):
        return [feature.int2str(v) for v in values]
    return [str(v).strip().lower() for v in values]


def load_inpaintcoco(
    path_or_repo_id: str | os.PathLike,
    concept: str | None = None,
    split: str = INPAINTCOCO_SPLIT,
    **load_dataset_kwargs: Any,
) -> datasets.Dataset:
    """Load InpaintCOCO (all samples, or one concept) from a local build or a Hub dataset repo.

    Builds written by ``hf-hardneg build-inpaintcoco`` declare the configs ``all``, ``object``,
    ``color`` and ``size`` and carry every column of :data:`INPAINTCOCO_FEATURES`. Other
    publications of InpaintCOCO may have a single default config and fewer columns; for those
    the default config is loaded and, when ``concept`` is given, filtered on its ``concept``
    column, and the columns are returned as they are.

    Args:
        path_or_repo_id: a folder written by ``hf-hardneg build-inpaintcoco`` or a Hub id
            such as ``"user/inpaintcoco"``.
        concept: ``"object"``, ``"color"``, ``"size"``, or ``None``/``"all"`` for every sample.
        split: the split to read; InpaintCOCO only has ``"test"``.
        **load_dataset_kwargs: passed to :func:`datasets.load_dataset` (``cache_dir``,
            ``revision``, ``token``, ...).

    Returns:
        A :class:`datasets.Dataset`; the two image columns decode to ``PIL.Image.Image``.

    Raises:
        ValueError: for an unknown concept, or when the data lacks the image and caption
            columns an evaluation needs (so it never runs on the wrong dataset silently).
    """
    config = _config_for(concept)
    path = os.fspath(path_or_repo_id)
    declared = _declared_configs(path, load_dataset_kwargs)
    by_config = declared is None or config in declared
    dataset = datasets.load_dataset(path, config if by_config else None, split=split, **load_dataset_kwargs)
    if not isinstance(dataset, datasets.Dataset):  # streaming=True: an IterableDataset, returned as is
        return dataset
    missing = [name for name in _CORE_COLUMNS if name not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{path!r} (split {split!r}) is not InpaintCOCO: it lacks the columns {missing}. Build one with "
            "`hf-hardneg build-inpaintcoco --source EXPORT --output DIR` and load that folder."
        )
    if not by_config and config != "all":
        if "concept" not in dataset.column_names:
            raise ValueError(
                f"{path!r} declares no {config!r} config and has no 'concept' column to select it by "
                f"(its configs: {declared}); load it with concept=None"
            )
        keep = [i for i, name in enumerate(_concept_names(dataset)) if name == config]
        dataset = dataset.select(keep)
    return dataset

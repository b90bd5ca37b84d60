"""A procedural image-caption world for offline demos and tests.

Each scene is a small Pillow rendering of 2-4 flat objects on a textured
background. Objects are distinct glyph silhouettes named after COCO object
nouns, painted in one of the 9 colour words of the paper's *color* concept, in
three sizes and at varied positions. Every scene gets two captions:

* ``caption``: a detailed, COCO-like sentence using the concept vocabularies
  (colour words, size words, spatial relations), so the keyword-substitution
  engine in :mod:`hf_hardneg.substitution` turns it into hard negatives;
* ``coarse_caption``: the same objects without any colour, size or location
  word -- an "alt-text" caption a model can match by object nouns alone.

Why this shape: with many object types and several objects per scene, two
random scenes almost never share their set of objects, so random in-batch
negatives are separated by nouns alone (as in COCO) while the concepts need an
image-text alignment that binds an adjective to the right object. A model
pretrained on ``coarse_caption`` never needed colour, size or location; the
detailed captions are for continued pretraining, the regime of the paper.

Everything is deterministic: scene ``i`` of seed ``s`` depends only on ``(s,
i)``, not on how many scenes are generated, so a larger world extends a smaller
one. Scene metadata (every object's noun, colour, size class, box and drawing
order) is kept as columns so captions can be checked against the picture.

Two layouts: ``"free"`` places objects anywhere in their own region of the
canvas (and may tuck one partly over another, for "in front of"/"behind");
``"grid"`` centres each object in a quadrant, aligned with 8- or 16-pixel
patches. A tiny ViT trained from scratch learns the grid's shapes in a few
thousand steps, the free layout's far more slowly; the demo uses the grid.

Vocabulary notes: noun phrases use "the" (never "a"/"an", whose choice would
reveal whether the true colour starts with a vowel: "an red" would be a
give-away negative). "orange" is a colour here, never a fruit, but the
*object* concept matches it by spelling too (see :mod:`hf_hardneg.concepts`).

Example::

    >>> from hf_hardneg.synthetic import WorldConfig, make_synthetic_dataset
    >>> ds = make_synthetic_dataset(1000, seed=0, config=WorldConfig(layout="grid"))
    >>> ds[0]["caption"], ds[0]["coarse_caption"]  # doctest: +SKIP
    ('the small red clock to the left of the blue kite on a pink blanket', 'the clock and the kite on a pink blanket')
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOR_RGB",
    "BACKGROUNDS",
    "GLYPHS",
    "DEFAULT_OBJECTS",
    "SIZE_WORDS",
    "RELATION_PHRASES",
    "WorldConfig",
    "SceneObject",
    "Scene",
    "generate_scene",
    "render_scene",
    "describe_scene",
    "iter_scenes",
    "make_synthetic_dataset",
    "relation_holds",
    "side_of",
    "EDITABLE_CONCEPTS",
    "SceneEdit",
    "edit_scene",
    "make_edited_pairs",
]

# --------------------------------------------------------------------------- vocabulary

#: The 9 colour words of the *color* concept, as flat sRGB paint.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "blue": (30, 70, 225),
    "red": (215, 25, 30),
    "green": (30, 160, 45),
    "yellow": (245, 220, 30),
    "black": (15, 15, 15),
    "white": (250, 250, 250),
    "brown": (120, 70, 25),
    "gray": (128, 128, 128),
    "orange": (250, 135, 0),
}

#: Size classes and the words of the *size* concept that may describe them. Every
#: substitution of the concept (large<->small, little<->big, huge<->tiny,
#: giant->tiny) moves a word to the other class, so a substituted caption is false.
#: "medium" objects are never described by a size word.
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "medium": (),
    "large": ("large", "big", "huge", "giant"),
}
#: Side length of an object's box as a fraction of the image side.
SIZE_SCALE: dict[str, float] = {"small": 0.24, "medium": 0.33, "large": 0.46}

#: Spatial relations "A <phrase> B" and the words of the *location* concept they
#: use. Each relation's substitution (left<->right, above<->below, over<->under,
#: in front of<->behind) names the opposite relation, which is false by construction.
RELATION_PHRASES: dict[str, str] = {
    "left_of": "to the left of",
    "right_of": "to the right of",
    "above": "above",
    "below": "below",
    "over": "over",
    "under": "under",
    "in_front_of": "in front of",
    "behind": "behind",
}

#: Backgrounds: (phrase used in captions, base colour, texture). Base colours are
#: kept away from the 9 paint colours so an object's colour is never ambiguous,
#: and no phrase contains a concept keyword.
BACKGROUNDS: dict[str, tuple[str, tuple[int, int, int], str]] = {
    "pink blanket": ("on a pink blanket", (235, 170, 195), "stripes"),
    "purple rug": ("on a purple rug", (125, 70, 150), "checker"),
    "beige floor": ("on a beige floor", (212, 196, 156), "planks"),
    "teal mat": ("on a teal mat", (40, 128, 128), "dots"),
    "lavender sheet": ("on a lavender sheet", (185, 175, 225), "diagonal"),
    "mint towel": ("on a mint towel", (165, 220, 190), "grid"),
}


# --------------------------------------------------------------------------- glyphs
# A glyph paints a silhouette into a 1-bit mask inside the box (x0, y0, x1, y1),
# in supersampled pixel coordinates. Silhouettes are chosen to stay distinct at
# a few pixels across: filled vs hollow, round vs angular, upright vs flat.

Box = tuple[float, float, float, float]


def _rel(box: Box, fx0: float, fy0: float, fx1: float, fy1: float) -> list[float]:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return [x0 + fx0 * w, y0 + fy0 * h, x0 + fx1 * w, y0 + fy1 * h]


def _pts(box: Box, *fpts: tuple[float, float]) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    return [(x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)) for fx, fy in fpts]


def _disk(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.ellipse(b, fill=1)


def _ring(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.ellipse(b, fill=1)
    d.ellipse(_rel(b, 0.3, 0.3, 0.7, 0.7), fill=0)


def _square(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.rectangle(_rel(b, 0.08, 0.08, 0.92, 0.92), fill=1)


def _frame(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.rectangle(b, fill=1)
    d.rectangle(_rel(b, 0.27, 0.27, 0.73, 0.73), fill=0)


def _triangle(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.polygon(_pts(b, (0.5, 0.0), (1.0, 1.0), (0.0, 1.0)), fill=1)


def _diamond(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.polygon(_pts(b, (0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)), fill=1)


def _plus(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.rectangle(_rel(b, 0.35, 0.0, 0.65, 1.0), fill=1)
    d.rectangle(_rel(b, 0.0, 0.35, 1.0, 0.65), fill=1)


def _cross(d: ImageDraw.ImageDraw, b: Box) -> None:
    t = 0.17
    d.polygon(_pts(b, (0, t), (t, 0), (1, 1 - t), (1 - t, 1)), fill=1)
    d.polygon(_pts(b, (1 - t, 0), (1, t), (t, 1), (0, 1 - t)), fill=1)


def _umbrella(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.pieslice(_rel(b, 0.0, 0.0, 1.0, 1.1), 180, 360, fill=1)
    d.rectangle(_rel(b, 0.43, 0.5, 0.57, 1.0), fill=1)


def _bowl(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.chord(_rel(b, 0.0, -0.3, 1.0, 0.9), 0, 180, fill=1)


def _bar(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.rectangle(_rel(b, 0.0, 0.35, 1.0, 0.65), fill=1)


def _bottle(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.rectangle(_rel(b, 0.28, 0.38, 0.72, 1.0), fill=1)
    d.rectangle(_rel(b, 0.41, 0.0, 0.59, 0.4), fill=1)


def _crescent(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.ellipse(b, fill=1)
    d.ellipse(_rel(b, 0.32, -0.12, 1.22, 0.78), fill=0)


def _chair(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.rectangle(_rel(b, 0.1, 0.0, 0.35, 1.0), fill=1)
    d.rectangle(_rel(b, 0.1, 0.45, 0.9, 0.68), fill=1)
    d.rectangle(_rel(b, 0.65, 0.45, 0.9, 1.0), fill=1)


def _cup(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.rectangle(_rel(b, 0.05, 0.1, 0.95, 0.95), fill=1)
    d.rectangle(_rel(b, 0.3, 0.1, 0.7, 0.7), fill=0)


def _fork(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.rectangle(_rel(b, 0.4, 0.45, 0.6, 1.0), fill=1)
    d.rectangle(_rel(b, 0.05, 0.35, 0.95, 0.52), fill=1)
    for fx in (0.05, 0.4, 0.75):
        d.rectangle(_rel(b, fx, 0.0, fx + 0.2, 0.4), fill=1)


def _hourglass(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.polygon(_pts(b, (0.05, 0.0), (0.95, 0.0), (0.5, 0.5)), fill=1)
    d.polygon(_pts(b, (0.5, 0.5), (0.95, 1.0), (0.05, 1.0)), fill=1)


def _tiers(d: ImageDraw.ImageDraw, b: Box) -> None:
    d.rectangle(_rel(b, 0.0, 0.62, 1.0, 1.0), fill=1)
    d.rectangle(_rel(b, 0.15, 0.3, 0.85, 0.64), fill=1)
    d.rectangle(_rel(b, 0.32, 0.0, 0.68, 0.32), fill=1)


#: COCO object noun -> silhouette painter. Nouns are keywords of the paper's
#: *object* concept (Table 3 spelling, e.g. "aeroplane", "tv monitor"); "orange"
#: is left out on purpose because it is also a colour word.
GLYPHS: dict[str, Callable[[ImageDraw.ImageDraw, Box], None]] = {
    "clock": _disk,
    "donut": _ring,
    "book": _square,
    "tv monitor": _frame,
    "pizza": _triangle,
    "kite": _diamond,
    "aeroplane": _plus,
    "scissors": _cross,
    "umbrella": _umbrella,
    "bowl": _bowl,
    "skateboard": _bar,
    "bottle": _bottle,
    "banana": _crescent,
    "chair": _chair,
    "cup": _cup,
    "fork": _fork,
    "vase": _hourglass,
    "cake": _tiers,
}
DEFAULT_OBJECTS: tuple[str, ...] = tuple(GLYPHS)


# --------------------------------------------------------------------------- config and scenes


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the world. Defaults give 18 objects x 9 colours x 3 sizes, 2-4 per scene.

    Pictures: ``image_size`` pixels square, drawn at ``supersample`` times that
    size and box-filtered down; ``layout`` ``"free"`` or ``"grid"`` (see the
    module docstring); in the free layout ``p_overlap`` is the chance that an
    object is tucked partly over an earlier one.

    Captions: every object is named once; the probabilities decide how often
    each concept shows in the detailed caption: ``p_color`` per object,
    ``p_size`` per object that is not medium-sized, ``p_relation`` per caption
    (a relation between two objects), ``p_side`` per caption without relation
    ("... on the left"), ``p_background`` per caption (both captions then name
    the background).
    """

    image_size: int = 32
    objects: tuple[str, ...] = DEFAULT_OBJECTS
    colors: tuple[str, ...] = tuple(COLOR_RGB)
    backgrounds: tuple[str, ...] = tuple(BACKGROUNDS)
    min_objects: int = 2
    max_objects: int = 4
    size_probs: tuple[float, float, float] = (0.35, 0.3, 0.35)  # small, medium, large
    layout: str = "free"
    p_overlap: float = 0.25
    p_color: float = 0.85
    p_size: float = 0.7
    p_relation: float = 0.6
    p_side: float = 0.4
    p_background: float = 0.6
    supersample: int = 4

    def __post_init__(self) -> None:
        unknown = [o for o in self.objects if o not in GLYPHS]
        if unknown:
            raise ValueError(f"WorldConfig.objects: no glyph for {unknown}; choose from {sorted(GLYPHS)}")
        bad = [c for c in self.colors if c not in COLOR_RGB]
        if bad:
            raise ValueError(f"WorldConfig.colors: unknown colours {bad}; choose from {list(COLOR_RGB)}")
        bad = [b for b in self.backgrounds if b not in BACKGROUNDS]
        if bad:
            raise ValueError(f"WorldConfig.backgrounds: unknown {bad}; choose from {list(BACKGROUNDS)}")
        if not 1 <= self.min_objects <= self.max_objects <= len(self.objects):
            raise ValueError(
                f"need 1 <= min_objects ({self.min_objects}) <= max_objects ({self.max_objects}) "
                f"<= number of objects ({len(self.objects)}): each scene holds distinct objects"
            )
        if self.max_objects > 4:
            raise ValueError(f"max_objects={self.max_objects}: at most 4 (each object gets a quadrant of the canvas)")
        if self.layout not in ("free", "grid"):
            raise ValueError(f"layout must be 'free' or 'grid', got {self.layout!r}")
        for name in ("p_overlap", "p_color", "p_size", "p_relation", "p_side", "p_background"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {self.supersample}")
        if self.image_size < 16:
            raise ValueError(f"image_size={self.image_size} is too small to draw glyphs; use >= 16")
        if len(self.size_probs) != 3 or abs(sum(self.size_probs) - 1) > 1e-6 or min(self.size_probs) < 0:
            raise ValueError(f"size_probs must be 3 non-negative numbers summing to 1, got {self.size_probs}")


@dataclass(frozen=True)
class SceneObject:
    """One painted object: box in output pixels, ``depth`` = drawing order (higher is in front)."""

    noun: str
    color: str
    size: str
    box: tuple[float, float, float, float]
    depth: int

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str
    texture_seed: int
    image_size: int

    def get(self, noun: str) -> SceneObject:
        for obj in self.objects:
            if obj.noun == noun:
                return obj
        raise KeyError(noun)


def _overlap_fraction(a: Box, b: Box) -> float:
    """Intersection area over the smaller box's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def relation_holds(relation: str, a: SceneObject, b: SceneObject, image_size: int) -> bool:
    """Whether "a <relation> b" is clearly true in the picture.

    Directional relations need the centres to differ by at least a quarter of
    the image along that axis, and more along it than across it, so the
    opposite relation is clearly false. "in front of"/"behind" need the boxes
    to overlap by at least 15% of the smaller one.
    """
    (ax, ay), (bx, by) = a.center, b.center
    dx, dy = bx - ax, by - ay
    margin = 0.25 * image_size
    if relation == "left_of":
        return dx >= margin and abs(dx) > abs(dy)
    if relation == "right_of":
        return -dx >= margin and abs(dx) > abs(dy)
    if relation in ("above", "over"):
        return dy >= margin and abs(dy) > abs(dx)
    if relation in ("below", "under"):
        return -dy >= margin and abs(dy) > abs(dx)
    if relation in ("in_front_of", "behind"):
        if _overlap_fraction(a.box, b.box) < 0.15:
            return False
        return a.depth > b.depth if relation == "in_front_of" else a.depth < b.depth
    raise ValueError(f"unknown relation {relation!r}; known: {list(RELATION_PHRASES)}")


def side_of(obj: SceneObject, image_size: int) -> str | None:
    """"left"/"right" when the object's centre lies in the outer 35% of the image, else None."""
    cx = obj.center[0]
    if cx < 0.35 * image_size:
        return "left"
    if cx > 0.65 * image_size:
        return "right"
    return None


def _scene_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


def _cells(n: int, s: int, rng: np.random.Generator) -> list[Box]:
    """Free regions of the canvas: two halves for 2 objects, quadrants for more."""
    h = s / 2
    if n <= 2:
        if rng.random() < 0.5:
            return [(0, 0, h, s), (h, 0, s, s)]
        return [(0, 0, s, h), (0, h, s, s)]
    return [(0, 0, h, h), (h, 0, s, h), (0, h, h, s), (h, h, s, s)]


def generate_scene(rng: np.random.Generator, config: WorldConfig) -> Scene:
    """Sample objects, colours, sizes and a layout (no drawing).

    Each object gets its own cell of the canvas (so it never touches another),
    except that with probability ``p_overlap`` a later object is tucked partly
    over an earlier one, which makes "in front of"/"behind" true.
    """
    s = config.image_size
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    nouns = rng.choice(len(config.objects), size=n, replace=False)
    grid = config.layout == "grid"
    cells = _cells(4 if grid else n, s, rng)
    free = [cells[int(i)] for i in rng.permutation(len(cells))]
    placed: list[SceneObject] = []
    for depth, noun_idx in enumerate(nouns):
        size = ("small", "medium", "large")[int(rng.choice(3, p=config.size_probs))]
        side = SIZE_SCALE[size] * s * (1.0 if grid else float(rng.uniform(0.94, 1.06)))
        color = config.colors[int(rng.integers(len(config.colors)))]
        box = None
        # overlap only objects of another colour, so their outlines stay visible
        partners = [p for p in placed if p.color != color]
        if partners and not grid and rng.random() < config.p_overlap:
            other = partners[int(rng.integers(len(partners)))]
            ox, oy = other.center
            reach = (side + other.box[2] - other.box[0]) / 2
            for _ in range(20):
                ang = rng.uniform(0, 2 * math.pi)
                dist = reach * float(rng.uniform(0.45, 0.7))
                cx, cy = ox + dist * math.cos(ang), oy + dist * math.sin(ang)
                cand = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
                if cand[0] < 0 or cand[1] < 0 or cand[2] > s or cand[3] > s:
                    continue
                overlaps = [_overlap_fraction(cand, p.box) for p in placed]
                # exactly one clear overlap, never hiding more than half of it
                if sum(o > 0 for o in overlaps) == 1 and 0.15 <= max(overlaps) <= 0.5:
                    box = cand
                    break
            if box is not None:
                # the tucked object may reach into free cells, which are then lost; tuck only if the
                # objects still to come keep a cell each
                still_free = [c for c in free if _overlap_fraction(c, box) == 0]
                if len(still_free) >= n - depth - 1:
                    free = still_free
                else:
                    box = None
        if box is None:
            if not free:
                continue  # no room left: the scene keeps fewer objects
            cx0, cy0, cx1, cy1 = free.pop()
            side = min(side, cx1 - cx0, cy1 - cy0)
            if grid:  # centred in its cell: glyphs sit at the same place relative to patches
                x0, y0 = (cx0 + cx1 - side) / 2, (cy0 + cy1 - side) / 2
            else:
                x0 = float(rng.uniform(cx0, cx1 - side))
                y0 = float(rng.uniform(cy0, cy1 - side))
            box = (x0, y0, x0 + side, y0 + side)
        placed.append(SceneObject(config.objects[int(noun_idx)], color, size,
                                  tuple(round(float(v), 3) for v in box), depth))
    background = config.backgrounds[int(rng.integers(len(config.backgrounds)))]
    return Scene(tuple(placed), background, int(rng.integers(2**31)), s)


# --------------------------------------------------------------------------- rendering


def _background(scene: Scene, size: int) -> Image.Image:
    _, base, texture = BACKGROUNDS[scene.background]
    rng = np.random.default_rng(scene.texture_seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = size / float(rng.uniform(3.0, 6.0))
    phase = float(rng.uniform(0, period))
    if texture == "stripes":
        pattern = ((yy + phase) // (period / 2)) % 2
    elif texture == "diagonal":
        pattern = ((xx + yy + phase) // (period / 2)) % 2
    elif texture == "checker":
        pattern = (((xx + phase) // period) + ((yy + phase) // period)) % 2
    elif texture == "grid":
        pattern = ((((xx + phase) % period) < period / 6) | (((yy + phase) % period) < period / 6)).astype(np.float32)
    elif texture == "dots":
        cx = (xx + phase) % period - period / 2
        cy = (yy + phase) % period - period / 2
        pattern = ((cx**2 + cy**2) < (period / 4) ** 2).astype(np.float32)
    else:  # planks
        pattern = ((yy + phase) // period) % 2 * 0.6 + (((xx * 0.05 + yy) % 7) < 1) * 0.4
    shade = (pattern - 0.5) * 26.0 + rng.normal(0, 3.0, size=(size, size))
    pixels = np.clip(np.asarray(base, np.float32)[None, None, :] + shade[..., None], 0, 255)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def render_scene(scene: Scene, supersample: int = 4) -> Image.Image:
    """Draw the scene: textured background, then objects back to front, then downsample.

    Drawing at ``supersample`` times the size and downsampling with a box
    filter anti-aliases the edges; object interiors keep their exact paint.
    """
    big = scene.image_size * supersample
    # the texture is made at output resolution (it needs no anti-aliasing) and blown up
    canvas = _background(scene, scene.image_size).resize((big, big), Image.Resampling.NEAREST)
    for obj in sorted(scene.objects, key=lambda o: o.depth):
        mask = Image.new("1", (big, big), 0)
        box = tuple(v * supersample for v in obj.box)
        GLYPHS[obj.noun](ImageDraw.Draw(mask), box)
        canvas.paste(COLOR_RGB[obj.color], mask=mask)
    return canvas.resize((scene.image_size, scene.image_size), Image.Resampling.BOX)


# --------------------------------------------------------------------------- captions

_DETAILED_TEMPLATES = ("{body}", "a photo of {body}", "a picture of {body}", "{body}", "an image of {body}")
_COARSE_TEMPLATES = ("{body}", "a photo of {body}", "a picture of {body}", "an image of {body}")


def _join(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def describe_scene(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> tuple[str, str]:
    """Return ``(caption, coarse_caption)`` for a scene.

    Noun phrases use "the" (never "a"/"an", whose choice would leak the first
    letter of the true colour word into a hard negative such as "an red").
    Every keyword written is true of the picture; omissions are allowed.
    """
    s = scene.image_size
    objs = list(scene.objects)
    order = [objs[i] for i in rng.permutation(len(objs))]

    def np_(o: SceneObject) -> str:
        words = ["the"]
        if SIZE_WORDS[o.size] and rng.random() < config.p_size:
            choices = SIZE_WORDS[o.size]
            words.append(choices[int(rng.integers(len(choices)))])
        if rng.random() < config.p_color:
            words.append(o.color)
        words.append(o.noun)
        return " ".join(words)

    # a relation between two objects, chosen among those clearly true
    relation = None
    if len(order) >= 2 and rng.random() < config.p_relation:
        options = [
            (rel, a, b)
            for a in order
            for b in order
            if a is not b
            for rel in RELATION_PHRASES
            if relation_holds(rel, a, b, s)
        ]
        if options:
            relation = options[int(rng.integers(len(options)))]

    if relation is not None:
        rel, a, b = relation
        rest = [o for o in order if o is not a and o is not b]
        body = f"{np_(a)} {RELATION_PHRASES[rel]} {np_(b)}"
        if rest:
            joiner = ", with " if rng.random() < 0.5 else " and "
            body += joiner + _join([np_(o) for o in rest])
        coarse_order = [a, b] + rest
    else:
        phrases = [np_(o) for o in order]
        sided = [i for i, o in enumerate(order) if side_of(o, s)]
        if sided and rng.random() < config.p_side:
            i = sided[int(rng.integers(len(sided)))]
            phrases[i] += f" on the {side_of(order[i], s)}"
        body = _join(phrases)
        coarse_order = order

    bg_phrase = BACKGROUNDS[scene.background][0]
    with_bg = rng.random() < config.p_background
    template = _DETAILED_TEMPLATES[int(rng.integers(len(_DETAILED_TEMPLATES)))]
    # ", on a ..." after a trailing "on the left" avoids a run of two "on" phrases
    sep = ", " if body.endswith(("on the left", "on the right")) else " "
    caption = template.format(body=body) + (f"{sep}{bg_phrase}" if with_bg else "")
    coarse_body = _join([f"the {o.noun}" for o in coarse_order])
    coarse_template = _COARSE_TEMPLATES[int(rng.integers(len(_COARSE_TEMPLATES)))]
    coarse = coarse_template.format(body=coarse_body) + (f" {bg_phrase}" if with_bg else "")
    return caption, coarse


# --------------------------------------------------------------------------- datasets


def iter_scenes(num_scenes: int, seed: int = 0, config: WorldConfig | None = None,
                start: int = 0) -> Iterator[tuple[int, Scene, str, str]]:
    """Yield ``(scene_id, scene, caption, coarse_caption)`` for scenes ``start .. start+num_scenes-1``."""
    config = config or WorldConfig()
    for i in range(start, start + num_scenes):
        rng = _scene_rng(seed, i)
        scene = generate_scene(rng, config)
        caption, coarse = describe_scene(scene, rng, config)
        yield i, scene, caption, coarse


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def make_synthetic_dataset(
    num_scenes: int,
    seed: int = 0,
    config: WorldConfig | None = None,
    start: int = 0,
    progress: bool = False,
):
    """Build a :class:`datasets.Dataset` of ``num_scenes`` rendered scenes.

    Columns: ``image`` (``datasets.Image``), ``caption`` (detailed, with concept
    words), ``coarse_caption`` (objects only), ``scene_id``, ``background`` and
    ``objects`` (list of ``{noun, color, size, x0, y0, x1, y1, depth}`` with boxes
    in pixels of the rendered image). Use disjoint ``start`` ranges or different
    seeds for train and evaluation splits.
    """
    import datasets

    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
    config = config or WorldConfig()
    rows: dict[str, list] = {k: [] for k in ("image", "caption", "coarse_caption", "scene_id", "background", "objects")}
    scenes = iter_scenes(num_scenes, seed, config, start)
    if progress:
        from tqdm.auto import tqdm

        scenes = tqdm(scenes, total=num_scenes, desc="rendering synthetic scenes", unit="scene")
    for scene_id, scene, caption, coarse in scenes:
        rows["image"].append({"bytes": _png_bytes(render_scene(scene, config.supersample)), "path": None})
        rows["caption"].append(caption)
        rows["coarse_caption"].append(coarse)
        rows["scene_id"].append(scene_id)
        rows["background"].append(scene.background)
        rows["objects"].append([
            {"noun": o.noun, "color": o.color, "size": o.size, "x0": o.box[0], "y0": o.box[1],
             "x1": o.box[2], "y1": o.box[3], "depth": o.depth}
            for o in scene.objects
        ])
    features = datasets.Features({
        "image": datasets.Image(),
        "caption": datasets.Value("string"),
        "coarse_caption": datasets.Value("string"),
        "scene_id": datasets.Value("int64"),
        "background": datasets.Value("string"),
        "objects": datasets.List({
            "noun": datasets.Value("string"),
            "color": datasets.Value("string"),
            "size": datasets.Value("string"),
            "x0": datasets.Value("float32"),
            "y0": datasets.Value("float32"),
            "x1": datasets.Value("float32"),
            "y1": datasets.Value("float32"),
            "depth": datasets.Value("int32"),
        }),
    })
    return datasets.Dataset.from_dict(rows, features=features)


# --------------------------------------------------------------------------- edits (InpaintCOCO-style pairs)

#: the concepts :func:`edit_scene` can change in a picture
EDITABLE_CONCEPTS: tuple[str, ...] = ("color", "size", "object", "location")
_OTHER_SIZE = {"small": "large", "large": "small"}


@dataclass(frozen=True)
class SceneEdit:
    """A scene with one concept changed, and the caption that is true for it.

    The original caption names ``keyword`` where the edited one names
    ``replacement``; everything else in both captions is true of both pictures, so
    each caption matches exactly one of the two images (the pairs of InpaintCOCO).
    """

    scene: Scene
    caption: str
    concept: str
    keyword: str
    replacement: str
    noun: str | None  # the object that changed (None for a location edit, which moves the layout)


def _first_noun(caption: str, scene: Scene, position: int = 0) -> tuple[int, SceneObject] | None:
    """``(where, object)`` for the scene object whose noun comes first in ``caption`` at or after ``position``."""
    found = [(at, obj) for obj in scene.objects if (at := caption.find(obj.noun, position)) >= 0]
    return min(found, key=lambda item: item[0]) if found else None


def _replace_object(scene: Scene, old: SceneObject, new: SceneObject) -> Scene:
    return dataclasses.replace(scene, objects=tuple(new if o is old else o for o in scene.objects))


def _resized_box(box: Box, side: float, s: float) -> tuple[float, float, float, float]:
    """A square box of ``side`` with ``box``'s centre, shifted to stay inside the canvas."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = min(max(cx - side / 2, 0.0), s - side)
    y0 = min(max(cy - side / 2, 0.0), s - side)
    return tuple(round(float(v), 3) for v in (x0, y0, x0 + side, y0 + side))


def edit_scene(scene: Scene, caption: str, concept: str, rng: np.random.Generator,
               config: WorldConfig | None = None) -> SceneEdit | None:
    """Change ``concept`` in the picture where ``caption`` names it first, or ``None`` if it cannot.

    The edit follows the caption's first keyword of the concept (the occurrence
    concept accuracy varies) and the concept's own substitution rule, as an
    InpaintCOCO annotator would:

    * ``color``: the object the colour word describes is repainted in another colour;
    * ``size``: that object goes from small to large or back, about its centre
      (the size word becomes its concept substitute, "little" -> "big");
    * ``object``: the first named object becomes another object of the world that
      is not in the scene, same colour, size and place;
    * ``location``: the layout is mirrored (left/right: horizontally; above/below,
      over/under: vertically; in front of/behind: drawing order reversed), which
      flips that relation and no other word of the caption.
    """
    from hf_hardneg.concepts import get_concept
    from hf_hardneg.substitution import find_keywords

    config = config or WorldConfig(image_size=scene.image_size)
    if concept not in EDITABLE_CONCEPTS:
        raise ValueError(f"edit_scene: cannot edit {concept!r}; editable concepts: {list(EDITABLE_CONCEPTS)}")
    s = scene.image_size
    if concept == "object":
        first = _first_noun(caption, scene)
        if first is None:
            return None
        start, obj = first
        present = {o.noun for o in scene.objects}
        choices = [n for n in config.objects if n not in present]
        if not choices:
            return None
        noun = choices[int(rng.integers(len(choices)))]
        edited = _replace_object(scene, obj, dataclasses.replace(obj, noun=noun))
        text = caption[:start] + noun + caption[start + len(obj.noun):]
        return SceneEdit(edited, text, concept, obj.noun, noun, obj.noun)

    matches = find_keywords(caption, concept)
    if not matches:
        return None
    match = matches[0]
    rules = get_concept(concept).substitutions[match.keyword]
    if concept == "location":
        replacement = rules[0]
        if match.keyword in ("left", "right"):
            objects = [dataclasses.replace(o, box=(s - o.box[2], o.box[1], s - o.box[0], o.box[3]))
                       for o in scene.objects]
        elif match.keyword in ("above", "below", "over", "under"):
            objects = [dataclasses.replace(o, box=(o.box[0], s - o.box[3], o.box[2], s - o.box[1]))
                       for o in scene.objects]
        elif match.keyword in ("in front of", "behind"):
            top = max(o.depth for o in scene.objects)
            objects = [dataclasses.replace(o, depth=top - o.depth) for o in scene.objects]
        else:  # a keyword this world never writes (foreground, back, ...)
            return None
        edited, noun = dataclasses.replace(scene, objects=tuple(objects)), None
    else:
        first = _first_noun(caption, scene, match.end)
        if first is None:
            return None
        obj = first[1]
        if concept == "color":
            # an overlapping neighbour keeps a different colour, so both outlines stay visible
            taken = {obj.color} | {o.color for o in scene.objects
                                   if o is not obj and _overlap_fraction(o.box, obj.box) > 0}
            options = [c for c in rules if c in config.colors and c not in taken]
            if not options:
                return None
            replacement = options[int(rng.integers(len(options)))]
            edited = _replace_object(scene, obj, dataclasses.replace(obj, color=replacement))
        else:  # size
            new_size = _OTHER_SIZE.get(obj.size)
            options = [w for w in rules if new_size and w in SIZE_WORDS[new_size]]
            if not options:
                return None
            replacement = options[int(rng.integers(len(options)))]
            old_side = obj.box[2] - obj.box[0]
            side = old_side * SIZE_SCALE[new_size] / SIZE_SCALE[obj.size]
            edited = _replace_object(scene, obj, dataclasses.replace(
                obj, size=new_size, box=_resized_box(obj.box, side, s)))
        noun = obj.noun
    text = caption[:match.start] + replacement + caption[match.end:]
    return SceneEdit(edited, text, concept, match.keyword, replacement, noun)


def make_edited_pairs(
    num_scenes: int,
    seed: int = 0,
    config: WorldConfig | None = None,
    start: int = 0,
    concepts: Sequence[str] = EDITABLE_CONCEPTS,
    progress: bool = False,
):
    """InpaintCOCO-style pairs of the synthetic world: each scene and a copy with one concept changed.

    Columns as in the published InpaintCOCO (``concept``, ``coco_image``,
    ``coco_caption``, ``inpaint_image``, ``inpaint_caption``) plus ``scene_id``,
    ``keyword`` and ``replacement``, so :func:`hf_hardneg.data.paired_edits.paired_edit_rows`
    trains on them and the ``inpaintcoco`` evaluation task (Equation (1)) scores
    them. The concept of each pair is drawn among ``concepts`` that its caption
    names; scenes whose caption names none are left out, and their count is in
    ``dataset.info.description``.
    """
    import datasets

    config = config or WorldConfig()
    bad = [c for c in concepts if c not in EDITABLE_CONCEPTS]
    if bad or not concepts:
        raise ValueError(f"make_edited_pairs: concepts {list(concepts)}; choose among {list(EDITABLE_CONCEPTS)}")
    rows: dict[str, list] = {k: [] for k in ("concept", "coco_image", "coco_caption", "inpaint_image",
                                             "inpaint_caption", "scene_id", "keyword", "replacement")}
    skipped = 0
    scenes = iter_scenes(num_scenes, seed, config, start)
    if progress:
        from tqdm.auto import tqdm

        scenes = tqdm(scenes, total=num_scenes, desc="rendering edited pairs", unit="pair")
    for scene_id, scene, caption, _ in scenes:
        rng = np.random.default_rng([int(seed), int(scene_id), 7])
        edit = None
        for c in [concepts[int(i)] for i in rng.permutation(len(concepts))]:
            edit = edit_scene(scene, caption, c, rng, config)
            if edit is not None:
                break
        if edit is None:
            skipped += 1
            continue
        for column, value in (("concept", edit.concept), ("coco_caption", caption), ("inpaint_caption", edit.caption),
                              ("scene_id", scene_id), ("keyword", edit.keyword), ("replacement", edit.replacement)):
            rows[column].append(value)
        rows["coco_image"].append({"bytes": _png_bytes(render_scene(scene, config.supersample)), "path": None})
        rows["inpaint_image"].append({"bytes": _png_bytes(render_scene(edit.scene, config.supersample)), "path": None})
    features = datasets.Features({
        "concept": datasets.Value("string"), "coco_image": datasets.Image(), "coco_caption": datasets.Value("string"),
        "inpaint_image": datasets.Image(), "inpaint_caption": datasets.Value("string"),
        "scene_id": datasets.Value("int64"), "keyword": datasets.Value("string"),
        "replacement": datasets.Value("string")})
    info = datasets.DatasetInfo(features=features, description=(
        f"{len(rows['scene_id'])} edited pairs of {num_scenes} synthetic scenes; {skipped} scenes left out because "
        f"their caption names none of {list(concepts)} in an editable way"))
    return datasets.Dataset.from_dict(rows, features=features, info=info)

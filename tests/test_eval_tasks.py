"""Evaluation sets, their scoring, and the Embedder.

Scoring is checked end to end with table-lookup "models" whose answers are
known (an oracle scores 1.0, a constant model at most chance, for every kind of
set); the Embedder is checked on tiny real CLIP / SigLIP / dual-encoder models.
"""

from __future__ import annotations

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from hf_hardneg.data.images import open_image
from hf_hardneg.evaluation.encoding import Embedder, LazyImages
from hf_hardneg.evaluation.tasks import (
    ClassificationSet,
    MultipleChoiceSet,
    PairedSet,
    RetrievalSet,
    build_concept_set,
    build_retrieval_set,
    score_classification,
    score_multiple_choice,
    score_paired,
    score_retrieval,
)


class TableEmbedder:
    """A stand-in model: image ``k`` (named "img<k>") and the texts listed for it share unit vector e_k.

    Every other text gets e_last, orthogonal to all images (an oracle). With
    ``constant=True`` everything maps to the same vector (a model that cannot
    tell anything apart).
    """

    tie_tolerance = 1e-5
    device = "cpu"

    def __init__(self, truth: dict[int, list[str]], dim: int, constant: bool = False):
        self.text_to_image = {t: k for k, texts in truth.items() for t in texts}
        self.dim, self.constant = dim, constant

    def _vec(self, k: int | None) -> torch.Tensor:
        v = torch.zeros(self.dim)
        v[0 if self.constant else (self.dim - 1 if k is None else k)] = 1.0
        return v

    def embed_images(self, images, desc=""):
        return torch.stack([self._vec(int(str(im)[3:])) for im in images])

    def embed_texts(self, texts, desc=""):
        return torch.stack([self._vec(self.text_to_image.get(t)) for t in texts])

    def embed_class_names(self, names, templates):
        return self.embed_texts(list(names))


# ---------------------------------------------------------------- scoring with oracle / constant models
def _mc_set():
    images = [f"img{k}" for k in range(4)]
    candidates = [["a red bus", "a blue bus", "a green bus"], ["two cats", "two dogs"],
                  ["a tall man", "a short man"], ["a big dog", "a small dog", "a huge dog", "a tiny dog"]]
    groups = ["color", "object", "size", "size"]
    labels = [0, 1, 0, 2]  # position of the truth varies on purpose
    truth = {0: ["a red bus"], 1: ["two dogs"], 2: ["a tall man"], 3: ["a huge dog"]}
    return MultipleChoiceSet(images, [0, 1, 2, 3], candidates, labels, groups), truth


def test_multiple_choice_oracle_and_constant():
    mc, truth = _mc_set()
    oracle = score_multiple_choice(TableEmbedder(truth, 5), mc)
    assert oracle["micro_average"]["accuracy"] == 1.0 and oracle["macro_average"]["accuracy"] == 1.0
    assert oracle["size"] == {"accuracy": 1.0, "count": 2, "chance": pytest.approx((1 / 2 + 1 / 4) / 2)}
    constant = score_multiple_choice(TableEmbedder(truth, 5, constant=True), mc)
    for group in ("color", "object", "size", "micro_average", "macro_average"):
        assert constant[group]["accuracy"] == 0.0
    assert constant["micro_average"]["accuracy"] <= mc.chance


def test_multiple_choice_categories_and_subset():
    mc, truth = _mc_set()
    mc.categories = ["c1", "c1", "c2", "c3"]
    out = score_multiple_choice(TableEmbedder(truth, 5), mc)
    assert out["size"]["per_category"] == {"c2": {"accuracy": 1.0, "count": 1}, "c3": {"accuracy": 1.0, "count": 1}}
    assert out["size"]["category_macro_average"] == 1.0
    sub = mc.subset(2, seed=1)
    assert len(sub) == 2 and sub.subset(None) is sub
    assert mc.subset(2, seed=1).image_index == sub.image_index  # deterministic


def test_multiple_choice_validation():
    with pytest.raises(ValueError, match="at least 2"):
        MultipleChoiceSet(["img0"], [0], [["only one"]], [0], ["g"])
    with pytest.raises(ValueError, match="not an index"):
        MultipleChoiceSet(["img0"], [0], [["a", "b"]], [2], ["g"])
    with pytest.raises(ValueError, match="entries"):
        MultipleChoiceSet(["img0"], [0, 0], [["a", "b"]], [0], ["g"])


def test_paired_oracle_and_constant():
    images = [f"img{k}" for k in range(4)]
    ps = PairedSet(images, [0, 2], [1, 3], ["a white sink", "a cat"], ["a black sink", "a dog"], ["color", "object"])
    truth = {0: ["a white sink"], 1: ["a black sink"], 2: ["a cat"], 3: ["a dog"]}
    oracle = score_paired(TableEmbedder(truth, 5), ps)
    assert oracle["micro_average"] == {"text_score": 1.0, "image_score": 1.0, "group_score": 1.0, "count": 2}
    constant = score_paired(TableEmbedder(truth, 5, constant=True), ps)
    assert constant["micro_average"]["group_score"] == 0.0 and constant["macro_average"]["image_score"] == 0.0


def test_retrieval_and_classification_oracle_and_constant():
    images = [f"img{k}" for k in range(6)]
    texts = [f"caption {j} of image {k}" for k in range(6) for j in range(3)]
    owner = [k for k in range(6) for _ in range(3)]
    truth = {k: texts[3 * k: 3 * k + 3] for k in range(6)}
    rs = RetrievalSet(images, texts, owner)
    oracle = score_retrieval(TableEmbedder(truth, 7), rs)
    assert oracle["t2i_R@1"] == oracle["i2t_R@1"] == 1.0
    constant = score_retrieval(TableEmbedder(truth, 7, constant=True), rs, ks=(1, 5))
    assert constant["t2i_R@1"] <= 1 / 6 and constant["t2i_R@5"] <= 5 / 6 and constant["i2t_R@5"] <= 5 / 6

    names = ["zero", "one", "two"]
    cs = ClassificationSet(["img0", "img1", "img2", "img1"], [0, 1, 2, 1], names)
    class_truth = {0: ["zero"], 1: ["one"], 2: ["two"]}
    assert score_classification(TableEmbedder(class_truth, 4), cs)["top1"] == 1.0
    const = score_classification(TableEmbedder(class_truth, 4, constant=True), cs)
    assert const["top1"] <= const["chance"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="outside"):
        ClassificationSet(["img0"], [5], names)


# ---------------------------------------------------------------- builders
def _captioned_dataset():
    images = [PIL.Image.new("RGB", (8, 8), c) for c in ("red", "blue", "green")]
    return datasets.Dataset.from_dict({
        "image": images,
        "caption": ["a red bus on the left", "a dog sleeping", "a small white cat"],
        "image_id": [10, 11, 12],
    }, features=datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                   "image_id": datasets.Value("int64")}))


def test_build_concept_set_uses_every_substitution_of_the_first_occurrence():
    from hf_hardneg.concepts import get_concept
    from hf_hardneg.substitution import enumerate_negatives

    ds = _captioned_dataset()
    mc = build_concept_set(ds, ["color", "location", "size"])
    by_group = {}
    for i, g in enumerate(mc.groups):
        by_group.setdefault(g, []).append(i)
    assert sorted(by_group) == ["color", "location", "size"]
    colour = [mc.candidates[i] for i in by_group["color"]]
    assert [c[0] for c in colour] == ["a red bus on the left", "a small white cat"]
    n_colours = len(get_concept("color").keywords)
    assert all(len(c) == n_colours for c in colour)  # the truth + all n-1 substitutions
    assert colour[0][1:] == [n.text for n in enumerate_negatives("a red bus on the left", "color")]
    assert mc.labels == [0] * len(mc)
    assert mc.skipped["size: captions without keyword"] == 2
    # images decode lazily from the dataset rows
    assert open_image(mc.images[mc.image_index[by_group["size"][0]]]).size == (8, 8)
    capped = build_concept_set(ds, ["color"], max_examples=1)
    assert len(capped) == 1


def test_build_retrieval_set_rows_sharing_an_image_and_list_captions():
    coco_like = datasets.Dataset.from_dict({"image": ["a.jpg", "a.jpg", "b.jpg"], "caption": ["x", "y", "z"],
                                            "image_id": [1, 1, 2]})
    rs = build_retrieval_set(coco_like, image_key_column="image_id")
    assert len(rs.images) == 2 and rs.texts == ["x", "y", "z"] and rs.text_to_image == [0, 0, 1]
    flickr_like = datasets.Dataset.from_dict({"image": ["a.jpg", "b.jpg"], "caption": [["x", "y"], ["z"]]})
    rs = build_retrieval_set(flickr_like)
    assert rs.text_to_image == [0, 0, 1]
    assert len(build_retrieval_set(flickr_like, max_images=1).images) == 1
    with pytest.raises(KeyError, match="caption_column"):
        build_retrieval_set(flickr_like, caption_column="text")


# ---------------------------------------------------------------- Embedder on tiny real models
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, tiny_captions):
    from hf_hardneg.testing import make_tiny_model

    out = {}
    for kind in ("clip", "siglip", "dual_encoder"):
        path = tmp_path_factory.mktemp(kind)
        make_tiny_model(tiny_captions, path, kind=kind)
        out[kind] = path
    return out


@pytest.mark.parametrize("kind", ["clip", "siglip", "dual_encoder"])
def test_embedder_matches_direct_encoding(tiny_models, kind):
    from hf_hardneg.models import encode_texts

    torch.manual_seed(0)
    emb = Embedder.from_pretrained(tiny_models[kind], device="cpu", progress=False, text_batch_size=2)
    texts = ["a white cat sits under a black umbrella", "two dogs", "a white cat sits under a black umbrella",
             "a large red bus on the left side of the street"]
    got = emb.embed_texts(texts)
    assert got.shape[0] == 4 and torch.allclose(got.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.equal(got[0], got[2])
    for i, t in enumerate(texts):
        padding = "max_length" if kind == "siglip" else False
        enc = emb.tokenizer([t], padding=padding, max_length=emb.max_length, truncation=True, return_tensors="pt")
        mask = enc.get("attention_mask")
        with torch.inference_mode():
            ref = encode_texts(emb.model, enc["input_ids"], mask)
        assert torch.allclose(got[i], torch.nn.functional.normalize(ref, dim=-1)[0], atol=1e-5)


def test_texts_the_tokenizer_cannot_tell_apart_get_identical_embeddings(tiny_clip_dir):
    emb = Embedder.from_pretrained(tiny_clip_dir, device="cpu", progress=False)
    # "zebra" and "giraffe-like" are not in the tiny vocabulary: both become <unk>
    a, b = emb.embed_texts(["a zebra cat", "a quokka cat"])
    assert torch.equal(a, b)


def test_embedder_images_from_pil_paths_and_pixels(tiny_clip_dir, tmp_path):
    emb = Embedder.from_pretrained(tiny_clip_dir, device="cpu", progress=False, batch_size=2)
    rng = np.random.default_rng(0)
    pil = [PIL.Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)) for _ in range(3)]
    path = tmp_path / "x.png"
    pil[0].convert("L").save(path)  # grayscale on disk: converted to RGB on read
    out = emb.embed_images([pil[0], pil[1], pil[2], str(path)])
    assert out.shape[0] == 4
    pixels = emb.image_processor(images=pil, return_tensors="pt")["pixel_values"]
    assert torch.allclose(emb.embed_images(pixels), out[:3], atol=1e-5)
    ds = datasets.Dataset.from_dict({"image": pil}, features=datasets.Features({"image": datasets.Image()}))
    assert torch.allclose(emb.embed_images(LazyImages(ds, "image", [2, 0])), out[[2, 0]], atol=1e-5)


def test_embedder_errors_and_model_mode(tiny_clip_dir, tmp_path):
    emb = Embedder.from_pretrained(tiny_clip_dir, device="cpu", progress=False)
    with pytest.raises(TypeError, match="text #1"):
        emb.embed_texts(["fine", None])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        emb.embed_images([str(broken)])
    with pytest.raises(OSError, match="cannot load an evaluation model"):
        Embedder.from_pretrained(tmp_path, device="cpu")
    emb.model.train()
    emb.embed_texts(["a cat"])
    assert emb.model.training  # restored after evaluation
    with pytest.raises(ValueError, match="autocast"):
        Embedder(emb.model, emb.tokenizer, emb.image_processor, autocast_dtype="int8")
    assert Embedder(emb.model, emb.tokenizer, emb.image_processor, autocast_dtype="bf16").tie_tolerance > 1e-3

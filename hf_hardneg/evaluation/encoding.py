"""Batched, de-duplicated encoding of images and texts for evaluation.

Every benchmark here is "encode everything once, then compare vectors", so the
cost is dominated by the encoders. Three things keep it low and the results
trustworthy:

* **Texts are de-duplicated twice**: first by string, then by token ids. The
  concept task alone sends ~1M candidate captions through the text encoder
  for COCO's object concept, many of them repeated. De-duplicating by token ids
  also means that two strings the tokenizer cannot tell apart (e.g. two unknown
  words both mapped to ``<unk>``) get *bitwise identical* embeddings, so the
  metrics see an exact tie and count it against the model -- instead of a
  near-tie from different batch padding that ``argmax`` would break at random.
* **Texts are batched by length** so that little compute is spent on padding
  (SigLIP is always padded to its fixed length; it pools the last position).
* **Images are decoded lazily** in a DataLoader (optionally with workers), with
  JPEG draft decoding at the processor's target size, on the training path
  (:mod:`hf_hardneg.data.image_pipeline`): on a GPU the workers only decode and
  the device resizes and normalises; on the CPU the workers resize in uint8.

Embeddings come back L2-normalised, float32, on the CPU. Models are only ever
run through :mod:`hf_hardneg.models`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .metrics import default_tie_tolerance

__all__ = ["Embedder", "LazyImages", "as_embedder", "resolve_device", "undecoded"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> CUDA when available, else MPS, else CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:  # "Expected one of cpu, cuda, ... device type at start of device string"
        raise ValueError(f"device {device!r} is not a torch device name (cpu, cuda, cuda:1, mps, ...): {err}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        # otherwise the first .to(device) fails deep in torch with "Torch not compiled with CUDA enabled"
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU on this machine "
                         f"(torch {torch.__version__}); use --device cpu or auto")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return resolved


_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp32": None, "float32": None, "no": None, "none": None}


def _autocast_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    key = str(value).lower()
    if key not in _DTYPES:
        raise ValueError(f"unknown autocast dtype {value!r}; use one of fp16, bf16, fp32")
    return _DTYPES[key]


def undecoded(dataset, column: str):
    """``dataset`` with ``column``'s images left as ``{"path", "bytes"}`` entries.

    ``datasets`` fully decodes an image on access; leaving that to
    :func:`hf_hardneg.data.images.open_image` lets JPEGs be draft-decoded at the
    processor's size (several times faster for COCO-sized photos).
    """
    import datasets

    feature = dataset.features[column]
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(column, datasets.Image(decode=False))
    list_types = tuple(t for t in (getattr(datasets, "List", None), datasets.Sequence) if t is not None)
    if isinstance(feature, list_types) and isinstance(getattr(feature, "feature", None), datasets.Image):
        return dataset.cast_column(column, type(feature)(datasets.Image(decode=False)))
    return dataset


class LazyImages(Sequence):
    """A read-only sequence of images that decodes row ``i`` of one dataset column only when asked.

    Keeps a benchmark's 5,000 COCO images on disk instead of in memory. ``rows``
    picks (and may repeat) rows of ``dataset``.
    """

    def __init__(self, dataset, column: str, rows: Sequence[int] | None = None):
        if column not in dataset.column_names:
            raise KeyError(f"image column {column!r} not found; the dataset has {dataset.column_names}")
        self._data = undecoded(dataset.select_columns([column]), column)
        self.column = column
        self.rows = list(range(len(dataset))) if rows is None else [int(r) for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._data[self.rows[index]][self.column]


class _ImageBatches(torch.utils.data.Dataset):
    def __init__(self, images: Sequence, pipeline):
        self.images, self.pipeline = images, pipeline

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        from hf_hardneg.data.images import CorruptImageError

        source = self.images[index]
        try:
            return self.pipeline.open(source)
        except CorruptImageError as err:
            raise CorruptImageError(f"image #{index}: {err}") from err


@dataclass
class Embedder:
    """A dual encoder with its tokenizer and image processor, ready to embed for evaluation.

    Build it from a checkpoint with :meth:`from_pretrained`, or wrap objects you
    already have (e.g. inside a training callback). ``device=None`` keeps the
    model where it is. ``autocast_dtype`` (``"fp16"``/``"bf16"``) runs the encoders
    under ``torch.autocast``; metrics then use a wider tie tolerance
    (:func:`~hf_hardneg.evaluation.metrics.default_tie_tolerance`).
    ``image_preprocessing`` picks the image tier as in training (``"auto"``: the
    device tier on a GPU, the CPU tier otherwise; see
    :mod:`hf_hardneg.data.image_pipeline`).
    """

    model: Any
    tokenizer: Any
    image_processor: Any
    device: torch.device | str | None = None
    autocast_dtype: torch.dtype | str | None = None
    batch_size: int = 64
    text_batch_size: int | None = None
    num_workers: int = 0
    progress: bool = True
    name: str | None = None
    image_preprocessing: str = "auto"
    _max_length: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.autocast_dtype = _autocast_dtype(self.autocast_dtype)
        if self.device is None:
            try:
                self.device = next(self.model.parameters()).device
            except StopIteration:
                self.device = torch.device("cpu")
        else:
            self.device = resolve_device(self.device)
            self.model.to(self.device)
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.name is None:
            self.name = getattr(getattr(self.model, "config", None), "_name_or_path", None) or type(self.model).__name__

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        *,
        device: str | torch.device | None = "auto",
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
        **kwargs,
    ) -> "Embedder":
        """Load model, tokenizer and image processor saved with ``save_pretrained`` (local dir or Hub id).

        ``dtype`` loads the weights in that precision (e.g. ``"bfloat16"``);
        never use it for training, only for evaluation. Tokens for private
        repos come from the environment (``HF_TOKEN``), never from arguments.
        """
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        from hf_hardneg.models import check_local_model_path

        path = os.fspath(path_or_id)
        check_local_model_path(path, "evaluation model")
        at: dict[str, Any] = {"revision": revision} if revision else {}
        weights = {"dtype": getattr(torch, dtype) if isinstance(dtype, str) else dtype} if dtype is not None else {}
        try:
            model = AutoModel.from_pretrained(path, **at, **weights)
            tokenizer = AutoTokenizer.from_pretrained(path, **at)
            image_processor = AutoImageProcessor.from_pretrained(path, **at)
        except (OSError, ValueError) as err:  # missing files / no config.json model_type
            hint = ("the directory exists but lacks a model, tokenizer or image processor saved with save_pretrained"
                    if Path(path).is_dir() else
                    "not a local directory; as a Hub id it could not be downloaded (check the name, your network, "
                    "or HF_TOKEN for private models)")
            raise OSError(f"cannot load an evaluation model from {path!r}: {hint}. ({err})") from err
        model.eval()
        return cls(model, tokenizer, image_processor, device=device, name=kwargs.pop("name", path), **kwargs)

    # ------------------------------------------------------------------ helpers
    @property
    def tie_tolerance(self) -> float:
        """The tie tolerance that matches the precision the embeddings are computed in."""
        weights = next(self.model.parameters()).dtype
        dtype = self.autocast_dtype or (weights if weights in (torch.float16, torch.bfloat16) else torch.float32)
        return default_tie_tolerance(dtype)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=self.autocast_dtype)

    @contextlib.contextmanager
    def _eval_mode(self):
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), self._autocast():
                yield
        finally:
            if was_training:
                self.model.train()

    def _bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress or total == 0, leave=False)

    @property
    def pads_to_max_length(self) -> bool:
        """SigLIP pools the last position, so its texts must be padded to the length it was trained with."""
        from hf_hardneg.models import family_of

        return family_of(self.model).pads_to_max_length

    @property
    def max_length(self) -> int:
        """Longest token sequence (see :func:`hf_hardneg.models.max_text_length`)."""
        if self._max_length is None:
            from hf_hardneg.models import max_text_length

            self._max_length = max_text_length(self.model, self.tokenizer)
        return self._max_length

    # ------------------------------------------------------------------ texts
    def embed_texts(self, texts: Sequence[str], desc: str = "texts") -> torch.Tensor:
        """Normalised ``(len(texts), d)`` float32 CPU embeddings; repeated texts are encoded once."""
        from hf_hardneg.models import encode_texts

        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text #{i} is a {type(t).__name__}, not a string: {t!r}")
        if not texts:
            return torch.zeros(0, 0)
        unique = list(dict.fromkeys(texts))
        string_slot = {t: i for i, t in enumerate(unique)}
        pad_max = self.pads_to_max_length
        encoded = self.tokenizer(unique, truncation=True, max_length=self.max_length,
                                 padding="max_length" if pad_max else False)
        ids = encoded["input_ids"]
        masks = encoded.get("attention_mask")  # SigLIP's tokenizer returns none: it was trained without one
        token_slot: dict[tuple[int, ...], int] = {}
        string_to_token = [token_slot.setdefault(tuple(seq), len(token_slot)) for seq in ids]
        first_of_token: dict[int, int] = {}
        for s, t in enumerate(string_to_token):
            first_of_token.setdefault(t, s)
        order = sorted(first_of_token.values(), key=lambda s: len(ids[s]))  # length-bucketed batches
        batch = self.text_batch_size or max(self.batch_size, 256)
        out: torch.Tensor | None = None
        with self._eval_mode(), self._bar(len(order), f"encoding {desc}") as bar:
            for start in range(0, len(order), batch):
                chunk = order[start : start + batch]
                if pad_max:
                    input_ids = torch.tensor([ids[s] for s in chunk])
                    mask = torch.tensor([masks[s] for s in chunk]) if masks is not None else None
                else:
                    padded = self.tokenizer.pad([{"input_ids": ids[s]} for s in chunk], return_tensors="pt",
                                                return_attention_mask=True)
                    input_ids, mask = padded["input_ids"], padded["attention_mask"]
                emb = encode_texts(self.model, input_ids.to(self.device),
                                   None if mask is None else mask.to(self.device))
                emb = torch.nn.functional.normalize(emb.float(), dim=-1).cpu()
                if out is None:
                    out = torch.empty(len(token_slot), emb.shape[1])
                out[[string_to_token[s] for s in chunk]] = emb
                bar.update(len(chunk))
        index = torch.tensor([string_to_token[string_slot[t]] for t in texts])
        return out[index]

    # ------------------------------------------------------------------ images
    def embed_images(self, images: Sequence | torch.Tensor, desc: str = "images") -> torch.Tensor:
        """Normalised ``(n, d)`` float32 CPU embeddings of PIL images, paths, ``datasets`` image entries,
        or a ready ``(n, C, H, W)`` pixel tensor."""
        from hf_hardneg.data.image_pipeline import finish_images
        from hf_hardneg.models import encode_images

        if isinstance(images, torch.Tensor):
            if images.dim() != 4:
                raise ValueError(f"a pixel tensor must be (n, C, H, W); got shape {tuple(images.shape)}")
            batches: Any = (({"pixel_values": images[i : i + self.batch_size]}, min(self.batch_size, len(images) - i))
                            for i in range(0, len(images), self.batch_size))
            total = len(images)
        else:
            total = len(images)
            batches = self._image_loader(images)
        if total == 0:
            return torch.zeros(0, 0)
        parts = []
        with self._eval_mode(), self._bar(total, f"encoding {desc}") as bar:
            for inputs, n in batches:
                inputs = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
                inputs = finish_images(inputs)
                pixel_values = inputs.pop("pixel_values")
                emb = encode_images(self.model, pixel_values, **inputs)
                parts.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu())
                bar.update(n)
        return torch.cat(parts)

    def _image_loader(self, images: Sequence):
        from hf_hardneg.data.image_pipeline import ImagePipeline

        pipeline = ImagePipeline(self.image_processor, self.image_preprocessing, device=self.device)

        def collate(batch):
            return pipeline.collate(batch), len(batch)

        dataset = _ImageBatches(images, pipeline)
        return torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, shuffle=False,
                                           num_workers=self.num_workers, collate_fn=collate)

    def embed_class_names(self, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """One normalised embedding per class: the mean over prompt templates (``"a photo of a {}."``)."""
        if not templates or any("{}" not in t for t in templates):
            raise ValueError("every template must contain '{}' where the class name goes")
        prompts = [t.format(name) for name in class_names for t in templates]
        emb = self.embed_texts(prompts, desc="class prompts").view(len(class_names), len(templates), -1)
        return torch.nn.functional.normalize(emb.mean(dim=1), dim=-1)


def as_embedder(model_or_path, tokenizer=None, image_processor=None, **kwargs) -> Embedder:
    """Accept an :class:`Embedder`, a path/Hub id, or a model plus its tokenizer and image processor."""
    if isinstance(model_or_path, Embedder):
        return model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        return Embedder.from_pretrained(model_or_path, **kwargs)
    if tokenizer is None or image_processor is None:
        raise ValueError("pass tokenizer= and image_processor= together with a model object "
                         "(or pass the checkpoint path instead of the model)")
    kwargs.pop("dtype", None)
    kwargs.pop("revision", None)
    return Embedder(model_or_path, tokenizer, image_processor, **kwargs)


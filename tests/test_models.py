"""Model-family helpers: embeddings, logit scale, wrappers and transformers-version differences."""

from __future__ import annotations

import math
import socket

import pytest
import torch

from hf_hardneg import models
from hf_hardneg.loss import HardNegativeContrastiveLoss, HardNegativeSigmoidLoss, build_loss_for
from hf_hardneg.testing import make_tiny_model

torch.set_num_threads(1)
KINDS = ["clip", "siglip", "dual_encoder"]


@pytest.fixture(scope="module")
def tiny(tiny_captions):
    built = {kind: make_tiny_model(tiny_captions, kind=kind) for kind in KINDS}
    for model, _, _ in built.values():
        model.eval()
    return built


@pytest.fixture(scope="module")
def batch(tiny_captions):
    torch.manual_seed(0)
    return tiny_captions, torch.randn(len(tiny_captions), 3, 32, 32)


@pytest.mark.parametrize("kind", KINDS)
def test_encoders_return_projected_unnormalised_embeddings(tiny, batch, kind):
    model, tokenizer, _ = tiny[kind]
    captions, pixels = batch
    enc = tokenizer(captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        images = models.encode_images(model, pixels)
        texts = models.encode_texts(model, enc.input_ids, enc.attention_mask)
        out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, pixel_values=pixels)
    assert images.shape == texts.shape == (len(captions), out.image_embeds.shape[-1])
    assert not torch.allclose(images.norm(dim=-1), torch.ones(len(captions)))  # not normalised
    # the model's own forward normalises the same vectors
    torch.testing.assert_close(torch.nn.functional.normalize(images, dim=-1), out.image_embeds)
    torch.testing.assert_close(torch.nn.functional.normalize(texts, dim=-1), out.text_embeds)


@pytest.mark.parametrize("kind", KINDS)
def test_encode_batch_takes_more_captions_than_images(tiny, batch, kind):
    model, tokenizer, _ = tiny[kind]
    captions, pixels = batch
    texts = captions + [c.replace("a ", "the ") for c in captions]  # positives, then one negative per image
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        image_embeds, text_embeds = models.encode_batch(model, pixels, enc.input_ids, enc.attention_mask)
        direct = models.encode_texts(model, enc.input_ids, enc.attention_mask)
    assert image_embeds.shape[0] == len(captions) and text_embeds.shape[0] == 2 * len(captions)
    torch.testing.assert_close(text_embeds, torch.nn.functional.normalize(direct, dim=-1))


def test_transformers_4_tensor_outputs_are_accepted(tiny, batch):
    # transformers 4.x returned the projected embedding itself from the feature getters
    from transformers import CLIPModel

    class FourStyleCLIP(CLIPModel):
        def get_image_features(self, pixel_values, **kwargs):
            return super().get_image_features(pixel_values=pixel_values, **kwargs).pooler_output

        def get_text_features(self, input_ids, attention_mask=None, **kwargs):
            return super().get_text_features(input_ids=input_ids, attention_mask=attention_mask, **kwargs).pooler_output

    model, tokenizer, _ = tiny["clip"]
    old = FourStyleCLIP(model.config).eval()
    old.load_state_dict(model.state_dict())
    captions, pixels = batch
    enc = tokenizer(captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(models.encode_images(old, pixels), models.encode_images(model, pixels))
        torch.testing.assert_close(models.encode_texts(old, enc.input_ids, enc.attention_mask),
                                   models.encode_texts(model, enc.input_ids, enc.attention_mask))


def test_logit_scale_is_exponentiated_and_clamped_for_softmax_models(tiny):
    model, _, _ = tiny["clip"]
    scale, bias = models.logit_scale_and_bias(model)
    assert bias is None
    assert scale.item() == pytest.approx(math.exp(model.logit_scale.item()))
    scale.backward()  # a trainable parameter: the gradient reaches it below the clamp
    assert model.logit_scale.grad is not None and model.logit_scale.grad.item() > 0
    model.logit_scale.grad = None
    original = model.logit_scale.detach().clone()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(250.0))
    try:
        assert models.logit_scale_and_bias(model)[0].item() == pytest.approx(100.0)
        assert models.logit_scale_and_bias(model, max_scale=50.0)[0].item() == pytest.approx(50.0)
    finally:
        with torch.no_grad():
            model.logit_scale.copy_(original)


def test_sigmoid_models_keep_their_scale_and_return_the_bias(tiny):
    model, _, _ = tiny["siglip"]
    original = (model.logit_scale.detach().clone(), model.logit_bias.detach().clone())
    with torch.no_grad():
        model.logit_scale.fill_(math.log(117.0))  # released SigLIP checkpoints sit above 100
        model.logit_bias.fill_(-12.5)
    try:
        scale, bias = models.logit_scale_and_bias(model)
        assert scale.item() == pytest.approx(117.0, rel=1e-5)
        assert bias.item() == pytest.approx(-12.5)
        assert models.logit_scale_and_bias(model, max_scale=100.0)[0].item() == pytest.approx(100.0)
    finally:
        with torch.no_grad():
            model.logit_scale.copy_(original[0])
            model.logit_bias.copy_(original[1])


def test_family_dispatch(tiny):
    assert [models.uses_sigmoid_loss(tiny[k][0]) for k in KINDS] == [False, True, False]
    assert type(build_loss_for(tiny["clip"][0], "append")) is HardNegativeContrastiveLoss
    assert build_loss_for(tiny["clip"][0], "append").mode == "append"
    assert type(build_loss_for(tiny["siglip"][0])) is HardNegativeSigmoidLoss
    assert type(build_loss_for(tiny["dual_encoder"][0])) is HardNegativeContrastiveLoss


def test_unsupported_model_names_the_supported_ones(tiny):
    text_only = tiny["clip"][0].text_model
    for bad in (text_only, torch.nn.Linear(2, 2)):
        with pytest.raises(TypeError, match="CLIPModel, VisionTextDualEncoderModel, SiglipModel"):
            models.encode_images(bad, torch.zeros(1, 3, 32, 32))
        with pytest.raises(TypeError, match="does not support"):
            models.logit_scale_and_bias(bad)


def test_compiled_model_is_unwrapped(tiny):
    model = tiny["clip"][0]
    compiled = torch.compile(model, backend="eager")
    assert models.unwrap_model(compiled) is model
    assert models.uses_sigmoid_loss(compiled) is False
    assert models.logit_scale_and_bias(compiled)[0].item() == pytest.approx(math.exp(model.logit_scale.item()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_wrapped_model_trains_through_forward(tiny_captions, batch):
    """encode_batch must run DDP's forward, or DDP never all-reduces the gradients."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        model, tokenizer, _ = make_tiny_model(tiny_captions, kind="clip")
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        assert models.unwrap_model(ddp) is model
        captions, pixels = batch
        enc = tokenizer(captions, padding=True, return_tensors="pt")
        images, texts = models.encode_batch(ddp, pixels, enc.input_ids, enc.attention_mask)
        scale, bias = models.logit_scale_and_bias(ddp)
        HardNegativeContrastiveLoss()(images, texts, None, scale, bias).loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None for g in grads) and model.logit_scale.grad.abs().item() > 0
    finally:
        dist.destroy_process_group()


def test_siglip2_if_available():
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "Siglip2Model"):
        pytest.skip("this transformers version has no Siglip2Model")
    from transformers import Siglip2Config, Siglip2Model

    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = Siglip2Config(text_config=dict(small, vocab_size=50, max_position_embeddings=16),
                           vision_config=dict(small, num_channels=3, patch_size=4, num_patches=16))
    model = Siglip2Model(config).double().eval()  # float64: two computations of one value agree to 1e-12
    n, patches = 3, 16
    pixel_values = torch.randn(n, patches, 3 * 4 * 4, dtype=torch.float64)
    pixel_mask = torch.ones(n, patches, dtype=torch.long)
    shapes = torch.tensor([[4, 4]] * n)
    ids = torch.randint(4, 50, (n, 8))
    assert models.uses_sigmoid_loss(model)
    with torch.no_grad():
        images = models.encode_images(model, pixel_values, pixel_attention_mask=pixel_mask, spatial_shapes=shapes)
        texts = models.encode_texts(model, ids)
        out = model(input_ids=ids, pixel_values=pixel_values, pixel_attention_mask=pixel_mask, spatial_shapes=shapes,
                    return_loss=True)
        scale, bias = models.logit_scale_and_bias(model)
        ours = build_loss_for(model)(images, texts, None, scale, bias)
    assert images.shape == texts.shape == (n, 32)
    assert ours.loss.item() == pytest.approx(out.loss.item(), rel=1e-10)

"""Training less than the whole model: freezing presets move only their parameters, LoRA moves only its adapters,
the merged export is a plain checkpoint whose outputs equal the adapted model's, resume is exact, the card counts."""

from __future__ import annotations

import pytest
import torch

from _float_tolerance import FLOAT32_EPS
from hf_hardneg.config import HardNegCLIPConfig
from hf_hardneg.models import encode_images, encode_texts
from hf_hardneg.parameter_efficient import count_parameters, freeze_for_preset, merge_adapters
from hf_hardneg.trainer import HardNegCLIPTrainer

from test_trainer import load_tiny, make_args, make_rows
from test_trainer_resume import StopAfter, _losses

pytest.importorskip("peft")
torch.set_num_threads(1)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _changed(before, model):
    return {k for k, v in model.named_parameters() if not torch.equal(v.detach(), before[k])}


@pytest.mark.parametrize("preset, moves", [
    ("text", ("text_model.", "text_projection.", "logit_scale")),
    ("vision", ("vision_model.", "visual_projection.", "logit_scale")),
    ("projections", ("text_projection.", "visual_projection.", "logit_scale")),
])
def test_freezing_presets_train_only_their_parameters(preset, moves, tmp_path, tiny_clip_dir, tiny_captions):
    model, tokenizer, image_processor = load_tiny(tiny_clip_dir)
    before = _snapshot(model)
    args = make_args(tmp_path, train_parameters=preset, max_steps=2, weight_decay=0.0)
    trainer = HardNegCLIPTrainer(model, args, train_dataset=make_rows(tiny_captions, 8, k=1),
                                 processing_class=tokenizer, image_processor=image_processor)
    trainer.train()
    changed = _changed(before, model)
    assert changed and all(name.startswith(moves) for name in changed), sorted(changed)[:5]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed <= trainable and all(n.startswith(moves) for n in trainable)
    # the towers' parameters that train are all of the preset's (nothing of it stays frozen by mistake)
    assert {n for n in before if n.startswith(moves[:2])} <= trainable
    trainer.save_model()
    card = (tmp_path / "out" / "README.md").read_text()
    n_trainable, total = count_parameters(model)
    assert f"Trained parameters: **{n_trainable:,}** of {total:,}" in card and "frozen" in card


def test_presets_and_lora_are_exclusive_and_checked(tmp_path):
    with pytest.raises(ValueError, match="LoRA trains its adapters only"):
        HardNegCLIPConfig(output_dir=str(tmp_path), train_parameters="text", lora_towers="both")
    with pytest.raises(ValueError, match="train_parameters must be one of"):
        HardNegCLIPConfig(output_dir=str(tmp_path), train_parameters="towers")
    with pytest.raises(ValueError, match="lora_towers must be one of"):
        HardNegCLIPConfig(output_dir=str(tmp_path), lora_towers="all")


def test_train_script_exposes_the_flags(train_script, tmp_path):
    _, _, config = train_script.parse_args(["--output_dir", str(tmp_path), "--lora_towers", "vision",
                                            "--lora_rank", "4", "--lora_target_modules", "q_proj", "v_proj"])
    assert (config.lora_towers, config.lora_rank, config.lora_target_modules) == ("vision", 4, ["q_proj", "v_proj"])
    _, _, frozen = train_script.parse_args(["--output_dir", str(tmp_path), "--train_parameters", "projections"])
    assert frozen.train_parameters == "projections" and frozen.lora_towers is None


def _lora_args(tmp_path, **overrides):
    values = dict(lora_towers="both", lora_rank=4, max_steps=3, weight_decay=0.0)
    values.update(overrides)
    return make_args(tmp_path, **values)


def test_lora_moves_only_adapters_and_the_merged_export_is_a_plain_checkpoint(tmp_path, tiny_clip_dir,
                                                                                tiny_captions):
    from safetensors.torch import load_file
    from transformers import CLIPModel

    model, tokenizer, image_processor = load_tiny(tiny_clip_dir, torch.float64)
    base = _snapshot(model)
    trainer = HardNegCLIPTrainer(model, _lora_args(tmp_path), train_dataset=make_rows(tiny_captions, 12, k=1),
                                 processing_class=tokenizer, image_processor=image_processor)
    adapted = trainer.model
    before = _snapshot(adapted)
    trainer.train()
    changed = _changed(before, adapted)
    assert changed and all("lora_" in name for name in changed)
    assert any(".text_model." in n for n in changed) and any(".vision_model." in n for n in changed)
    for name, value in adapted.get_base_model().named_parameters():  # no pretrained weight moved
        if "lora_" not in name:
            assert torch.equal(value.detach(), base[name.replace(".base_layer", "")]), name

    trainer.save_model()
    out = tmp_path / "out"
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert not any("lora" in k for k in load_file(out / "model.safetensors"))
    plain = CLIPModel.from_pretrained(out, dtype=torch.float64).eval()
    adapted.eval()
    ids = tokenizer(tiny_captions[:4], padding=True, return_tensors="pt")
    pixels = torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # merging W + BA once, in float64: equal to the adapter's two-matmul path up to float64 rounding
        assert torch.allclose(encode_texts(plain, ids["input_ids"], ids["attention_mask"]),
                              encode_texts(adapted, ids["input_ids"], ids["attention_mask"]), rtol=0, atol=1e-10)
        assert torch.allclose(encode_images(plain, pixels), encode_images(adapted, pixels), rtol=0, atol=1e-10)
        # ...and not equal to the untrained model (the adapters did change the function)
        assert not torch.allclose(encode_images(plain, pixels), encode_images(load_tiny(tiny_clip_dir, torch.float64)[0], pixels))
    merged = merge_adapters(adapted)
    assert type(merged) is CLIPModel and any("lora_" in n for n, _ in adapted.named_parameters())  # a copy
    card = (out / "README.md").read_text()
    n_trainable, total = count_parameters(adapted)
    assert n_trainable < total / 5
    assert f"Trained parameters: **{n_trainable:,}** of {total:,}" in card and "LoRA adapters (rank 4" in card


def test_lora_on_one_tower_leaves_the_other_without_adapters(tiny_clip_dir, tmp_path):
    from hf_hardneg.parameter_efficient import add_lora_adapters

    model = load_tiny(tiny_clip_dir)[0]
    wrapped = add_lora_adapters(model, "text", rank=2)
    names = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and ".text_model." in n for n in names)
    with pytest.raises(ValueError, match="no linear layer named"):
        add_lora_adapters(load_tiny(tiny_clip_dir)[0], "vision", target_modules=["no_such_layer"])
    frozen = freeze_for_preset(load_tiny(tiny_clip_dir)[0], "projections")
    assert {n for n, p in frozen.named_parameters() if p.requires_grad} == {
        "text_projection.weight", "visual_projection.weight", "logit_scale"}


def test_resumed_lora_run_reproduces_the_uninterrupted_losses(tmp_path, tiny_clip_dir, tiny_captions):
    rows = make_rows(tiny_captions, num_rows=12, k=2)

    def run(output_dir, resume=None, callbacks=()):
        model, tokenizer, image_processor = load_tiny(tiny_clip_dir, torch.float64)
        args = _lora_args(output_dir, num_hard_negatives=2, max_steps=7, save_strategy="steps", save_steps=4,
                          save_fraction_of_data=0, substitution_seed=11, lora_dropout=0.1)
        trainer = HardNegCLIPTrainer(model, args, train_dataset=rows, processing_class=tokenizer,
                                     image_processor=image_processor, callbacks=list(callbacks))
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = _losses(run(tmp_path / "full"))
    assert sorted(full) == list(range(1, 8))
    run(tmp_path / "job", callbacks=[StopAfter(4)])
    checkpoint = tmp_path / "job" / "out" / "checkpoint-4"
    assert (checkpoint / "adapter_model.safetensors").is_file()  # a checkpoint holds the adapters, to resume
    resumed = _losses(run(tmp_path / "job", resume=str(checkpoint)))
    assert sorted(resumed) == list(range(1, 8))
    assert all(resumed[step] == full[step] for step in (1, 2, 3, 4))
    for step in (5, 6, 7):  # dropout on the adapters included: the RNG state comes back with the checkpoint
        assert resumed[step] == pytest.approx(full[step], rel=4 * FLOAT32_EPS), f"step {step}"


@pytest.mark.parametrize("kind", ["clip", "siglip", "dual_encoder"])
def test_every_family_gets_adapters_on_both_towers_and_merges_to_the_same_function(kind, tiny_captions):
    from hf_hardneg.interpolation import interpolate_state_dicts
    from hf_hardneg.parameter_efficient import add_lora_adapters
    from hf_hardneg.testing import make_tiny_model

    model, tokenizer, _ = make_tiny_model(tiny_captions, kind=kind)
    model = model.double().eval()
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = add_lora_adapters(model, "both", rank=2).eval()
    adapters = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert any(".text_model." in n for n in adapters) and any(".vision_model." in n for n in adapters)
    with torch.no_grad():  # LoRA's B starts at zero: give the adapters something to merge
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(generator=torch.Generator().manual_seed(len(name)))
    merged = merge_adapters(adapted).eval()
    assert not any("lora_" in k for k in merged.state_dict())
    ids = tokenizer(tiny_captions[:3], padding="max_length" if kind == "siglip" else True, return_tensors="pt")
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for encode, inputs in ((encode_texts, (ids["input_ids"], ids["attention_mask"])), (encode_images, (pixels,))):
            want, got = encode(adapted, *inputs), encode(merged, *inputs)
            assert torch.allclose(got, want, rtol=0, atol=1e-10)
            assert not torch.allclose(got, encode(type(merged)(merged.config).double().eval(), *inputs))
    # an adapted model interpolates as its merged weights
    at1 = interpolate_state_dicts(type(merged)._from_config(merged.config).double(), adapted, 1.0)
    assert all(torch.equal(at1.state_dict()[k], v) for k, v in merged.state_dict().items())
    assert any(not torch.equal(plain[k], v) for k, v in merged.state_dict().items() if k in plain)

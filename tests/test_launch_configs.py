"""configs/accelerate/: every launch config parses as accelerate reads it and says what its name says."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
EXPECTED = {  # file -> (distributed type, processes, machines)
    "single_gpu.yaml": ("NO", 1, 1),
    "ddp.yaml": ("MULTI_GPU", 8, 1),
    "fsdp2.yaml": ("FSDP", 8, 1),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 8, 1),
    "deepspeed_zero3.yaml": ("DEEPSPEED", 8, 1),
    "multinode_2x8.yaml": ("MULTI_GPU", 16, 2),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launch_config_parses(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))
    kind, processes, machines = EXPECTED[name]
    assert (config.distributed_type.value, config.num_processes, config.num_machines) == (kind, processes, machines)
    assert config.mixed_precision == "bf16"  # autocast with fp32 master weights, never a half-precision model
    if name == "fsdp2.yaml":
        import transformers

        assert config.fsdp_config["fsdp_version"] == 2
        layer = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
        assert layer in transformers.CLIPModel._no_split_modules  # what hf_hardneg.fsdp shards by, too
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-6])


def test_every_config_is_listed_in_the_readme():
    readme = (CONFIGS.parents[1] / "README.md").read_text(encoding="utf-8")
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)
    for name in EXPECTED:
        assert f"configs/accelerate/{name}" in readme, name

"""How much of a ViT-B/32 CLIP each freezing preset and LoRA setting trains (parameter counts, no timing).

The model is built from ``CLIPConfig()`` (openai/clip-vit-base-patch32's shapes) with random weights,
so nothing is downloaded; the counts depend on the shapes only.

    python benchmarks/trainable_parameters.py
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 8, 16])
    args = parser.parse_args()

    from transformers import CLIPConfig, CLIPModel

    from hf_hardneg.parameter_efficient import add_lora_adapters, count_parameters, freeze_for_preset

    rows = []
    for preset in ("all", "text", "vision", "projections"):
        model = freeze_for_preset(CLIPModel(CLIPConfig()), preset)
        rows.append((f"train_parameters={preset}", *count_parameters(model)))
    for towers in ("text", "vision", "both"):
        for rank in args.ranks:
            model = add_lora_adapters(CLIPModel(CLIPConfig()), towers, rank=rank)
            rows.append((f"lora_towers={towers}, lora_rank={rank}", *count_parameters(model)))
    print("| setting | trainable | of | share |")
    print("| --- | ---: | ---: | ---: |")
    for name, trainable, total in rows:
        print(f"| {name} | {trainable:,} | {total:,} | {100 * trainable / total:.2f}% |")


if __name__ == "__main__":
    main()

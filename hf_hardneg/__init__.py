"""hf_hardneg: hard-negative captions for contrastive vision-language training."""

__version__ = "0.1.0"

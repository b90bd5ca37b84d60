"""Sub-commands of the `hf-hardneg` CLI; each module defines ``register(subparsers)``."""

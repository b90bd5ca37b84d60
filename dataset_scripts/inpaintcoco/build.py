#!/usr/bin/env python
"""Build InpaintCOCO from a raw annotation export (and optionally push it to the Hub).

    python dataset_scripts/inpaintcoco/build.py --source EXPORT --output OUT \
        [--push-to-hub USER/NAME] [--private] [--skip-invalid]

The same as `hf-hardneg build-inpaintcoco`; all logic is in
hf_hardneg.data.inpaintcoco_builder. See README.md next to this file for the input format.
"""

import sys
from pathlib import Path

try:
    from hf_hardneg.data.inpaintcoco_builder import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from hf_hardneg.data.inpaintcoco_builder import main

if __name__ == "__main__":
    sys.exit(main(prog="build.py"))

"""The package surface: lazy public names, the console script, no remote code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import hf_hardneg

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves():
    for name in hf_hardneg.__all__:
        assert getattr(hf_hardneg, name) is not None, name


def test_import_is_cheap_no_torch_until_needed():
    code = "import sys, hf_hardneg; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_console_script_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "hf_hardneg", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for command in ("stats", "negatives", "evaluate", "compare", "build-inpaintcoco", "push", "interpolate"):
        assert command in out


def test_no_remote_code_and_no_pickled_weights_in_the_library():
    for path in list((ROOT / "hf_hardneg").rglob("*.py")) + [ROOT / "train.py"]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"trust_remote_code\s*=\s*True", text), path
        assert "torch.save(" not in text, path

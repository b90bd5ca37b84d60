import sys

from hf_hardneg.cli import main

sys.exit(main())

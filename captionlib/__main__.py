"""`python -m captionlib ...`: the command line of `captionlib.cli` (chapter 12)."""

import sys

from captionlib.cli import main

sys.exit(main())

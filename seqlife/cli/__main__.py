"""`python -m seqlife.cli`."""

import sys

from seqlife.cli import main

sys.exit(main())

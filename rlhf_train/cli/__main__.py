"""`python -m rlhf_train.cli`: the same as the `rlhf` command (the worker runs jobs so)."""

import sys

from rlhf_train.cli import main

sys.exit(main())

"""`python -m taskmem_lab.cli`: the same as the `taskmem` command."""

import sys

from taskmem_lab.cli import main

sys.exit(main())

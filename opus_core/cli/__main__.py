"""`python -m opus_core.cli`: the same as the `opus` command."""

import sys

from opus_core.cli import main

sys.exit(main())

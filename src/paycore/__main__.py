"""``python -m paycore``: the command line, for when the ``paycore`` script is not on PATH."""

import sys

from paycore.cli import main

sys.exit(main())

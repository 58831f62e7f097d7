"""``python -m jampi_dsl run prog.lin`` (the form to use under spark-submit)."""

import sys

from .cli import main

sys.exit(main())

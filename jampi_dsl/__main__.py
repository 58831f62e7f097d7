"""``python -m jampi_dsl run prog.lin``; also runnable as a script, which is how
``spark-submit`` starts it (see the README's spark-submit recipe)."""

import sys

from jampi_dsl.cli import main

if __name__ == "__main__":
    sys.exit(main())

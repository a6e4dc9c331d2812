"""Pick from a finished search: `python -m platform.pareto EXPERIMENT [flags]` (see `--help`).

    python -m platform.pareto summarization
    python -m platform.pareto summarization --pick fastest-within-2pct --register shrinktune-summarizer \\
        --export ./picked
"""

import sys

from shrinktune.pick.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""Run a Shrinktune search: `python -m platform.search [SPACE] [flags]` (see `--help`).

    python -m platform.search summarization            # the embedded default, offline
    ray job submit --working-dir . -- python -m platform.search summarization
"""

import sys

from shrinktune.cli import search_main

if __name__ == "__main__":
    sys.exit(search_main())

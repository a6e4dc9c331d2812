"""Ship the embedded teacher's pseudo-labels: `python -m platform.ship_labels CACHE_DIR`.

Collects the pseudo-label sets a search of the embedded teacher cached under CACHE_DIR (its --cache-dir) into
`shrinktune/assets/pseudo_labels.json.gz`, which a first run then unpacks instead of generating them.
"""

import sys

from shrinktune.cli import ship_labels_main

if __name__ == "__main__":
    sys.exit(ship_labels_main())

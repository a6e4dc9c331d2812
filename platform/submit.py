"""Submit a search to a Ray cluster: `python -m platform.submit [--address URL] [SPACE] [search flags]`.

Checks the job server and the authentication token, then runs `ray job submit --working-dir <repo> --runtime-env
jobs/runtime_env.yaml -- python -m platform.search ...`. The plain `ray job submit` command works too.
"""

import sys

from shrinktune.cli import submit_main

if __name__ == "__main__":
    sys.exit(submit_main())

#!/usr/bin/env bash
# Run: jobs/submit.sh [SPACE] [search flags]   e.g. RAY_ADDRESS=http://head:8265 jobs/submit.sh summarization --trials 12
# Submits a search to the Ray cluster at RAY_ADDRESS (default: this machine's head) as a Ray job, after checking
# that the job server answers and accepts this machine's token. Same as `python -m platform.submit`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m platform.submit "$@"

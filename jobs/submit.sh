#!/usr/bin/env bash
# Run: jobs/submit.sh [SPACE] [search flags]   e.g. RAY_ADDRESS=http://127.0.0.1:8265 jobs/submit.sh summarization --trials 12
# Submits a search to the Ray cluster at RAY_ADDRESS (default: this machine's head) as a Ray job, after checking
# that the job server answers and accepts this machine's token. Same as `python -m platform.submit`.
# For a remote head, forward its job server first (`ssh -N -L 8265:127.0.0.1:8265 <head>`): the token is not sent
# over plain http to another machine unless --allow-http-token is given (jobs/README.md, step 5).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m platform.submit "$@"

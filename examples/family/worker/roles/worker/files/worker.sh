#!/bin/sh
# kiln example: the worker's job, run by worker.timer.
set -eu
echo "worker $(. /etc/release && echo "$IMAGE_VERSION") on $(. /etc/release && echo "${IMAGE_PARENT:-no parent}") ran at $(date -u +%FT%TZ)"

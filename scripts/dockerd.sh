#!/usr/bin/env bash
# Make sure a Docker daemon answers: install Debian's docker.io when it is missing and start dockerd
# when nothing is listening (no init system starts it on the test machines). Idempotent.
#   scripts/dockerd.sh        prints nothing, exits 0 once `docker info` answers
set -euo pipefail
LOG="${LYNX_DOCKERD_LOG:-/var/log/lynx-dockerd.log}"

command -v dockerd >/dev/null || bash "$(dirname "${BASH_SOURCE[0]}")/debian_install.sh" docker.io
docker info >/dev/null 2>&1 && exit 0

echo "[dockerd] starting dockerd (log: $LOG)" >&2
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO setsid dockerd >"$LOG" 2>&1 < /dev/null &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "[dockerd] dockerd did not answer within 60 s; last lines of $LOG:" >&2
tail -20 "$LOG" >&2
exit 1

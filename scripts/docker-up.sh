#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine.
# With systemd as PID 1 we ask systemd; without it (build machines, CI containers) we start dockerd ourselves.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker-up: dockerd is not installed; run scripts/setup.sh first" >&2
  exit 1
fi
if [ "$(ps -p 1 -o comm= 2>/dev/null)" = "systemd" ]; then
  echo "docker-up: starting docker.service"
  systemctl start docker
else
  echo "docker-up: no systemd as PID 1, starting dockerd in the background (log: /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
fi
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "docker-up: engine $(docker version --format '{{.Server.Version}}') is up"
    exit 0
  fi
  sleep 1
done
echo "docker-up: dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2
tail -n 20 /var/log/dockerd.log >&2 || true
exit 1

#!/usr/bin/env bash
# System packages the container tests and benchmarks need (Debian 12, run as root).
# Idempotent: installs only what is missing, running `apt-get update` at most once.
set -euo pipefail

needed=()
command -v dockerd >/dev/null 2>&1 || needed+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || needed+=(debootstrap)
command -v wrk >/dev/null 2>&1 || needed+=(wrk)
command -v docker-compose >/dev/null 2>&1 || needed+=(docker-compose)
dpkg-query -W -f='${Status}' libb64-0d 2>/dev/null | grep -q "install ok installed" || needed+=(libb64-0d)

if ((${#needed[@]} == 0)); then
    echo "setup_system: docker.io, debootstrap, wrk, docker-compose and libb64-0d already installed"
    exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    SUDO="sudo"
fi
echo "setup_system: installing ${needed[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
echo "setup_system: done"

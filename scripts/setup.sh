#!/bin/sh
# Installs what octoboot and its sandbox need on Debian (as root), then the Python venv.
# Safe to repeat: it installs only what is missing.
set -eu
cd "$(dirname "$0")/.."

need=""
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need="$need openssh-server"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v unshare >/dev/null 2>&1 || need="$need util-linux"
command -v ssh >/dev/null 2>&1 || need="$need openssh-client"
# The sandbox's hosts use the controller's tools: curl to download the Tentacle archive,
# pgrep/ps for the tests that look at a host's processes.
command -v curl >/dev/null 2>&1 || need="$need curl"
command -v pgrep >/dev/null 2>&1 || need="$need procps"
# The Tentacle stand-in opens a plain PFX with `openssl pkcs12` (cheaper than cryptography).
command -v openssl >/dev/null 2>&1 || need="$need openssl"
# `inv sandbox.up --ssh-only N` keeps hosts to inbound SSH with nftables.
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need="$need nftables"
if [ -n "$need" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    # Debian ships venv's pip bootstrap separately (python3-venv): install it if missing.
    if ! python3 -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv .venv
    fi
fi
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
# Bytecode for the project's own modules, as pip writes it for installed packages: where
# PYTHONDONTWRITEBYTECODE is set (containers, some CI), Python would compile every module
# of octoboot again at every start of `inv`, before the first connection
# (docs/performance.md). A module edited since is compiled afresh in memory, as usual.
.venv/bin/python -m compileall -q octoboot tasks.py

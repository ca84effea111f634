#!/bin/sh
# PID 1 of a sandbox host, run inside its own network, mount, UTS and PID namespaces.
# Gives the host its own hostname, /run, /tmp, /opt/octopus, /etc/octopus, /home/Octopus and
# /etc/systemd/system, a clean root login (no controller start-up files), then becomes sshd.
# Usage: host_init.sh NAME HOST_DIR SHARED_DIR [PATH_UNDER_TMP_TO_KEEP ...]
set -eu
name=$1 host=$2 shared=$3
shift 3

hostname "$name"
mount -t tmpfs -o mode=0755 tmpfs /run
# Its own /dev/shm, as a real host has (the controller's would be shared by every host).
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mkdir -p /run/sshd /run/octoboot-sandbox /run/keep

# Paths the host must still see (the controller's python, the sandbox) that live under /tmp.
i=0
for keep in "$@"; do
    i=$((i + 1)); mkdir -p "/run/keep/$i"; mount --rbind "$keep" "/run/keep/$i"
done

mount --bind "$host/disk/opt-octopus" /opt/octopus
mount --bind "$host/disk/etc-octopus" /etc/octopus
mount --bind "$host/disk/home-Octopus" /home/Octopus
mount --bind "$host/disk/etc-systemd-system" /etc/systemd/system
mount --bind "$host/control" /run/octoboot-sandbox
mount --bind "$shared/sbin" /usr/local/sbin
for rc in /root/.bashrc /root/.profile /root/.bash_profile /root/.bash_login; do
    if [ -f "$rc" ]; then mount --bind "$shared/empty" "$rc"; fi
done
mount --bind "$host/disk/tmp" /tmp

i=0
for keep in "$@"; do
    i=$((i + 1)); mkdir -p "$keep"; mount --rbind "/run/keep/$i" "$keep"
done

# Services the host had enabled start again when it boots.
/usr/local/sbin/systemctl default >/dev/null 2>&1 || true

exec /usr/sbin/sshd -D -e -f "$host/sshd_config"

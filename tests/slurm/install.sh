#!/usr/bin/env bash
# Installs a single-node SLURM cluster's software from Debian's own packages.
#
# Needs root and a reachable Debian mirror; exits 0 without doing anything when every
# package is already there, so calling it before each test session costs ~0.1 s.
# Exit codes the test fixture understands: 0 = installed, 3 = not root, 4 = no apt-get,
# anything else = apt failed (its output is on stderr).
set -euo pipefail

# slurm-wlm: slurmctld + slurmd + client commands; slurmdbd + mariadb-server: `sacct`
# reads finished jobs from the accounting database only (Debian 12 ships SLURM 22.05,
# whose sacct cannot fall back to slurmctld); munge: SLURM's authentication.
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

if [[ $(id -u) -ne 0 ]]; then
    echo "install.sh: must run as root to install ${PACKAGES[*]}" >&2
    exit 3
fi
if ! command -v apt-get >/dev/null; then
    echo "install.sh: apt-get not found; install ${PACKAGES[*]} with this system's package manager" >&2
    exit 4
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# The packages' post-install scripts try to start their services; in a container without
# an init system they would fail or linger, so forbid it (policy-rc.d exit 101 = "denied")
# for the duration of the install only.
policy=/usr/sbin/policy-rc.d
restore_policy=""
if [[ -e $policy ]]; then
    restore_policy=$(mktemp)
    cp -p "$policy" "$restore_policy"
fi
trap 'if [[ -n $restore_policy ]]; then mv "$restore_policy" "$policy"; else rm -f "$policy"; fi' EXIT
printf '#!/bin/sh\nexit 101\n' >"$policy"
chmod 755 "$policy"

apt-get update -q >&2
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2

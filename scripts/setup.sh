#!/usr/bin/env bash
# Install and start everything the lab and the tests need; safe to re-run.
#   - Debian packages (Open vSwitch, Mininet, kubectl, tools; the CNI plugins,
#     containerd and runc, busybox for the containerd test), only when missing
#   - Open vSwitch started (userspace datapath: no kernel module needed)
#   - .venv on Debian's python3 with this package installed editable with
#     pinned dependencies, and of Debian's Python packages Mininet's alone
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (Mininet and Open vSwitch need it)" >&2
  exit 1
fi

PACKAGES=(openvswitch-switch openvswitch-common mininet ethtool iproute2 curl tcpdump iptables
          python3-venv python3-dev iputils-ping procps gcc util-linux
          containernetworking-plugins containerd runc busybox-static nftables)
missing=()
# kubectl: any kubectl on PATH will do; else Debian's (kubernetes-client).
command -v kubectl >/dev/null 2>&1 || PACKAGES+=(kubernetes-client)
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Open vSwitch: start ovsdb-server and ovs-vswitchd unless they answer.
if ! ovs-vsctl --timeout=3 show >/dev/null 2>&1; then
  echo "setup.sh: starting Open vSwitch"
  /usr/share/openvswitch/scripts/ovs-ctl --system-id=random start >/dev/null 2>&1 || true
  ovs-vsctl --timeout=10 show >/dev/null
fi

# The venv: rebuilt only when the packaging files change.
stamp=.venv/.nsx-proxy-stamp
want=$(cat setup.cfg setup.py scripts/install-venv.sh | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup.sh: building .venv"
  rm -rf .venv
  bash scripts/install-venv.sh .venv '-e .[test]'
  echo "$want" > "$stamp"
fi
# Mininet's Python module is the one Debian's mininet package installs for
# /usr/bin/python3 (the same as its `mn` and mnexec).  The venv sees it through
# a folder that holds only a link to it, so none of Debian's other Python
# packages leak into the lab's agents.
mininet_dir=$PWD/.venv/debian-mininet
mkdir -p "$mininet_dir"
ln -sfn /usr/lib/python3/dist-packages/mininet "$mininet_dir/mininet"
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$mininet_dir" > "$site/debian-mininet.pth"

# Debian's kubectl (1.20) next to whichever kubectl is on PATH: the lab's API
# server is tested against both (an old client validates against OpenAPI v2).
if [ ! -x .venv/bin/kubectl-debian ]; then
  if [ "$(dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null)" = "install ok installed" ]; then
    ln -sf "$(command -v kubectl)" .venv/bin/kubectl-debian
  else
    tmp=$(mktemp -d)
    if (cd "$tmp" && apt-get download -qq kubernetes-client >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get download -qq kubernetes-client; }) \
       && dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$tmp/x"; then
      cp "$tmp/x/usr/bin/kubectl" .venv/bin/kubectl-debian
    else
      echo "setup.sh: could not fetch Debian's kubectl; its tests will fail" >&2
    fi
    rm -rf "$tmp"
  fi
fi

#!/usr/bin/env bash
# Build the venv VENV (default .venv) for this package with its pinned
# dependencies: shared by scripts/setup.sh (editable, with the test extra)
# and the Dockerfile (a plain install).  Usage: install-venv.sh VENV [PIP_TARGET]
set -euo pipefail
venv=${1:-.venv}
target=${2:--e .[test]}
# No system site packages: the venv holds exactly this package's pinned
# dependencies, as the image's does (Debian's python3-openssl, for one, would
# otherwise be imported by eventlet: about 5 MB more per agent).  The lab adds
# Debian's Mininet module alone (scripts/setup.sh).
/usr/bin/python3 -m venv "$venv"
# Ryu 4.34's setup uses setuptools APIs removed in 67, so build without
# isolation against an older setuptools.
"$venv/bin/pip" install -q --disable-pip-version-check 'setuptools<67' wheel
# shellcheck disable=SC2086  # the target is one or two words on purpose
"$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation $target

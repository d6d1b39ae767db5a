#!/bin/sh
# Everything CI runs: format check, clippy, unit and integration tests against real Samba AD
# domain controllers, and the scan of every test log for every test password.
set -eu
cd "$(dirname "$0")/.."
. scripts/prerequisites.sh
exec cargo xtask test

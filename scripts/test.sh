#!/bin/sh
# Everything CI runs: format check, clippy, unit and integration tests against real Samba AD
# domain controllers, the console in headless Chromium, and the scan of every test log for every
# test password. PostgreSQL is for the store and cluster tests, which start throwaway servers of
# their own; dnsmasq answers the test domain's SRV records. schemathesis comes from PyPI, into
# target/tools (see xtask).
set -eu
cd "$(dirname "$0")/.."
extra_packages="chromium python3-aiosmtpd python3-venv postgresql dnsmasq-base"
. scripts/prerequisites.sh
exec cargo xtask test

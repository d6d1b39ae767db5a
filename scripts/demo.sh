#!/bin/sh
# A working demo: a throwaway Samba AD domain with sample users, the cloud on its embedded SQLite
# database and a registered agent. Prints the cloud URL, the administrator's credentials and how to
# reset a password with the CLI; Ctrl-C removes it all.
set -eu
cd "$(dirname "$0")/.."
. scripts/prerequisites.sh
exec cargo xtask demo "$@"

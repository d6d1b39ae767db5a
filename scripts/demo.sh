#!/bin/sh
# A working demo: a throwaway Samba AD domain with sample users, the cloud on its embedded SQLite
# database, a registered agent and self-service on, with a local SMTP server whose mail is printed.
# Prints the portal and console URLs, the administrator's credentials and what to try; Ctrl-C
# removes it all. With --cluster: three cloud nodes on one PostgreSQL database and two agents.
set -eu
cd "$(dirname "$0")/.."
extra_packages="python3-aiosmtpd"
case " $* " in *" --cluster "*) extra_packages="$extra_packages postgresql" ;; esac
. scripts/prerequisites.sh
exec cargo xtask demo "$@"

# Sourced by scripts/demo.sh and scripts/test.sh: installs what the demo and the tests need on a
# Debian machine (as root), and nothing that is already there.
#   samba, winbind, krb5-user: the throwaway Active Directory domain controllers
#   ldap-utils: ldapsearch & co., handy for looking at the test domain by hand
#   $extra_packages: what the caller needs besides (the tests: chromium, for the console tests)
#   rustup: only when no cargo is on the PATH

missing=""
for package in samba winbind krb5-user ldap-utils ${extra_packages:-}; do
  dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "These Debian packages are needed:$missing. Run as root, or install them first." >&2
    exit 1
  fi
  echo "==> installing$missing"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi
if ! command -v cargo >/dev/null 2>&1; then
  if [ -f "$HOME/.cargo/env" ]; then
    . "$HOME/.cargo/env"
  else
    echo "==> installing the Rust toolchain (rustup)"
    command -v curl >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl ca-certificates
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
    . "$HOME/.cargo/env"
  fi
fi

# Shared set-up for bin/demo and bin/test: Debian packages, a virtualenv with deploykit, nothing else.
# Sourced, not run. Idempotent: a second run installs nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEPLOYKIT_VENV:-$ROOT/.venv}"

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: $1 needs root (it starts lab servers and installs Debian packages); run it with sudo" >&2
    exit 1
  fi
}

apt_install() {  # install only the Debian packages that are missing; update the index only then
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # the tests start their own servers on free ports: keep the packages' default services from starting
    local had_policy=0
    [ -e /usr/sbin/policy-rc.d ] && had_policy=1
    [ $had_policy = 1 ] || printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
      [ $had_policy = 1 ] || rm -f /usr/sbin/policy-rc.d; exit 1; }
    [ $had_policy = 1 ] || rm -f /usr/sbin/policy-rc.d
  fi
}

python_env() {
  if ! python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "error: deploykit needs Python 3.11 or newer (python3 is $(python3 --version 2>&1))" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
  fi
  local stamp="$VENV/.deploykit-installed"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "==> installing deploykit and its Python dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[test]"
    touch "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}

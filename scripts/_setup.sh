# Shared by scripts/test and scripts/demo: Debian packages (as root) and the .venv.
# Sourced, not run. Arguments of install_debs: the packages wanted.

install_debs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "!! not root: cannot apt-get install ${missing[*]}" >&2
    return 0
  fi
  echo ">> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian orthanc and postgresql packages may start system services on install; MDM
  # starts its own instances on free loopback ports, so stop the system ones.
  if command -v service >/dev/null 2>&1; then
    service orthanc stop >/dev/null 2>&1 || true
    service postgresql stop >/dev/null 2>&1 || true
  fi
}

setup_venv() {  # setup_venv EXTRAS (e.g. "[test]" or "")
  local py=${PYTHON:-python3}
  if [ ! -x .venv/bin/python ]; then
    echo ">> creating .venv"
    "$py" -m venv .venv
  fi
  echo ">> pip install -e .$1"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -c requirements/lock.txt -e ".$1"
}

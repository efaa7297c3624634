# Shared shell helpers for scripts/test and scripts/demo (sourced, not run).
#
#   bootstrap   apt packages (only the missing ones), .venv, `pip install -e '.[test]'`
#
# Safe to re-run: apt is skipped when every package is installed (dpkg-query),
# and pip is skipped while pyproject.toml (and the interpreter) are unchanged
# since the last successful install (hash stored in .venv/.dockd-install.sha256).
# Never needs a TTY.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PY="$VENV/bin/python"

# Debian packages the tests and the demo use:
#   ffmpeg (ffmpeg, ffprobe: test clips)      exfatprogs, exfat-fuse (exFAT camera images)
#   umockdev, gir1.2-umockdev-1.0, python3-gi (simulated udev devices)
#   util-linux, mount (losetup, blkid, partx, unshare, mount)
#   udev (udevadm), systemd (systemd-analyze), openssl, iproute2 (ss), psmisc (fuser)
#   python3-venv (ensurepip for `python3 -m venv` on Debian), ca-certificates (pip over https)
#   prometheus (promtool checks the metrics exposition), jq (the README's offline manifest check)
#   chromium (renders the review's HTML report headless in tests/e2e/test_review.py)
APT_PACKAGES=(
  ffmpeg exfatprogs exfat-fuse
  umockdev gir1.2-umockdev-1.0 python3-gi
  util-linux mount udev systemd
  openssl iproute2 psmisc
  python3-venv ca-certificates
  prometheus jq
  chromium
)

if [[ -t 1 ]]; then _B=$'\e[1m' _R=$'\e[0m'; else _B="" _R=""; fi

section() { printf '\n%s==> %s%s\n' "$_B" "$*" "$_R"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a command as root (directly, or through passwordless sudo).
_as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    die "need root to run: $* (run as root, or install the packages yourself)"
  fi
}

_missing_packages() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || printf '%s\n' "$p"
  done
}

ensure_apt_packages() {
  section "system packages"
  if ! command -v dpkg-query >/dev/null 2>&1; then
    info "not a Debian system (no dpkg-query): skipping apt; install the equivalents of: ${APT_PACKAGES[*]}"
    return 0
  fi
  local missing
  mapfile -t missing < <(_missing_packages)
  if [[ ${#missing[@]} -eq 0 ]]; then
    info "all ${#APT_PACKAGES[@]} packages present"
    return 0
  fi
  info "installing: ${missing[*]}"
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0
             -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  # apt-get update only if the package lists are missing or a day old, or the install fails with the current ones.
  local lists_fresh
  lists_fresh=$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n1)
  if [[ -z $lists_fresh ]]; then
    _as_root "${apt[@]}" update </dev/null
  fi
  if ! _as_root "${apt[@]}" install --no-install-recommends "${missing[@]}" </dev/null; then
    info "install failed with the current package lists; running apt-get update and retrying"
    _as_root "${apt[@]}" update </dev/null
    _as_root "${apt[@]}" install --no-install-recommends "${missing[@]}" </dev/null
  fi
  mapfile -t missing < <(_missing_packages)
  [[ ${#missing[@]} -eq 0 ]] || die "still missing after apt-get install: ${missing[*]}"
}

_install_stamp() {
  # What the installed environment depends on: the project metadata and the interpreter.
  { cat "$REPO/pyproject.toml"; "$PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}

ensure_venv() {
  section "python environment ($VENV)"
  if [[ -x $PY ]] && ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    info "existing .venv is broken (interpreter gone?); recreating it"
    rm -rf "$VENV"
  fi
  if [[ ! -x $PY ]]; then
    local base
    base=$(command -v python3) || die "python3 not found"
    info "creating .venv with $base ($("$base" --version 2>&1))"
    "$base" -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  fi
  local stamp_file="$VENV/.dockd-install.sha256" want have=""
  want=$(_install_stamp)
  [[ -f $stamp_file ]] && have=$(<"$stamp_file")
  if [[ $want == "$have" ]] && "$PY" -c 'import dockd' >/dev/null 2>&1; then
    info "dockd and test dependencies up to date (pyproject.toml unchanged)"
    return 0
  fi
  info "pip install -e '.[test]'"
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
  "$PY" -m pip install -q -e "$REPO[test]" </dev/null || die "pip install failed"
  printf '%s\n' "$want" >"$stamp_file"
  info "installed ($("$PY" -m pip --version | cut -d' ' -f1-2), dockd $("$PY" -c 'import dockd; print(dockd.__version__)'))"
}

bootstrap() {
  ensure_apt_packages
  ensure_venv
}

#!/usr/bin/env bash
# Idempotent host set-up for berth on Debian 12 (bookworm) or 13 (trixie):
# apt packages (mkosi >= 24 from the right suite), a virtual environment and
# caches outside the repository. Safe to run again; does nothing when done.
set -euo pipefail

BERTH_CACHE="${BERTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/berth}"
VENV="$BERTH_CACHE/venv"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
STAMP="$BERTH_CACHE/setup.stamp"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Everything this script installs; the stamp holds a hash of it and of the
# Python requirements so an edit re-runs the set-up.
APT_PACKAGES=(
  kmod systemd-boot-efi systemd-container qemu-system-x86 qemu-utils ovmf
  erofs-utils cryptsetup-bin dosfstools mtools fdisk zstd xz-utils
  squashfs-tools busybox-static openssh-client socat python3-venv python3-dev
  postgresql postgresql-contrib debian-archive-keyring gcc python3-pefile cpio genisoimage
  diffoscope-minimal sbsigntool faketime vde2 swtpm swtpm-tools
)

want_hash() {
  # The checkout's path counts: the venv holds an editable install of one
  # checkout, and a fresh clone (CI) must not run another checkout's code.
  { echo "$REPO"; printf '%s\n' "${APT_PACKAGES[@]}"; cat "$REPO/pyproject.toml"; cat "$0"; } \
    | sha256sum | cut -d' ' -f1
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(want_hash)" && -x "$VENV/bin/berth" ]] \
   && command -v mkosi >/dev/null; then
  exit 0
fi

. /etc/os-release
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

mirror_uri() {
  # The Debian mirror this machine's apt already uses (deb822 or one-line form).
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n1 || true)
  if [[ -z "$uri" ]]; then
    uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | grep -v security | awk '{print $2}' | grep -i debian | head -n1 || true)
  fi
  echo "${uri%/}"
}

MKOSI_TARGET=()
if [[ "$VERSION_CODENAME" == "bookworm" ]]; then
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding bookworm-backports (mkosi >= 24, systemd-boot, qemu)"
    uri=$(mirror_uri)
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "${uri:-http://deb.debian.org/debian}" | $SUDO tee /etc/apt/sources.list.d/berth-backports.sources >/dev/null
  fi
  MKOSI_TARGET=(-t bookworm-backports)
fi

log "installing apt packages"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${MKOSI_TARGET[@]}" \
  mkosi systemd-boot systemd-boot-efi systemd-container systemd-repart systemd-ukify qemu-system-x86 qemu-utils >/dev/null 2>&1 \
  || $SUDO apt-get install -y -qq --no-install-recommends "${MKOSI_TARGET[@]}" \
  mkosi systemd-boot systemd-boot-efi systemd-container qemu-system-x86 qemu-utils >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
# systemd-measure (the PCR 11 policy of each UKI, builder/measure.py) computes policy digests
# with the TPM2 software stack, which it loads at run time; the libraries need tpm-udev and so
# udev, from the suite systemd came from (backports on bookworm).
TSS2=(libtss2-esys-3.0.2-0t64 libtss2-mu-4.0.1-0t64 libtss2-rc0t64 libtss2-tctildr0t64)
[[ "$VERSION_CODENAME" == "bookworm" ]] && TSS2=(libtss2-esys-3.0.2-0 libtss2-mu0 libtss2-rc0 libtss2-tctildr0)
$SUDO apt-get install -y -qq --no-install-recommends "${MKOSI_TARGET[@]}" udev "${TSS2[@]}" >/dev/null

mkosi_version=$(mkosi --version | awk '{print $2}')
if [[ "${mkosi_version%%.*}" -lt 24 ]]; then
  echo "berth needs mkosi >= 24, found $mkosi_version" >&2
  exit 1
fi

log "python virtual environment in $VENV"
mkdir -p "$BERTH_CACHE"
if [[ ! -x "$VENV/bin/python" ]]; then
  # Debian's interpreter, so the venv matches what a fresh machine has.
  /usr/bin/python3 -m venv "$VENV"
fi
PIP_LOG="$BERTH_CACHE/logs/pip.log"
mkdir -p "$(dirname "$PIP_LOG")"
if ! { "$VENV/bin/pip" install -q --upgrade pip && "$VENV/bin/pip" install -q -e "$REPO[dev]"; } \
     >"$PIP_LOG" 2>&1; then
  tail -n 30 "$PIP_LOG" >&2
  echo "pip install failed; full log: $PIP_LOG" >&2
  exit 1
fi

want_hash > "$STAMP"
log "host ready (mkosi $mkosi_version, venv $VENV)"

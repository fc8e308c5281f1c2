#!/usr/bin/env bash
# Installs what nkpki's tests and demo need on a Debian machine, as root: the real peers
# (OpenSSL, the age CLI, SoftHSM2, OpenSC, zbar's QR reader, Chromium and its WebDriver for
# the web pages), what checks the Debian package (man-db, systemd-analyze, dpkg-deb, objdump)
# from Debian, and pkilint in a Python venv.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v age >/dev/null || need_apt+=(age)
command -v age-keygen >/dev/null || need_apt+=(age)
command -v softhsm2-util >/dev/null || need_apt+=(softhsm2)
command -v pkcs11-tool >/dev/null || need_apt+=(opensc)
command -v zbarimg >/dev/null || need_apt+=(zbar-tools)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
command -v man >/dev/null || need_apt+=(man-db)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v dpkg-deb >/dev/null || need_apt+=(dpkg)
command -v objdump >/dev/null || need_apt+=(binutils)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "==> installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need_apt[@]}"
fi

venv=target/pkilint-venv
if [ ! -x "$venv/bin/lint_pkix_cert" ]; then
    echo "==> installing pkilint into $venv"
    mkdir -p target
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check pkilint
fi

command -v cargo >/dev/null || {
    echo "error: cargo is not installed; nkpki needs a Rust toolchain (1.85 or newer)" >&2
    exit 1
}
echo "==> prerequisites ready"

#!/usr/bin/env bash
# Builds the Debian package from an already-built binary: scripts/deb.sh [BINARY] [OUT_DIR]
# (defaults: target/release/nkpki, target/debian). Man pages and completions come from the
# binary itself, so they match it. Writes OUT_DIR/nkpki_<version>_<arch>.deb and prints its path.
# NKPKI_DEB_COMPRESSION=gzip trades size for time (the tests use it; xz by default).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/release/nkpki}
out=${2:-target/debian}
[ -x "$bin" ] || { echo "error: $bin is not an executable (build it first: cargo build --release)" >&2; exit 1; }

version=$("$bin" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
# the newest glibc symbol version the binary links against is the libc6 it needs
glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/nkpki

install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/man/man1" "$root/usr/share/doc/nkpki" \
    "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d" "$root/lib/systemd/system" \
    "$root/usr/lib/systemd/user" "$root/etc/nkpki"

install -m 0755 "$bin" "$root/usr/bin/nkpki"
strip --strip-unneeded "$root/usr/bin/nkpki"

"$bin" man --out "$stage/man"
for page in "$stage"/man/*.1; do
    gzip -9n < "$page" > "$root/usr/share/man/man1/$(basename "$page").gz"
done
"$bin" completions bash > "$root/usr/share/bash-completion/completions/nkpki"
"$bin" completions zsh > "$root/usr/share/zsh/vendor-completions/_nkpki"
"$bin" completions fish > "$root/usr/share/fish/vendor_completions.d/nkpki.fish"

install -m 0644 packaging/nkpki-serve.service "$root/lib/systemd/system/"
install -m 0644 packaging/nkpki-agent@.service "$root/usr/lib/systemd/user/"
install -m 0644 examples/serve.toml "$root/etc/nkpki/serve.toml"

install -m 0644 packaging/debian/copyright "$root/usr/share/doc/nkpki/copyright"
for doc in README.md docs/operator-guide.md docs/holder-guide.md; do
    install -m 0644 "$doc" "$root/usr/share/doc/nkpki/"
done
sed "s/@VERSION@/$version/" packaging/debian/changelog | gzip -9n > "$root/usr/share/doc/nkpki/changelog.gz"

install -m 0755 packaging/debian/postinst packaging/debian/postrm "$root/DEBIAN/"
echo /etc/nkpki/serve.toml > "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@GLIBC@/$glibc/" -e "s/@SIZE@/$size/" \
    packaging/debian/control > "$root/DEBIAN/control"

mkdir -p "$out"
deb="$out/nkpki_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"${NKPKI_DEB_COMPRESSION:-xz}" --build "$root" "$deb" >/dev/null
echo "$deb"

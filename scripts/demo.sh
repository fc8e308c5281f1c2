#!/usr/bin/env bash
# The main job end to end on one machine: a 3-of-5 key ceremony with deployment packages,
# five SoftHSM tokens (stand-ins for Nitrokey HSM 2), each holder deploying onto its token
# and running the fire drill, an OpenSSL CSR signed offline with three tokens, and OpenSSL
# verifying the result. Everything happens in a temporary directory removed at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nkpki=${NKPKI:-$root/target/debug/nkpki}
work=$(mktemp -d "${TMPDIR:-/tmp}/nkpki-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# SoftHSM2 tokens live in this directory only; the real thing is OpenSC's module.
mkdir tokens
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
    "$work" > softhsm2.conf
export SOFTHSM2_CONF=$work/softhsm2.conf NKPKI_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
umask 077
echo 123456 > pin.txt   # every demo token's user PIN; real holders type theirs

step "Five holders, each with a token (SoftHSM here, a Nitrokey HSM 2 in real life) and an age key"
holders=(NK001:Alice:Paris NK002:Bruno:Lyon NK003:Chloe:Remote NK004:David:Paris NK005:Emma:Lyon)
entries=()
for h in "${holders[@]}"; do
    IFS=: read -r id name site <<<"$h"
    softhsm2-util --init-token --free --label "$id" --so-pin 12345678 --pin 123456 >/dev/null
    age-keygen -o "$id.key" 2>/dev/null
    recipient=$(grep -o 'age1[0-9a-z]*' "$id.key")
    echo "  $id  $name ($site)  $recipient"
    entries+=("{\"nitrokey_id\":\"$id\",\"holder_name\":\"$name\",\"holder_email\":\"${name,,}@example.org\",\"location\":\"$site\",\"age_recipient\":\"$recipient\"}")
done
(IFS=,; echo "[${entries[*]}]") > holders.json
run "$nkpki" token list

step "Key ceremony: 3-of-5, ECDSA P-384 CA key, one deployment package per holder"
run "$nkpki" ca-init --name "nkpki Demo Root CA" --org "nkpki Demo" --country FR \
    --key ecdsa-p384 --validity-years 10 --threshold 3 --holders holders.json --out ca \
    --package --server-url https://pki.example.org:8443
run ls -l ca ca/packages

step "Each holder deploys its package onto its own token"
for h in "${holders[@]}"; do
    id=${h%%:*}
    run "$nkpki" deploy "ca/packages/$id.nkpkg" --token "$id" --identity "$id.key" --pin-file pin.txt \
        --config-dir "holder-$id"
done

step "The QR code handed over at the ceremony says the same fingerprint"
if command -v zbarimg >/dev/null; then run zbarimg --quiet --raw ca/qr/NK002.png; fi

step "Fire drill on every token: PIN works, share matches the manifest, nothing revealed"
for h in "${holders[@]}"; do
    run "$nkpki" token drill --token "${h%%:*}" --manifest ca/manifest.json --pin-file pin.txt | tail -1
done

step "A server makes its key and CSR with OpenSSL"
run openssl req -new -newkey rsa:2048 -nodes -keyout server.key -subj "/CN=www.example.org/O=Example" \
    -addext "subjectAltName=DNS:www.example.org,DNS:example.org,IP:192.0.2.10" -out server.csr 2>/dev/null

step "Offline signing with three of the five tokens (NK001, NK003, NK005)"
run "$nkpki" sign --offline --manifest ca/manifest.json --csr server.csr --profile server --days 90 \
    --token NK001 --token NK003 --token NK005 --pin-file pin.txt --out server.crt --chain

step "Two tokens are not enough"
if "$nkpki" sign --offline --manifest ca/manifest.json --csr server.csr --profile server --days 90 \
    --token NK002 --token NK004 --pin-file pin.txt --out refused.crt; then
    echo "unexpected: two shares signed" >&2
    exit 1
fi

step "OpenSSL verifies the certificate against the CA"
run openssl x509 -in server.crt -noout -subject -issuer -ext subjectAltName,extendedKeyUsage
run openssl verify -CAfile ca/ca.crt server.crt

printf '\n\033[1mDemo complete.\033[0m (temporary files in %s are removed now)\n' "$work"

#!/usr/bin/env bash
# Usage: bench-online-modes.sh NKPKI
# Online signing time in each CA mode (reconstruct and threshold), rsa-2048, 3 of 5, three
# agents on SoftHSM tokens: the median time from `nkpki sign --server` to the certificate,
# and the ratio threshold / reconstruct. Prints; asserts nothing. A debug build reads the
# threshold ceremony's safe primes from NKPKI_TEST_SAFE_PRIMES when it is set.
set -euo pipefail
nkpki=$(realpath "${1:-target/release/nkpki}")
scripts=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/nkpki-bench-modes.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# shellcheck source=scripts/bench-lib.sh
. "$scripts/bench-lib.sh"

entries=()
for i in 1 2 3 4 5; do
    id=NK00$i
    age-keygen -o "$id.key" 2>/dev/null
    r=$(grep -o 'age1[0-9a-z]*' "$id.key")
    entries+=("{\"nitrokey_id\":\"$id\",\"holder_name\":\"H$i\",\"holder_email\":\"h$i@example.org\",\"location\":\"L\",\"age_recipient\":\"$r\"}")
done
(IFS=,; echo "[${entries[*]}]") > holders.json
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout s.key -subj /CN=b.example.org \
    -addext subjectAltName=DNS:b.example.org -out s.csr 2>/dev/null
echo 123456 > pin.txt

# Sets up mode $1 in directory $1/ and prints the median of 9 online signatures (run in a
# subshell: the server and agents it starts end with it).
online_ms() {
    local mode=$1 pids=()
    mkdir -p "$mode/tokens" && cd "$mode"
    printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
        "$PWD" > softhsm2.conf
    export SOFTHSM2_CONF=$PWD/softhsm2.conf NKPKI_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
    for i in 1 2 3; do softhsm2-util --init-token --free --label "NK00$i" --so-pin 12345678 --pin 123456 >/dev/null; done
    "$nkpki" ca-init --name Bench --org Bench --country FR --key rsa-2048 --mode "$mode" --threshold 3 \
        --holders ../holders.json --out ca --package >/dev/null 2>&1
    for i in 1 2 3; do "$nkpki" deploy "ca/packages/NK00$i.nkpkg" --token "NK00$i" --identity "../NK00$i.key" \
        --pin-file ../pin.txt --config-dir "cfg$i" >/dev/null 2>&1; done
    "$nkpki" serve ca add --data-dir data --manifest ca/manifest.json --enrollment ca/enrollment.json \
        --expect-fingerprint "$(openssl x509 -in ca/ca.crt -noout -fingerprint -sha256 | cut -d= -f2)" >/dev/null
    "$nkpki" serve token create --data-dir data --name bench 2>/dev/null > op.token
    "$nkpki" serve --listen 127.0.0.1:0 --data-dir data > serve.out 2>/dev/null &
    pids+=($!)
    for _ in $(seq 50); do grep -q listening serve.out && break; sleep 0.1; done
    local url ca_id
    url=$(sed -n 's/^listening on //p' serve.out)
    ca_id=$(python3 -c "import json; print(json.load(open('ca/manifest.json'))['signed']['ca_id'])")
    for i in 1 2 3; do
        local conf
        conf=$("$scripts/holder-machine.sh" "$nkpki" "NK00$i")
        SOFTHSM2_CONF=$conf "$nkpki" agent --config "cfg$i/$ca_id/agent.json" --pin-file ../pin.txt \
            --server "$url" --insecure-http --approve-profile server >/dev/null 2>&1 &
        pids+=($!)
    done
    sleep 2
    online() { "$nkpki" sign --server "$url" --ca "$ca_id" --csr ../s.csr --days 30 --api-token-file op.token \
        --out o.crt --force; }
    online >/dev/null 2>&1 # warm up: the agents' first answer includes their login
    median_ms 9 online
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}

reconstruct=$(online_ms reconstruct)
threshold=$(online_ms threshold)
printf '%-52s %10s %10s %8s\n' "sign --server rsa-2048, threshold vs reconstruct" "$threshold" "$reconstruct" \
    "$(awk -v a="$threshold" -v b="$reconstruct" 'BEGIN { if (b == 0) b = 1; printf "%.2f", a / b }')"

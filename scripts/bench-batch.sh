#!/usr/bin/env bash
# Usage: bench-batch.sh NKPKI [COUNT]
# Batch issuance: COUNT (default 1,000) P-256 CSRs issued in ONE online session by a
# reconstruct-mode CA (rsa-4096, then ecdsa-p256), 3 of 5, three agents on SoftHSM tokens
# approving by rule. nkpki's rate is certificates per second from `nkpki sign --csr-dir`
# starting (the session opens) to its last certificate written: it includes every CSR
# checked by the server and recomputed by each agent, the approvals, the key rebuilt once
# and every signature. The peer is `openssl x509 -req` looped over the same CSRs with the
# whole key of the same type (a CA of its own), with the same server-profile extensions.
# Prints certificates per second and the ratio nkpki / OpenSSL; asserts nothing.
set -euo pipefail
nkpki=$(realpath "${1:-target/release/nkpki}")
count=${2:-1000}
scripts=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/nkpki-bench-batch.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

rate() { awk -v n="$1" -v ms="$2" 'BEGIN { if (ms == 0) ms = 1; printf "%.1f", n * 1000 / ms }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) b = 1; printf "%.2f", a / b }'; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

entries=()
for i in 1 2 3 4 5; do
    id=NK00$i
    age-keygen -o "$id.key" 2>/dev/null
    r=$(grep -o 'age1[0-9a-z]*' "$id.key")
    entries+=("{\"nitrokey_id\":\"$id\",\"holder_name\":\"H$i\",\"holder_email\":\"h$i@example.org\",\"location\":\"L\",\"age_recipient\":\"$r\"}")
done
(IFS=,; echo "[${entries[*]}]") > holders.json
echo 123456 > pin.txt

# the CSRs: one P-256 key, a name each (the key's cost is not what is measured)
mkdir csrs
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out csr.key 2>/dev/null
for i in $(seq -f '%04g' "$count"); do
    openssl req -new -key csr.key -subj "/CN=host$i.example.org" -addext "subjectAltName=DNS:host$i.example.org" \
        -out "csrs/host$i.csr" 2>/dev/null
done
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' > server.ext

# nkpki: milliseconds for the whole batch in one session (run in a subshell: the server
# and agents it starts end with it)
nkpki_ms() {
    local key=$1 pids=()
    mkdir -p "$key/tokens" && cd "$key"
    printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
        "$PWD" > softhsm2.conf
    export SOFTHSM2_CONF=$PWD/softhsm2.conf NKPKI_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
    for i in 1 2 3; do softhsm2-util --init-token --free --label "NK00$i" --so-pin 12345678 --pin 123456 >/dev/null; done
    "$nkpki" ca-init --name Bench --org Bench --country FR --key "$key" --threshold 3 \
        --holders ../holders.json --out ca --package >/dev/null 2>&1
    for i in 1 2 3; do "$nkpki" deploy "ca/packages/NK00$i.nkpkg" --token "NK00$i" --identity "../NK00$i.key" \
        --pin-file ../pin.txt --config-dir "cfg$i" >/dev/null 2>&1; done
    "$nkpki" serve ca add --data-dir data --manifest ca/manifest.json --enrollment ca/enrollment.json \
        --expect-fingerprint "$(openssl x509 -in ca/ca.crt -noout -fingerprint -sha256 | cut -d= -f2)" >/dev/null
    "$nkpki" serve token create --data-dir data --name bench 2>/dev/null > op.token
    "$nkpki" serve --listen 127.0.0.1:0 --data-dir data --session-ttl 900 > serve.out 2>serve.log &
    pids+=($!)
    for _ in $(seq 50); do grep -qs listening serve.out && break; sleep 0.1; done
    local url ca_id
    url=$(sed -n 's/^listening on //p' serve.out)
    ca_id=$(python3 -c "import json; print(json.load(open('ca/manifest.json'))['signed']['ca_id'])")
    for i in 1 2 3; do
        local conf
        conf=$("$scripts/holder-machine.sh" "$nkpki" "NK00$i")
        SOFTHSM2_CONF=$conf "$nkpki" agent --config "cfg$i/$ca_id/agent.json" --pin-file ../pin.txt \
            --server "$url" --insecure-http --approve-profile server --approve-san-suffix .example.org \
            >/dev/null 2>"agent$i.log" &
        pids+=($!)
    done
    sleep 2
    # warm up: the agents' first answer includes their login
    "$nkpki" sign --server "$url" --ca "$ca_id" --csr ../csrs/host0001.csr --days 30 --api-token-file op.token \
        --out warm.crt >/dev/null 2>&1
    local t0 t1
    t0=$(now_ms)
    "$nkpki" sign --server "$url" --ca "$ca_id" --csr-dir ../csrs --days 30 --api-token-file op.token \
        --out-dir out >/dev/null 2>sign.log
    t1=$(now_ms)
    local issued
    issued=$(find out -name '*.crt' | wc -l)
    [ "$issued" = "$count" ] || { echo "nkpki issued $issued of $count certificates" >&2; cat sign.log >&2; exit 1; }
    openssl verify -CAfile ca/ca.crt "out/host$(printf '%04d' "$count").crt" >/dev/null
    echo $(( t1 - t0 ))
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}

# OpenSSL: milliseconds for `openssl x509 -req` over every CSR with the whole key
openssl_ms() {
    local key=$1
    mkdir -p "peer-$key/out" && cd "peer-$key"
    if [ "$key" = ecdsa-p256 ]; then
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
    else
        openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:${key#rsa-}" -out ca.key 2>/dev/null
    fi
    openssl req -x509 -new -key ca.key -subj /CN=PeerCA -days 60 -out ca.pem 2>/dev/null
    local t0 t1
    t0=$(now_ms)
    for f in ../csrs/*.csr; do
        openssl x509 -req -in "$f" -CA ca.pem -CAkey ca.key -days 30 -copy_extensions copy \
            -extfile ../server.ext -out "out/$(basename "$f" .csr).crt" 2>/dev/null
    done
    t1=$(now_ms)
    echo $(( t1 - t0 ))
}

printf '%-52s %10s %10s %8s\n' "batch of $count CSRs, one session (certificates/s)" nkpki openssl ratio
for key in ${BENCH_BATCH_KEYS:-rsa-4096 ecdsa-p256}; do
    ours=$( (nkpki_ms "$key") )
    peer=$( (openssl_ms "$key") )
    ours_rate=$(rate "$count" "$ours")
    peer_rate=$(rate "$count" "$peer")
    printf '%-52s %10s %10s %8s\n' "sign --csr-dir, $key CA (3 of 5), vs x509 -req loop" \
        "$ours_rate" "$peer_rate" "$(ratio "$ours_rate" "$peer_rate")"
    printf '%-52s %10s %10s\n' "  (whole batch, ms)" "$ours" "$peer"
done

# the signer alone: the `rsa` crate (single issuance) against ring (batches), per signature
example=$(dirname "$nkpki")/examples/batch_signers
if [ -x "$example" ]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096 -out sig4096.key 2>/dev/null
    "$example" sig4096.key
fi
# and OpenSSL's own signature alone, in process (no x509 -req process start)
openssl speed -seconds 3 rsa4096 2>/dev/null |
    awk '/^rsa 4096 bits/ { printf "rsa-4096 signature: openssl speed %.2f ms\n", $4 * 1000 }'

#!/usr/bin/env bash
# Reshare time: a 3-of-5 CA (rsa-4096 and ecdsa-p256, reconstruct mode) reshared to 4 of 7
# holders from three share files, as medians of repeated runs of the real binary. Prints;
# asserts nothing.
set -euo pipefail
nkpki=$(realpath "${1:-target/release/nkpki}")
scripts=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/nkpki-bench-reshare.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# shellcheck source=scripts/bench-lib.sh
. "$scripts/bench-lib.sh"

holders() {
    local n=$1 entries=()
    for i in $(seq "$n"); do
        id=$(printf 'NK%03d' "$i")
        [ -f "$id.key" ] || age-keygen -o "$id.key" 2>/dev/null
        r=$(grep -o 'age1[0-9a-z]*' "$id.key")
        entries+=("{\"nitrokey_id\":\"$id\",\"holder_name\":\"H$i\",\"holder_email\":\"h$i@example.org\",\"location\":\"L\",\"age_recipient\":\"$r\"}")
    done
    (IFS=,; echo "[${entries[*]}]") > "$2"
}

holders 5 five.json
holders 7 seven.json
reshare() {
    rm -rf "new-$1"
    "$nkpki" reshare --manifest "ca-$1/manifest.json" --holders seven.json --threshold 4 --out "new-$1" \
        --share "ca-$1/shares/NK001.age" --share "ca-$1/shares/NK002.age" --share "ca-$1/shares/NK003.age" \
        --identity NK001.key --identity NK002.key --identity NK003.key
}
printf '%-52s %10s\n' operation nkpki_ms
for key in rsa-4096 ecdsa-p256; do
    "$nkpki" ca-init --name Bench --org Bench --country FR --key "$key" --threshold 3 --holders five.json \
        --out "ca-$key" >/dev/null 2>&1
    reshare "$key" >/dev/null 2>reshare.err || { cat reshare.err >&2; exit 1; }
    printf '%-52s %10s\n' "reshare --key $key 3 of 5 -> 4 of 7 (share files)" "$(median_ms 7 reshare "$key")"
done

# Threshold mode (Shoup): M key shares give back the safe primes, which are re-dealt. The
# ceremony's safe-prime search is random and slow (minutes for rsa-4096): rsa-2048 by
# default, BENCH_SAFE_4096=1 adds rsa-4096.
sizes=(rsa-2048); [ "${BENCH_SAFE_4096:-0}" = 1 ] && sizes+=(rsa-4096)
for key in "${sizes[@]}"; do
    "$nkpki" ca-init --name Bench --org Bench --country FR --key "$key" --mode threshold --threshold 3 \
        --holders five.json --out "ca-t$key" >/dev/null 2>&1
    reshare "t$key" >/dev/null 2>reshare.err || { cat reshare.err >&2; exit 1; }
    printf '%-52s %10s\n' "reshare --mode threshold $key 3 of 5 -> 4 of 7" "$(median_ms 5 reshare "t$key")"
done

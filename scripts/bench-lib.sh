#!/usr/bin/env bash
# Helpers shared by the bench scripts (sourced, not run).

# median wall time in milliseconds of N runs of a command
median_ms() {
    local n=$1; shift
    local times=()
    for _ in $(seq "$n"); do
        local t0 t1
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1
        t1=$(date +%s%N)
        times+=($(( (t1 - t0) / 1000000 )))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

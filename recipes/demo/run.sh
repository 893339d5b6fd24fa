#!/usr/bin/env bash
# The offline demo: a generated ESC-50-style corpus -> manifests -> fbank HDF5 store -> stats ->
# a DataLoader over the store -> mask pictures. Needs no network and no GPU; sets up its own environment.
#
#   bash recipes/demo/run.sh [--out DIR] [--clips-per-fold N] [--stage N] [--stop-stage N]
#
# Stages: 0 corpus, 1 manifest, 2 fbank store, 3 normalisation stats, 4 summary,
#         5 PNGs of the EAT, SSAST-chunk and JEPA masks over one clip of the corpus.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${AUDIOSSL_DEMO_DIR:-$root/exp/demo}"
clips_per_fold=4
stage=0
stop_stage=100
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --clips-per-fold) clips_per_fold="$2"; shift 2 ;;
        --stage) stage="$2"; shift 2 ;;
        --stop-stage) stop_stage="$2"; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
cd "$root"
source scripts/env.sh
mkdir -p "$out"
run_stage() { [ "$1" -ge "$stage" ] && [ "$1" -le "$stop_stage" ]; }

if run_stage 0; then
    echo "== stage 0: generate the demo corpus (ESC-50 layout) in $out/corpus"
    python recipes/demo/make_corpus.py "$out/corpus" --clips-per-fold "$clips_per_fold"
fi
if run_stage 1; then
    echo "== stage 1: manifests"
    python data_prep/esc50.py "$out/corpus" "$out/data"
fi
if run_stage 2; then
    echo "== stage 2: fbank store (resumable: re-run after a kill to finish)"
    audiossl fbank --manifest "$out/data/manifest.csv" --out "$out/data/fbank.h5" --config ast --norm esc50
fi
if run_stage 3; then
    echo "== stage 3: normalisation statistics of this corpus"
    audiossl stats "$out/data/fbank.h5" --write
fi
if run_stage 4; then
    echo "== stage 4: summary"
    python recipes/demo/summary.py "$out/data/fbank.h5"
fi
if run_stage 5; then
    echo "== stage 5: masks over a clip of the corpus -> $out/masks/*.png"
    clip="$(ls "$out"/corpus/audio/*-7.wav 2>/dev/null | head -n 1)"
    audiossl show-masks --audio "${clip:-$(ls "$out"/corpus/audio/*.wav | head -n 1)}" --out "$out/masks" \
        --families inverse-block,chunk,multiblock --stats-rows 256 2>&1 | grep -v " INFO "
fi

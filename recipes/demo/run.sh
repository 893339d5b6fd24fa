#!/usr/bin/env bash
# The offline demo: a generated ESC-50-style corpus, then the real ESC-50 recipe on it with tiny
# presets on the CPU: pretrain SSAST-mini (patch) -> linear probe and fine-tuning on the 5 folds, next to the
# same encoder randomly initialised -> embeddings -> results table, mask pictures, training curves.
# Needs no network and no GPU; sets up its own environment. Six to eight minutes on 2 cores.
#
#   bash recipes/demo/run.sh [--out DIR] [--family F] [--clips-per-fold N] [--folds "1 2 3 4 5"] [--stage N] [--stop-stage N]
#                            [--pretrain-steps N] [--epochs N]      (shorter runs, e.g. for CI)
#
# Stages: 0 corpus, 1 the ESC-50 recipe (its stages 0-7), 2 PNGs of the EAT, SSAST-chunk and JEPA
#         masks over one clip, 3 the learning benchmark reduced to one real-speech task (espeak-ng
#         keyword spotting, split by accent): MAE-AST-tiny pretrained on its training voices vs the
#         same encoder randomly initialised vs fbank statistics (recipes/probe, ~3 min).
#         Re-running continues where a killed run stopped.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${AUDIOSSL_DEMO_DIR:-$root/exp/demo}"
clips_per_fold=4
folds="1 2 3 4 5"
family=ssast_patch  # the family that learns at this size (see the README); --family eat for EAT-tiny
stage=0
stop_stage=100
quick=() probe_quick=(--steps 400)
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --clips-per-fold) clips_per_fold="$2"; shift 2 ;;
        --folds) folds="$2"; shift 2 ;;
        --family) family="$2"; shift 2 ;;
        --stage) stage="$2"; shift 2 ;;
        --stop-stage) stop_stage="$2"; shift 2 ;;
        --pretrain-steps) quick+=("$1" "$2"); probe_quick=(--steps "$2" --max-per-split 60); shift 2 ;;
        --epochs) quick+=("$1" "$2"); shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
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
    echo "== stage 1: the ESC-50 recipe, $family tiny, pretrained vs random init"
    bash recipes/esc50/run.sh --data "$out/corpus" --family "$family" --size tiny --out "$out/esc50" \
        --folds "$folds" --own-stats --random-baseline "${quick[@]}"
fi
if run_stage 2; then
    echo "== stage 2: masks over a clip of the corpus -> $out/masks/*.png"
    clip="$(ls "$out"/corpus/audio/*-7.wav 2>/dev/null | head -n 1)"
    audiossl show-masks --audio "${clip:-$(ls "$out"/corpus/audio/*.wav | head -n 1)}" --out "$out/masks" \
        --families inverse-block,chunk,multiblock --stats-rows 256 2>&1 | grep -v " INFO "
    echo
    echo "results: $out/esc50/results.md (.csv), curves: $out/esc50/curves.png, masks: $out/masks/,"
    echo "embeddings: $out/esc50/embeddings.h5, pretrained model: $out/esc50/pretrain/model.pt"
fi
if run_stage 3; then
    if command -v espeak-ng >/dev/null 2>&1; then
        echo "== stage 3: does pretraining help? keyword spotting on unseen accents (recipes/probe)"
        bash recipes/probe/run.sh --out "$out/probe" --tasks espeak_kws --families maeast_patch "${probe_quick[@]}" \
            --seeds 3 --no-install --stage 1 2>&1 | grep -v " INFO " | sed -n '/stage 5/,$p'
    else
        echo "== stage 3: skipped: espeak-ng is not installed (apt-get install espeak-ng)"
    fi
fi

#!/usr/bin/env bash
# ESC-50 with the official 5-fold cross-validation: manifests -> fbank store -> statistics ->
# pretraining -> linear probe and fine-tuning on each fold -> embeddings -> results table.
# Reads a local ESC-50 copy (ESC-50-master/ with meta/esc50.csv and audio/); downloads nothing.
#
#   bash recipes/esc50/run.sh --data ROOT [--family eat] [--size base|tiny] [--init CKPT]
#        [--out DIR] [--folds "1 2 3 4 5"] [--random-baseline] [--own-stats] [--stage N] [--stop-stage N]
#        [--pretrain-steps N] [--epochs N] [-- --section.key value ...]
#
#   --family   eat | maeast_patch | maeast_frame | ssast_patch | ssast_frame   (configs in conf/)
#   --size     base: the papers' fine-tuning settings (GPU); tiny: CPU-sized presets (tests, demo)
#   --init     a native checkpoint to fine-tune (an AudioSet-pretrained model, or one imported
#              with `audiossl convert`); skips stage 3. Base size needs it: the papers pretrain on
#              AudioSet (recipes/audioset/run.sh), not on ESC-50's 2000 clips.
#   --random-baseline  also train the same encoder from random initialisation, so the table
#              shows what pretraining bought.
#   --own-stats  normalise with this corpus's mean/std (stage 2) instead of the published ESC-50 preset.
#   --pretrain-steps, --epochs  override the configs' lengths (quick trial runs); anything after
#              -- goes to every finetune/linprobe call as config overrides.
#
# Stages: 0 manifests, 1 fbank store, 2 statistics, 3 pretrain, 4 linear probe per fold,
#         5 fine-tune per fold, 6 embeddings of every clip, 7 report (CSV + Markdown + curves PNG).
# Every stage can be re-run: finished folds are skipped, interrupted ones resume.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
data="" family=eat size=base init="" out="" folds="1 2 3 4 5" random_baseline=0 own_stats=0
stage=0 stop_stage=100 extra=() pretrain_extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --data) data="$2"; shift 2 ;;
        --family) family="$2"; shift 2 ;;
        --size) size="$2"; shift 2 ;;
        --init) init="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --folds) folds="$2"; shift 2 ;;
        --random-baseline) random_baseline=1; shift ;;
        --own-stats) own_stats=1; shift ;;
        --stage) stage="$2"; shift 2 ;;
        --stop-stage) stop_stage="$2"; shift 2 ;;
        --pretrain-steps) pretrain_extra+=(--steps "$2" --save_every "$2"); shift 2 ;;
        --epochs) extra+=(--epochs "$2"); shift 2 ;;
        --) shift; extra+=("$@"); break ;;  # passed to every finetune/linprobe call
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ -n "$data" ] || { echo "--data ROOT is required (the unpacked ESC-50-master/)" >&2; exit 2; }
suffix=""; [ "$size" = tiny ] && suffix="_tiny"
conf="$root/recipes/esc50/conf"
case "$family$suffix" in  # the encoder preset of the random-init baseline
    eat) preset=eat_base ;;
    eat_tiny|maeast_patch_tiny|maeast_frame_tiny) preset="$family$suffix" ;;
    maeast_patch|maeast_frame) preset="${family}_base" ;;
    ssast_patch|ssast_frame) preset="ssast_base_${family#ssast_}" ;;
    ssast_patch_tiny|ssast_frame_tiny) preset="ssast_mini_${family#ssast_}" ;;
    *) echo "unknown family $family" >&2; exit 2 ;;
esac
for f in "$conf/finetune_${family}${suffix}.yaml" "$conf/linprobe_${family}${suffix}.yaml"; do
    [ -f "$f" ] || { echo "no config $f (family $family, size $size)" >&2; exit 2; }
done
out="${out:-$root/exp/esc50/${family}${suffix}}"
data="$(cd "$data" && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$root"
source scripts/env.sh
run_stage() { [ "$1" -ge "$stage" ] && [ "$1" -le "$stop_stage" ]; }
store="$out/data/fbank.h5"
manifest="$out/data/manifest.csv"

if run_stage 0; then
    echo "== stage 0: manifests from $data"
    python data_prep/esc50.py "$data" "$out/data"
fi
if run_stage 1; then
    echo "== stage 1: fbank store (resumable)"
    if [ -f "$store" ]; then echo "   $store exists"; else
        audiossl fbank --manifest "$manifest" --out "$store" --config ast --norm esc50
    fi
fi
if run_stage 2 && [ "$own_stats" = 1 ]; then
    echo "== stage 2: mean/std of this corpus into the store"
    audiossl stats "$store" --write
fi

pretrained="${init:-$out/pretrain/model.pt}"
if run_stage 3 && [ -z "$init" ]; then
    pconf="$conf/pretrain_${family}${suffix}.yaml"
    [ -f "$pconf" ] || { echo "no $pconf: give --init CKPT (pretrain on AudioSet with recipes/audioset/run.sh)" >&2; exit 2; }
    echo "== stage 3: pretrain $family$suffix on the ESC-50 clips -> $out/pretrain"
    if [ -f "$out/pretrain/model.pt" ]; then echo "   done"; else
        audiossl pretrain --config "$pconf" --data.train "$store" --out "$out/pretrain" --resume "${pretrain_extra[@]}"
    fi
fi

# One run per (task, init, fold); results.json marks a finished run, anything else resumes.
run_fold() {  # task init fold
    local task="$1" how="$2" k="$3" dir="$out/$1/$2/fold$3"
    if [ -f "$dir/results.json" ]; then echo "   $task $how fold $k: done"; return; fi
    local init_args=(--checkpoint "$pretrained")
    [ "$how" = random ] && init_args=(--init random --model "$preset")
    echo "   $task $how fold $k"
    audiossl "$task" --config "$conf/${task}_${family}${suffix}.yaml" "${init_args[@]}" --out "$dir" --resume \
        --data.store "$store" --data.manifest "$manifest" --data.split_column fold --data.test_values "[$k]" \
        "${extra[@]}"
}
inits="pretrained"; [ "$random_baseline" = 1 ] && inits="pretrained random"
for pair in "4 linprobe" "5 finetune"; do
    set -- $pair
    if run_stage "$1"; then
        echo "== stage $1: $2 on folds $folds ($inits)"
        for how in $inits; do for k in $folds; do run_fold "$2" "$how" "$k"; done; done
    fi
done
if run_stage 6; then
    echo "== stage 6: embeddings of every clip -> $out/embeddings.h5"
    [ -f "$out/embeddings.h5" ] || audiossl embed "$pretrained" "$manifest" -o "$out/embeddings.h5" --frames
fi
if run_stage 7; then
    echo "== stage 7: report"
    audiossl report "$out"/{linprobe,finetune}/*/fold*/results.json -o "$out/results" --group-by task,init
    curves=("$out"/finetune/*/fold1); [ -d "$out/pretrain" ] && curves=("$out/pretrain" "${curves[@]}")
    python recipes/common/plot_curves.py "$out/curves.png" "${curves[@]}"
    cat "$out/results.md"
fi

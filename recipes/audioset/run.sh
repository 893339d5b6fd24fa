#!/usr/bin/env bash
# AudioSet: manifests of the clips you have -> fbank stores -> pretraining -> fine-tuning on the
# balanced set (AS-20K) and, with --full, on AS-2M with the class-balanced sampler -> linear
# probe -> results. mAP is on the eval set; the eval clips actually present are listed next to
# every metric (eval.csv and each run's test_clips.txt), because AudioSet copies differ.
# Downloads nothing.
#
#   bash recipes/audioset/run.sh --audio-dir DIR --meta-dir DIR [--family eat] [--size base|tiny]
#        [--init CKPT] [--full] [--out DIR] [--stage N] [--stop-stage N] [--pretrain-steps N] [--epochs N]
#        [-- --section.key value ...]
#
#   --audio-dir  the downloaded clips, any naming data_prep/audioset.py recognises, any sub-folders
#   --meta-dir   balanced_train_segments.csv, eval_segments.csv, class_labels_indices.csv
#                (+ unbalanced_train_segments.csv with --full)
#   --family     eat | maeast_patch | maeast_frame | ssast_patch | ssast_frame
#   --init       a native checkpoint (e.g. from `audiossl convert`): skip pretraining
#   --full       also use the unbalanced train set: pretrain on AS-2M and fine-tune AS-2M
#   --pretrain-steps, --epochs  override the configs' lengths (quick trial runs); anything after
#                -- goes to every finetune/linprobe call as config overrides
#
# Stages: 0 manifests, 1 fbank stores, 2 pretrain, 3 fine-tune AS-20K, 4 fine-tune AS-2M (--full),
#         5 linear probe AS-20K, 6 report.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
audio="" meta="" family=eat size=base init="" full=0 out="" stage=0 stop_stage=100 extra=() pretrain_extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --audio-dir) audio="$2"; shift 2 ;;
        --meta-dir) meta="$2"; shift 2 ;;
        --family) family="$2"; shift 2 ;;
        --size) size="$2"; shift 2 ;;
        --init) init="$2"; shift 2 ;;
        --full) full=1; shift ;;
        --out) out="$2"; shift 2 ;;
        --stage) stage="$2"; shift 2 ;;
        --stop-stage) stop_stage="$2"; shift 2 ;;
        --pretrain-steps) pretrain_extra+=(--steps "$2" --save_every "$2"); shift 2 ;;
        --epochs) extra+=(--epochs "$2"); shift 2 ;;
        --) shift; extra+=("$@"); break ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ -n "$audio" ] && [ -n "$meta" ] || { echo "--audio-dir and --meta-dir are required" >&2; exit 2; }
suffix=""; [ "$size" = tiny ] && suffix="_tiny"
conf="$root/recipes/audioset/conf"
out="${out:-$root/exp/audioset/${family}${suffix}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"; audio="$(cd "$audio" && pwd)"; meta="$(cd "$meta" && pwd)"
cd "$root"
source scripts/env.sh
run_stage() { [ "$1" -ge "$stage" ] && [ "$1" -le "$stop_stage" ]; }
splits="balanced_train eval"; [ "$full" = 1 ] && splits="balanced_train unbalanced_train eval"

if run_stage 0; then
    echo "== stage 0: manifests of the clips present in $audio"
    segs=(); for s in $splits; do segs+=("$meta/${s}_segments.csv"); done
    python data_prep/audioset.py --segments "${segs[@]}" --audio-dir "$audio" \
        --label-csv "$meta/class_labels_indices.csv" "$out/data"
fi
if run_stage 1; then
    echo "== stage 1: fbank stores (resumable)"
    for s in $splits; do
        if [ -f "$out/data/$s.h5" ]; then echo "   $s.h5 exists"; continue; fi
        audiossl fbank --manifest "$out/data/$s.csv" --out "$out/data/$s.h5" --config ast --norm audioset
    done
    if [ "$full" = 1 ] && [ ! -f "$out/data/full_train.h5" ]; then
        audiossl fbank-merge "$out/data/full_train.h5" "$out/data/balanced_train.h5" "$out/data/unbalanced_train.h5"
    fi
fi
train_store="$out/data/balanced_train.h5"; [ "$full" = 1 ] && train_store="$out/data/full_train.h5"
pretrained="${init:-$out/pretrain/model.pt}"
if run_stage 2 && [ -z "$init" ]; then
    echo "== stage 2: pretrain $family$suffix on $(basename "$train_store")"
    if [ -f "$out/pretrain/model.pt" ]; then echo "   done"; else
        audiossl pretrain --config "$conf/pretrain_${family}${suffix}.yaml" --data.train "$train_store" \
            --out "$out/pretrain" --resume "${pretrain_extra[@]}"
    fi
fi
run_task() {  # stage task name config train_store [overrides...]
    local dir="$out/$3"
    if [ -f "$dir/results.json" ]; then echo "   $3: done"; return; fi
    audiossl "$2" --config "$conf/$4" --checkpoint "$pretrained" --out "$dir" --resume \
        --data.train "$5" --data.test "$out/data/eval.h5" "${@:6}" "${extra[@]}"
}
if run_stage 3; then
    echo "== stage 3: fine-tune on the balanced set (AS-20K)"
    run_task 3 finetune finetune_as20k "finetune_${family}${suffix}.yaml" "$out/data/balanced_train.h5"
fi
if run_stage 4 && [ "$full" = 1 ]; then
    echo "== stage 4: fine-tune on AS-2M (class-balanced sampler, 200k clips per epoch)"
    run_task 4 finetune finetune_as2m "finetune_${family}${suffix}.yaml" "$train_store" \
        --data.sampler weighted --data.epoch_len 200000
fi
if run_stage 5; then
    echo "== stage 5: linear probe on the balanced set"
    run_task 5 linprobe linprobe_as20k "linprobe_${family}${suffix}.yaml" "$out/data/balanced_train.h5"
fi
if run_stage 6; then
    echo "== stage 6: report"
    audiossl report "$out"/*/results.json -o "$out/results" --group-by task
    cat "$out/results.md"
    echo "eval clips used: $(($(wc -l < "$out/data/eval.csv") - 1)) (list: $out/data/eval.csv)"
fi

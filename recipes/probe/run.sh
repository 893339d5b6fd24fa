#!/usr/bin/env bash
# The learning benchmark: does pretraining make representations better than no pretraining?
# Real recorded audio from Debian packages -> one task manifest each (train/valid/test split so
# that no text, kit, phrase or voice crosses) -> the training splits' audio pooled into one fbank
# store -> each tiny family (EAT, MAE-AST-frame 128 x 4: conf/) pretrained on it -> frozen embeddings
# probed on every task next to the same encoder randomly initialised and pooled fbank statistics,
# in the same run.
#
#   bash recipes/probe/run.sh [--out DIR] [--families "eat maeast_patch ..."] [--tasks "..."] [--steps N]
#        [--seeds 3] [--pretrain-runs N] [--max-per-split N] [--threads N] [--stage N] [--stop-stage N]
#        [--no-install]
#
#   --families  any of: eat maeast_patch maeast_frame ssast_patch ijepa (configs in conf/);
#               default all five
#   --tasks     a subset of `python data_prep/tasks.py --names` (default: all five)
#   --steps     override every config's pretraining length (a quick trial: --steps 200)
#   --seeds     probe seeds; each seed also draws its own random-init encoder (default 3)
#   --pretrain-runs  pretraining runs per family (default 1): run k uses pretraining seed k
#               (pretrain/<family>-run<k>; run 1 is pretrain/<family>, the configs' seed 1) and
#               bench_learning.py reports the mean over runs. One run's drums margin is not a
#               measurement: EAT gave +0.8 and +12.2 with seeds 1 and 2.
#   --max-per-split  probe on at most N clips per task split, spread over the classes (default
#               1000: CPU minutes); pretraining always sees every training clip
#   --threads   torch threads of each pretraining job (default: $OMP_NUM_THREADS if set, else
#               every core); the configs' update counts fit ~13.5 minutes each on a quiet
#               2-core machine with 2 threads (EAT's sustained speed measured, the rest scaled)
#   --no-install     do not apt-get the audio packages (tasks whose package is missing are skipped)
#
# Stages: 0 install packages (root, apt), 1 build tasks, 2 pooled training store + its statistics,
#         3 pretrain each family, 4 evaluate (tables, charts, margins), 5 print the summary.
# Re-running continues: built tasks and stores are kept, pretraining resumes, embeddings are cached.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="" families="eat maeast_patch maeast_frame ssast_patch ijepa" tasks="" steps="" seeds=3 max_per_split=1000
stage=0 stop_stage=100 install=1 runs=1 threads="${OMP_NUM_THREADS:-$(nproc)}"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --families) families="$2"; shift 2 ;;
        --tasks) tasks="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --seeds) seeds="$2"; shift 2 ;;
        --pretrain-runs) runs="$2"; shift 2 ;;
        --max-per-split) max_per_split="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --stage) stage="$2"; shift 2 ;;
        --stop-stage) stop_stage="$2"; shift 2 ;;
        --no-install) install=0; shift ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
conf="$root/recipes/probe/conf"
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || { echo "--threads must be a positive integer, got '$threads'" >&2; exit 2; }
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "--pretrain-runs must be a positive integer, got '$runs'" >&2; exit 2; }
for f in $families; do
    [ -f "$conf/pretrain_$f.yaml" ] || { echo "unknown family $f (no $conf/pretrain_$f.yaml)" >&2; exit 2; }
done
out="${out:-$root/exp/probe}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$root"
run_stage() { [ "$1" -ge "$stage" ] && [ "$1" -le "$stop_stage" ]; }
# One torch thread per process outside pretraining: evaluation's embedding passes and probes are
# small, and oversubscribed OpenMP threads make a 2-core machine several times slower, not faster.
# Pretraining runs one family at a time, so it gets --threads (every core): on the 2-core VM two
# threads beside the loader worker ran EAT 128 x 4 at 110 clips/s against 70 with one, and
# MAE-AST-frame 128 x 4 at 137 against 90 (the 64 x 2 families: 3-13 % faster).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

if run_stage 0 && [ "$install" = 1 ]; then
    echo "== stage 0: audio packages"
    pkgs=(tuxpaint-stamps-default hydrogen-drumkits hedgewars-data espeak-ng)
    missing=()
    for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -eq 0 ]; then echo "   all installed"
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "   apt-get install ${missing[*]} (~450 MB of recordings; once)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}") \
            || echo "   [warning] could not install ${missing[*]}: their tasks are skipped" >&2
    else
        echo "   [warning] not root: ${missing[*]} missing, their tasks are skipped (apt-get install -y --no-install-recommends ${missing[*]})" >&2
    fi
fi

source scripts/env.sh
tasks_dir="$out/tasks"
tasks="${tasks:-$(python data_prep/tasks.py --names | tr '\n' ' ')}"
if run_stage 1; then
    echo "== stage 1: tasks"
    for t in $tasks; do
        if [ -f "$tasks_dir/$t/manifest.csv" ]; then echo "   $t: built"; continue; fi
        mkdir -p "$tasks_dir"
        rc=0; python data_prep/$t.py "$tasks_dir/$t" > "$tasks_dir/$t.log" 2>&1 || rc=$?
        if [ "$rc" = 3 ]; then echo "   $t: skipped: $(tail -n 1 "$tasks_dir/$t.log")"
        elif [ "$rc" != 0 ]; then cat "$tasks_dir/$t.log" >&2; exit "$rc"
        else echo "   $t: $(grep -c . "$tasks_dir/$t/manifest.csv") rows"; fi
    done
fi
manifests=()
for t in $tasks; do
    [ -f "$tasks_dir/$t/manifest.csv" ] && manifests+=("$tasks_dir/$t/manifest.csv")
done
[ ${#manifests[@]} -gt 0 ] || { echo "no task could be built: install the packages (stage 0)" >&2; exit 1; }

pool="$out/pool/train.csv" store="$out/pool/train.h5"
if run_stage 2; then
    echo "== stage 2: pooled training audio -> fbank store -> statistics"
    python data_prep/tasks.py --train-pool "$pool" "${manifests[@]}"
    if [ -f "$store" ]; then echo "   $store exists"; else
        audiossl fbank --manifest "$pool" --out "$store" --config ast 2> "$out/pool/fbank.log" \
            || { tail -n 20 "$out/pool/fbank.log" >&2; exit 1; }
        audiossl stats "$store" --write 2>> "$out/pool/fbank.log"
    fi
fi

# Run k of family f: pretrain/f (k = 1, the config's seed 1) or pretrain/f-runk (--seed k).
run_names() { local f="$1" k; echo "$f"; for ((k = 2; k <= runs; k++)); do echo "$f-run$k"; done; }
if run_stage 3; then
    for f in $families; do
        k=0
        for name in $(run_names "$f"); do
            k=$((k + 1)) run="$out/pretrain/$name"
            if [ -f "$run/model.pt" ]; then echo "== stage 3: $name: pretrained"; continue; fi
            echo "== stage 3: pretrain $name"
            over=(); [ -n "$steps" ] && over=(--steps "$steps" --save_every "$steps")
            [ "$k" -gt 1 ] && over+=(--seed "$k")
            start=$(date +%s)
            OMP_NUM_THREADS="$threads" audiossl pretrain --config "$conf/pretrain_$f.yaml" --data.train "$store" --out "$run" \
                --progress false "${over[@]}" --resume  # a killed run continues (or starts over before its first checkpoint)
            echo "   $name: $(( $(date +%s) - start )) s" | tee -a "$out/pretrain/minutes.txt"
        done
    done
fi

if run_stage 4; then
    echo "== stage 4: evaluate (pretrained vs random init vs fbank statistics, $seeds seeds)"
    args=()
    for m in "${manifests[@]}"; do args+=(--task "$(basename "$(dirname "$m")")=$m"); done
    for f in $families; do
        for name in $(run_names "$f"); do
            [ -f "$out/pretrain/$name/model.pt" ] && args+=(--checkpoint "$name=$out/pretrain/$name/model.pt")
        done
    done
    # Default rows use the representation each checkpoint records (meta.embed); the per-block
    # rows and the CLS rows are the evidence for that choice.
    audiossl evaluate "${args[@]}" --baselines random,fbank --seeds "$seeds" --max-per-split "$max_per_split" \
        --layers all --layers top2-mean --pooling cls,mean --out "$out/eval" --quiet
fi

if run_stage 5; then
    echo "== stage 5: summary ($out/eval)"
    for f in "$out"/eval/summary.md "$out"/eval/*/results.md; do [ -f "$f" ] && { echo; cat "$f"; }; done
    ls "$out"/eval/*.png "$out"/eval/*/*.png 2>/dev/null || true
fi

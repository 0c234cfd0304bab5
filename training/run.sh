#!/usr/bin/env bash
# Reproduces Kagami's trained likeness descriptors, models/kagami-descriptor-v{1,2,6}.{onnx,json}:
# installs the Debian dependencies, renders/extracts the training art, exports the ImageNet trunk
# weights from our TS converter, checks the torch trunk against the ONNX model, trains, evaluates
# (before/after table in training/out/train.log) and exports + checks the ONNX model.
#
#   ID=kagami-descriptor-v3 training/run.sh   # v3 experiment: v2's data + Freeciv, 1,500 steps (not shipped: training/README.md)
#   ID=kagami-descriptor-v4 training/run.sh   # v4 experiment: v2 with half the views framed as sliding windows (not shipped)
#   ID=kagami-descriptor-v5 training/run.sh   # v5: v2 taught that a recolour is the same character (hue rotations, recolour pairs)
#   ID=kagami-descriptor-v6 training/run.sh   # v6: v2's data and loss, 3,000 steps (~1 h on one busy core)
#   ID=kagami-descriptor-v7 training/run.sh   # v7 experiment: v2's recipe, 4,500 steps (not shipped: training/README.md)
#   ID=kagami-descriptor-v8 training/run.sh   # v8: v6 fine-tuned (600 steps) with half the views boxes of larger scenes, pooled as the dense form pools a window
#   ID=kagami-descriptor-v9 training/run.sh   # v9: v8 fine-tuned again on a fresh pool (pool seed 2, 12 pairs, 1,200 steps)
#   ID=kagami-descriptor-v10 training/run.sh  # v10: v9 fine-tuned on a fresh pool with Crossfire's monsters added (training/README.md)
#   ID=kagami-descriptor-v11 training/run.sh  # v11 (the default's float model): v10 fine-tuned on a fresh pool with Unknown Horizons' and Bos Wars' units added (training/README.md)
#   ID=kagami-descriptor-v12 training/run.sh  # v12 experiment: v11 fine-tuned on a fresh pool with Naev's ships added (training/README.md)
#   training/run.sh                      # v2: full run (~35 min on one busy CPU core)
#   ID=kagami-descriptor-v1 training/run.sh   # v1 recipe (freedink + synthetic only, ~15 min)
#   STEPS=20 PAIRS=2 ONNX=/tmp/smoke/kagami-descriptor-v2.onnx training/run.sh   # smoke run
#
# Never install or read the packages the README reserves for held-out evaluation.
# Training characters must not overlap the accuracy benchmark's (supertux-data, flare-game, synthetic
# styleSeed 40-44): see training/README.md.
set -euo pipefail
set -x
cd "$(dirname "$0")/.."
PY=/usr/bin/python3            # Debian's python (python3-torch); the python3 on PATH may be another one
THREADS=${THREADS:-1}          # 1 is faster than 2 on a shared, busy 2-core machine
ID=${ID:-kagami-descriptor-v2}
case "$ID" in
  kagami-descriptor-v1) DEF_SOURCES=freedink; DEF_STEPS=800; DEF_REAL=0.333 ;;
  kagami-descriptor-v2) DEF_SOURCES=freedink,widelands,tuxpaint; DEF_STEPS=1000; DEF_REAL=0.5 ;;
  kagami-descriptor-v3) DEF_SOURCES=freedink,widelands,tuxpaint,freeciv; DEF_STEPS=1500; DEF_REAL=0.5 ;;
  kagami-descriptor-v4) DEF_SOURCES=freedink,widelands,tuxpaint; DEF_STEPS=1000; DEF_REAL=0.5; DEF_WINDOW=0.5 ;;
  kagami-descriptor-v5) DEF_SOURCES=freedink,widelands,tuxpaint; DEF_STEPS=1000; DEF_REAL=0.5; DEF_HUE=0.3; DEF_RECOLOURS=--recolours-same ;;
  kagami-descriptor-v6) DEF_SOURCES=freedink,widelands,tuxpaint; DEF_STEPS=3000; DEF_REAL=0.5 ;;
  kagami-descriptor-v7) DEF_SOURCES=freedink,widelands,tuxpaint; DEF_STEPS=4500; DEF_REAL=0.5 ;;
  kagami-descriptor-v8) DEF_SOURCES=freedink,widelands,tuxpaint; DEF_STEPS=600; DEF_REAL=0.5; DEF_CONTEXT=0.5; DEF_PAIRS=6; DEF_LR=3e-4; DEF_INIT=models/kagami-descriptor-v6.onnx ;;
  kagami-descriptor-v9) DEF_SOURCES=freedink,widelands,tuxpaint; DEF_STEPS=1200; DEF_REAL=0.5; DEF_CONTEXT=0.5; DEF_PAIRS=12; DEF_LR=3e-4; DEF_INIT=models/kagami-descriptor-v8.onnx; DEF_POOL_SEED=2 ;;
  kagami-descriptor-v10) DEF_SOURCES=freedink,widelands,tuxpaint,crossfire; DEF_STEPS=1200; DEF_REAL=0.5; DEF_CONTEXT=0.5; DEF_PAIRS=8; DEF_LR=3e-4; DEF_INIT=models/kagami-descriptor-v9.onnx; DEF_POOL_SEED=3 ;;
  kagami-descriptor-v11) DEF_SOURCES=freedink,widelands,tuxpaint,crossfire,unknownhorizons,boswars; DEF_STEPS=1200; DEF_REAL=0.5; DEF_CONTEXT=0.5; DEF_PAIRS=8; DEF_LR=3e-4; DEF_INIT=models/kagami-descriptor-v10.onnx; DEF_POOL_SEED=4 ;;
  kagami-descriptor-v12) DEF_SOURCES=freedink,widelands,tuxpaint,crossfire,unknownhorizons,boswars,naev; DEF_STEPS=1200; DEF_REAL=0.5; DEF_CONTEXT=0.5; DEF_PAIRS=8; DEF_LR=3e-4; DEF_INIT=models/kagami-descriptor-v11.onnx; DEF_POOL_SEED=5 ;;
  *) echo "unknown ID $ID" >&2; exit 2 ;;
esac
SOURCES=${SOURCES:-$DEF_SOURCES}  # real art sources besides the synthetic characters
STEPS=${STEPS:-$DEF_STEPS}
REAL_FRAC=${REAL_FRAC:-$DEF_REAL} # share of each batch from the real art
PAIRS=${PAIRS:-${DEF_PAIRS:-24}}
LR=${LR:-${DEF_LR:-1e-3}}           # the head's learning rate (the tuned trunk blocks get 0.3x)
INIT=${INIT-${DEF_INIT:-}}         # a committed float descriptor to start from (train.py --init) instead of the ImageNet trunk
WINDOW_FRAC=${WINDOW_FRAC:-${DEF_WINDOW:-0}}  # share of training views framed as the scanner's sliding windows frame a character
HUE_PROB=${HUE_PROB:-${DEF_HUE:-0}}  # share of training views recoloured by a hue rotation of 20-180 degrees
RECOLOURS=${RECOLOURS-${DEF_RECOLOURS:-}}  # --recolours-same: a recolour of one body (same silhouette) is the same character
CONTEXT_FRAC=${CONTEXT_FRAC:-${DEF_CONTEXT:-0}}  # share of training views that are a box of a larger scene (train.py --context-frac)
POOL_SEED=${POOL_SEED-${DEF_POOL_SEED:-}}  # seed of the view pool and batches (train.py --pool-seed): fresh views for a fine-tune, the same evaluation queries
ONNX=${ONNX:-models/$ID.onnx}     # where the model (and its manifest, .json) go
case "$ID" in
  kagami-descriptor-v1) DEF_COMPARE= ;;
  kagami-descriptor-v2) DEF_COMPARE=models/kagami-descriptor-v1.json ;;
  kagami-descriptor-v8) DEF_COMPARE=models/kagami-descriptor-v1.json,models/kagami-descriptor-v6.json ;;
  kagami-descriptor-v9) DEF_COMPARE=models/kagami-descriptor-v1.json,models/kagami-descriptor-v8.json ;;
  kagami-descriptor-v10) DEF_COMPARE=models/kagami-descriptor-v1.json,models/kagami-descriptor-v9.json ;;
  kagami-descriptor-v11) DEF_COMPARE=models/kagami-descriptor-v1.json,models/kagami-descriptor-v10.json ;;
  kagami-descriptor-v12) DEF_COMPARE=models/kagami-descriptor-v1.json,models/kagami-descriptor-v11.json ;;
  *) DEF_COMPARE=models/kagami-descriptor-v1.json,models/kagami-descriptor-v2.json ;;
esac
COMPARE=${COMPARE-$DEF_COMPARE}  # committed models evaluated on the same queries
BASELINE=${BASELINE:-1}  # 0: skip the frozen models' rows of the table (train.py --no-baseline; they take ~10 min)
MAX_MINUTES=${MAX_MINUTES:-0}  # >0: stop training early on a slow machine (the log says where)
export OMP_NUM_THREADS=$THREADS

# 1. dependencies (Debian bookworm: torch 1.13, numpy, Pillow, onnx; art: freedink-data, widelands-data, tuxpaint-stamps-default, freeciv-data, crossfire-client-images)
if ! $PY -c 'import torch, numpy, PIL, onnx' 2>/dev/null || [ ! -d /usr/share/games/dink/dink/graphics ] \
   || [ ! -d /usr/share/games/widelands/data/tribes ] || [ ! -d /usr/share/tuxpaint/stamps ] || [ ! -d /usr/share/games/freeciv/cimpletoon ] \
   || [ ! -f /usr/share/games/crossfire-client/crossfire.base ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-torch python3-numpy python3-pil python3-onnx \
    freedink-data widelands-data tuxpaint-stamps-default freeciv-data crossfire-client-images
fi

# 2. the TS modules the scripts use, compiled into training/.build (independent of dist/)
npx tsc --outDir training/.build --rootDir src --target ES2022 --module commonjs --moduleResolution node \
  --esModuleInterop --resolveJsonModule --skipLibCheck --strict --types node \
  src/synthetic/art.ts src/signals/embedding/tfjs-to-onnx.ts src/signals/embedding/onnx-embedder.ts src/signals/embedding/inference-worker.ts

# 3. data: ImageNet trunk weights, synthetic characters + backgrounds, game art sprites
mkdir -p training/data training/out
node training/export-weights.js training/data/mobilenetv2_block10
node training/render-synthetic.js training/data 80 4 48
$PY training/freedink.py training/data > training/out/freedink.txt
$PY training/widelands.py training/data > training/out/widelands.txt
$PY training/tuxpaint.py training/data > training/out/tuxpaint.txt
$PY training/freeciv.py training/data > training/out/freeciv.txt
$PY training/crossfire.py training/data > training/out/crossfire.txt
# Unknown Horizons and Bos Wars are games, not art packages: their .debs are unpacked, not installed
for pkg in unknown-horizons boswars-data; do
  if [ ! -d "training/data/debs/$pkg" ]; then
    mkdir -p training/data/debs && (cd training/data/debs && apt-get download "$pkg" && dpkg-deb -x "$pkg"_*.deb "$pkg" && rm "$pkg"_*.deb)
  fi
done
UH_ROOT=training/data/debs/unknown-horizons/usr/share/unknown-horizons $PY training/unknownhorizons.py training/data > training/out/unknownhorizons.txt
BOSWARS_ROOT=training/data/debs/boswars-data/usr/share/games/boswars $PY training/boswars.py training/data > training/out/boswars.txt
# Naev's data is 350 MB: only its ship graphics, ship definitions and copyright file are unpacked
if [ ! -d training/data/debs/naev-data/usr/share/naev/dat/gfx/ship ]; then
  mkdir -p training/data/debs/naev-data && (cd training/data/debs && apt-get download naev-data \
    && dpkg-deb --fsys-tarfile naev-data_*.deb | tar -x -C naev-data --wildcards './usr/share/naev/dat/gfx/ship/*' './usr/share/naev/dat/ships/*' './usr/share/doc/naev-data/*' \
    && rm naev-data_*.deb)
fi
NAEV_ROOT=training/data/debs/naev-data/usr/share/naev $PY training/naev.py training/data > training/out/naev.txt

# 4. the torch trunk reproduces the ONNX model our converter builds (max abs diff must be < 1e-3)
$PY training/verify-trunk.py training/out
node training/check-onnx.js models/mobilenetv2-block10-gem3x3.json training/out/trunk-check-torch.bin training/out/trunk-check-{0,1,2}.png

# 5. train, evaluate (before/after), export ONNX
$PY training/train.py --threads "$THREADS" --steps "$STEPS" --pairs "$PAIRS" --max-minutes "$MAX_MINUTES" --seed 1234 \
  --sources "$SOURCES" --real-frac "$REAL_FRAC" --window-frac "$WINDOW_FRAC" --hue-prob "$HUE_PROB" --context-frac "$CONTEXT_FRAC" --lr "$LR" ${INIT:+--init "$INIT"} ${POOL_SEED:+--pool-seed "$POOL_SEED"} $RECOLOURS $([ "$BASELINE" = 0 ] && echo --no-baseline) --compare "$COMPARE" --out training/out --onnx "$ONNX" 2>&1 | grep -v -e 'UserWarning' -e '_C._jit_pass'

# 6. the exported graph simplified (pads folded into the convs: same outputs, faster on CPU),
#    manifest (sha256), and the product's OnnxEmbedder gives torch's vectors
$PY training/quantise.py simplify "$ONNX" "$ONNX"
node training/write-manifest.js "$ONNX" training/out/results.json
node training/check-onnx.js "${ONNX%.onnx}.json" training/out/check-torch.bin training/out/check-{0,1,2}.png

#!/usr/bin/env bash
# Builds models/kagami-descriptor-v2-int8.{onnx,json}: static int8 QDQ quantisation of the committed
# float descriptor (issue 5), calibrated on Kagami's synthetic window crops (seeds 60000+; never the
# evaluation or benchmark art). ~1 min on a busy 2-core machine. See training/README.md.
#
#   training/quantise.sh                          # percentile ranges (default, shipped)
#   METHOD=minmax training/quantise.sh            # min/max ranges
#   WEIGHT_BITS=8 training/quantise.sh            # full int8 weights only (saturate on CPUs without VNNI)
#   FROM=models/kagami-descriptor-v1.json training/quantise.sh   # another float model -> models/<id>-int8.*
#
# With 7-bit weights (the default) it also writes <id>-int8-w8.onnx, the same model with full 8-bit
# weights, as the manifest's `weights8` variant: CPUs with int8 dot products run that one
# (src/signals/embedding/int8-weights.ts). `training/dense.py` then derives both dense forms.
set -euo pipefail
set -x
cd "$(dirname "$0")/.."
PY=/usr/bin/python3            # Debian's python3-onnx + python3-numpy
FROM=${FROM:-models/kagami-descriptor-v2.json}
METHOD=${METHOD:-percentile}
PCT=${PCT:-99.99}
CROPS=${CROPS:-400}
WEIGHT_BITS=${WEIGHT_BITS:-7}  # 7: no int16 saturation on CPUs without VNNI (quantise.py); 8: finer weights, drifts there
ID=$(basename "$FROM" .json)
OUT=${OUT:-models/$ID-int8.onnx}
W=training/out/int8
mkdir -p "$W"

if ! $PY -c 'import onnx, numpy' 2>/dev/null; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-onnx python3-numpy
fi

# the TS modules the scripts use, compiled into training/.build (independent of dist/)
npx tsc --outDir training/.build --rootDir src --target ES2022 --module commonjs --moduleResolution node \
  --esModuleInterop --resolveJsonModule --skipLibCheck --strict --types node \
  src/synthetic/crops.ts src/signals/embedding/onnx-embedder.ts src/signals/embedding/inference-worker.ts src/signals/embedding/drift.ts

FLOAT=models/$(node -p "require('./$FROM').file")
$PY training/quantise.py prepare "$FLOAT" "$W/prepped.onnx" "$W/calib.onnx" "$W/tensors.json"
node training/calibrate-int8.js "$W/calib.onnx" "$W/tensors.json" "$W/ranges.json" "$CROPS" "$PCT" "$METHOD"
$PY training/quantise.py write "$W/prepped.onnx" "$W/tensors.json" "$W/ranges.json" "$OUT" "$WEIGHT_BITS"
W8=
if [ "$WEIGHT_BITS" = 7 ]; then
  # The same ranges with full 8-bit weights: the variant CPUs with int8 dot products run (weights8).
  W8=${OUT%.onnx}-w8.onnx
  $PY training/quantise.py write "$W/prepped.onnx" "$W/tensors.json" "$W/ranges.json" "$W8" 8
fi
node training/write-int8-manifest.js "$FROM" "$OUT" "$W/ranges.json" "$WEIGHT_BITS" $W8
node training/check-int8.js "$FROM" "${OUT%.onnx}.json" | tee "$W/check.txt"
$PY -c "import collections, onnx; m = onnx.load('$W/int8.opt.onnx'); print('onnxruntime runs:', dict(collections.Counter(n.op_type for n in m.graph.node)))" | tee -a "$W/check.txt"

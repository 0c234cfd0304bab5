#!/usr/bin/env node
/**
 * Writes models/<float id>-int8.json for a quantised model: the float model's manifest (input,
 * output, usage, calibration) with the int8 file's id, sha256, description and a `quantised`
 * section, checked against Kagami's manifest schema.
 *
 *   node training/write-int8-manifest.js models/kagami-descriptor-v2.json models/kagami-descriptor-v2-int8.onnx RANGES.json
 */
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { parseManifest } = require('./.build/signals/embedding/manifest.js');

const [floatManifest, onnx, rangesPath] = process.argv.slice(2);
if (!floatManifest || !onnx || !rangesPath) throw new Error('usage: write-int8-manifest.js FLOAT.json INT8.onnx RANGES.json [WEIGHT_BITS [INT8-W8.onnx]]');
const base = JSON.parse(fs.readFileSync(floatManifest, 'utf8'));
const ranges = JSON.parse(fs.readFileSync(rangesPath, 'utf8'));
const sha = (f) => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
const floatFile = path.join(path.dirname(floatManifest), base.file);
const id = path.basename(onnx, '.onnx');
const bits = Number(process.argv[5] || 7);
if (bits !== 7 && bits !== 8) throw new Error('WEIGHT_BITS is 7 or 8');
const w8 = process.argv[6];
if (w8 && (bits !== 7 || path.dirname(path.resolve(w8)) !== path.dirname(path.resolve(onnx)))) {
  throw new Error('an 8-bit weights variant goes beside a 7-bit model');
}
const how = ranges.method === 'minmax' ? 'min/max' : `${ranges.percentile}th percentile`;
const acts = `uint8, asymmetric, per tensor; ranges: ${how} over ${ranges.crops.count} synthetic window crops (training/calibrate-int8.js)`;
const m = {
  id,
  description:
    `${base.id} quantised to int8 (static QDQ: onnxruntime runs it as QLinearConv/QLinearAdd): same network, input and output, ` +
    `vectors close to but not interchangeable with ${base.id}'s (drift: models/README.md). ${base.description}`,
  training: {
    recipe: 'training/quantise.sh',
    files: ['training/quantise.sh', 'training/quantise.py', 'training/calibrate-int8.js', 'training/write-int8-manifest.js', 'src/synthetic/crops.ts', ...base.training.files],
    data: `calibration: Kagami's synthetic window crops (src/synthetic/crops.ts; character seeds ${ranges.crops.firstCharacter}+, backgrounds ${ranges.crops.backgroundSeed}+). ${base.id}: ${base.training.data}`,
    licence: base.training.licence,
  },
  quantised: {
    from: base.id,
    fromSha256: sha(floatFile),
    scheme: 'qdq-static',
    weights:
      bits === 7
        ? 'int8 holding 7-bit values ([-63, 63]: no int16 saturation on CPUs without VNNI), symmetric, per output channel (Conv), int32 biases'
        : 'int8, symmetric, per output channel (Conv), int32 biases',
    activations: acts,
    float: 'the graph input (NHWC -> NCHW transpose) and the head after the last 1x1 conv: GeM pooling, the 512 -> 256 linear projection, L2',
  },
  trunk: base.trunk,
  head: base.head,
  usage: base.usage,
  calibration: base.calibration,
  file: path.basename(onnx),
  sha256: sha(onnx),
  // The same quantisation with full 8-bit weights, for CPUs whose int8 kernels cannot saturate
  // (src/signals/embedding/int8-weights.ts); dense.py adds its dense form.
  ...(w8 ? { weights8: { file: path.basename(w8), sha256: sha(w8) } } : {}),
  input: base.input,
  output: base.output,
  licence: base.licence,
};
if (base.sha256 !== m.quantised.fromSha256) throw new Error(`${floatFile} does not match its manifest's sha256`);
parseManifest(m, path.join(path.dirname(onnx), `${id}.json`));
fs.writeFileSync(path.join(path.dirname(onnx), `${id}.json`), JSON.stringify(m, null, 2) + '\n');
console.log(`write-int8-manifest: ${id}.json, sha256 ${m.sha256}`);

#!/usr/bin/env node
/**
 * Exports the ImageNet MobileNetV2 weights that Kagami's converter uses (nsfwjs' frozen layers, the
 * same bytes as models/mobilenetv2-block10-gem3x3.onnx) for the torch trunk in train.py:
 *   <out>.bin   float32 little-endian, tensors back to back (Keras layout)
 *   <out>.json  { source, tensors: [{ name, shape, offset }] } (offset in floats)
 * Only the layers up to block_10_project_BN are written.
 *
 *   node training/export-weights.js training/data/mobilenetv2_block10
 */
const fs = require('fs');
const path = require('path');
const t = require('./.build/signals/embedding/tfjs-to-onnx.js');

const out = process.argv[2] || path.join(__dirname, 'data', 'mobilenetv2_block10');
const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'models', 'mobilenetv2-block10-gem3x3.json'), 'utf8'));
const { model, weightData, version } = t.loadPackagedLayersModel(manifest.source.package, manifest.source.files);
const weights = t.decodeWeights(model.weightsManifest, weightData);
const keep = (name) => {
  const layer = name.split('/')[0];
  if (['Conv1', 'bn_Conv1'].includes(layer) || layer.startsWith('expanded_conv')) return true;
  const m = /^block_(\d+)_/.exec(layer);
  return m && Number(m[1]) <= 10;
};
const tensors = [];
let offset = 0;
const chunks = [];
for (const [name, w] of weights) {
  if (!keep(name)) continue;
  tensors.push({ name, shape: w.shape, offset });
  offset += w.values.length;
  chunks.push(Buffer.from(w.values.buffer, w.values.byteOffset, w.values.byteLength));
}
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(`${out}.bin`, Buffer.concat(chunks));
fs.writeFileSync(`${out}.json`, JSON.stringify({ source: `${manifest.source.package}@${version}`, tensors }, null, 1));
console.log(`export-weights: ${tensors.length} tensors, ${offset} floats -> ${out}.bin`);

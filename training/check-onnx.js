#!/usr/bin/env node
/**
 * Runs a model through Kagami's own OnnxEmbedder (manifest + sha256 check + onnxruntime-node) on
 * PNG images that are already at the model's input size, and compares the vectors with a reference
 * computed by torch (float32 little-endian, one row per image).
 *
 *   node training/check-onnx.js <manifest.json> <reference.bin> <a.png> [b.png ...]
 */
const fs = require('fs');
const sharp = require('sharp');
const { OnnxEmbedder } = require('./.build/signals/embedding/onnx-embedder.js');

async function main() {
  const [manifest, refFile, ...pngs] = process.argv.slice(2);
  const emb = await OnnxEmbedder.create(manifest);
  const images = [];
  for (const p of pngs) {
    const { data, info } = await sharp(p).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    images.push({ width: info.width, height: info.height, channels: 3, data: new Uint8Array(data) });
  }
  const out = await emb.embed(images);
  const buf = fs.readFileSync(refFile);
  const ref = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  let maxDiff = 0;
  out.forEach((v, i) => {
    let norm = 0;
    for (let j = 0; j < v.length; j++) {
      maxDiff = Math.max(maxDiff, Math.abs(v[j] - ref[i * v.length + j]));
      norm += v[j] * v[j];
    }
    console.log(`${pngs[i]}: dim ${v.length}, |v| = ${Math.sqrt(norm).toFixed(6)}`);
  });
  if (ref.length !== out.length * emb.dimension) throw new Error(`reference has ${ref.length} values, expected ${out.length * emb.dimension}`);
  console.log(`${emb.modelId}: ${out.length} images, max |onnxruntime - torch| = ${maxDiff.toExponential(2)}`);
  await emb.dispose();
  if (!(maxDiff < 1e-3)) process.exit(1);
}
main().catch((e) => { console.error(e); process.exit(1); });

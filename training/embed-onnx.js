#!/usr/bin/env node
/**
 * Embeds raw images with a committed model through Kagami's own OnnxEmbedder (manifest + sha256
 * check), so train.py can evaluate an earlier descriptor on exactly the queries it evaluates the new
 * one on.
 *
 *   node training/embed-onnx.js <manifest.json> <images.u8> <out.f32>
 *
 * images.u8: N x S x S x 3 uint8 RGB at the model's input size; out.f32: N x D float32 little-endian.
 */
const fs = require('fs');
const { OnnxEmbedder } = require('./.build/signals/embedding/onnx-embedder.js');

async function main() {
  const [manifest, input, output] = process.argv.slice(2);
  const emb = await OnnxEmbedder.create(manifest);
  const S = emb.inputWidth;
  const buf = fs.readFileSync(input);
  const n = buf.length / (S * S * 3);
  if (!Number.isInteger(n)) throw new Error(`${input}: ${buf.length} bytes is not a whole number of ${S}x${S} RGB images`);
  const out = Buffer.alloc(n * emb.dimension * 4);
  for (let i = 0; i < n; i += 64) {
    const images = [];
    for (let j = i; j < Math.min(n, i + 64); j++) {
      images.push({ width: S, height: S, channels: 3, data: new Uint8Array(buf.buffer, buf.byteOffset + j * S * S * 3, S * S * 3) });
    }
    const vs = await emb.embed(images);
    vs.forEach((v, k) => Buffer.from(v.buffer, v.byteOffset, v.byteLength).copy(out, (i + k) * emb.dimension * 4));
  }
  fs.writeFileSync(output, out);
  await emb.dispose();
}
main().catch((e) => { console.error(e); process.exit(1); });

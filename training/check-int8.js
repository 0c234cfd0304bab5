#!/usr/bin/env node
/**
 * Checks a quantised descriptor against its float model through the product's OnnxEmbedder (which
 * checks both files' sha256): 256-d unit vectors, cosine between the two models' vectors of the same
 * crops, and nearest-reference agreement among 200 synthetic characters. The crops are disjoint from
 * the calibration crops (character seeds 80000+, styleSeed 81000+, backgrounds 82000+).
 * Also saves onnxruntime's optimised int8 graph to training/out/int8/int8.opt.onnx (to count fused ops).
 *
 *   node training/check-int8.js models/kagami-descriptor-v2.json models/kagami-descriptor-v2-int8.json
 */
const path = require('path');
const ort = require('onnxruntime-node');
const { OnnxEmbedder } = require('./.build/signals/embedding/onnx-embedder.js');
const { cosineDrift, neighbourAgreement } = require('./.build/signals/embedding/drift.js');
const { windowCrops, referenceViews } = require('./.build/synthetic/crops.js');

async function main() {
  const [floatManifest, int8Manifest] = process.argv.slice(2);
  const chars = Array.from({ length: 200 }, (_, i) => 80000 + i);
  const styleOf = (s) => 81000 + Math.floor((s - 80000) / 4);
  const crops = await windowCrops({ count: 600, seed: 80000, characters: chars, styleOf, backgroundSeed: 82000, backgrounds: 24 });
  const refs = await referenceViews(chars, styleOf);
  const a = await OnnxEmbedder.create(floatManifest);
  const embed = async (e, imgs) => {
    const out = [];
    for (let i = 0; i < imgs.length; i += 64) out.push(...(await e.embed(imgs.slice(i, i + 64))));
    return out;
  };
  const ca = await embed(a, crops.map((c) => c.image));
  const refsA = await embed(a, refs);
  // A manifest with an 8-bit weights variant is checked twice: the 7-bit file and the 8-bit one.
  const variants = require(path.resolve(int8Manifest)).weights8 ? [7, 8] : [undefined];
  for (const bits of variants) {
    const b = await OnnxEmbedder.create(int8Manifest, bits ? { int8Weights: bits } : {});
    await compare(a, b, ca, refsA, crops, refs, embed);
    await b.dispose();
  }
  await a.dispose();
}

async function compare(a, b, ca, refsA, crops, refs, embed) {
  const cb = await embed(b, crops.map((c) => c.image));
  for (const v of cb) {
    const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
    if (v.length !== 256 || Math.abs(norm - 1) > 1e-4 || !v.every(Number.isFinite)) throw new Error(`int8 vector: ${v.length}-d, norm ${norm}`);
  }
  const d = cosineDrift(ca, cb);
  const withChar = crops.map((c, i) => [c, i]).filter(([c]) => c.character >= 0);
  const nn = neighbourAgreement(
    withChar.map(([, i]) => ca[i]), refsA,
    withChar.map(([, i]) => cb[i]), await embed(b, refs),
    withChar.map(([c]) => c.character),
  );
  const weights = b.manifest.weightBits ? `, ${b.manifest.weightBits}-bit weights (${path.basename(b.manifest.modelPath)})` : '';
  console.log(`check-int8: ${b.modelId}${weights} vs ${a.modelId} (both sha256-checked by OnnxEmbedder): 256-d unit vectors`);
  console.log(`  cosine(fp32, int8) over ${d.count} crops: median ${d.median.toFixed(4)}, p5 ${d.p5.toFixed(4)}, min ${d.min.toFixed(4)}`);
  console.log(`  nearest of 200 references, ${nn.queries} crops with a character: same ${(100 * nn.agreement).toFixed(1)} %; top-1 fp32 ${(100 * nn.top1A).toFixed(1)} %, int8 ${(100 * nn.top1B).toFixed(1)} %; same where fp32 is right ${(100 * nn.agreementWhereARight).toFixed(1)} %`);
  const opt = path.join(__dirname, 'out', 'int8', 'int8.opt.onnx');
  const s = await ort.InferenceSession.create(b.manifest.modelPath, { graphOptimizationLevel: 'all', optimizedModelFilePath: opt, logSeverityLevel: 3 });
  await s.release();
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});

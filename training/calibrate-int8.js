#!/usr/bin/env node
/**
 * Activation ranges for the int8 descriptor: runs CALIB.onnx (quantise.py prepare: the float model
 * with the activations to quantise as extra outputs) with onnxruntime-node over seeded synthetic
 * window crops (src/synthetic/crops.ts; character seeds 60000+, styleSeed 61000+, backgrounds
 * 62000+: disjoint from tests, benchmarks, the background bank, training and the int8 evaluation
 * crops at 80000+), and writes per tensor the [min, max] and the [lo, hi] percentile range.
 *
 *   node training/calibrate-int8.js CALIB.onnx TENSORS.json RANGES.json [crops=400] [percentile=99.99] [method=percentile|minmax]
 *
 * Two passes over the crops: min/max, then a 4096-bin histogram per tensor over that range. The
 * input is fed as the product's embedder feeds it ((pixel - 127.5) / 127.5, NHWC).
 */
const fs = require('fs');
const ort = require('onnxruntime-node');
const { windowCrops } = require('./.build/synthetic/crops.js');

const [calibPath, tensorsPath, rangesPath] = process.argv.slice(2, 5);
const COUNT = Number(process.argv[5] || 400);
const PCT = Number(process.argv[6] || 99.99);
const METHOD = process.argv[7] || 'percentile';
const BATCH = 25;
const BINS = 4096;

/** The calibration crops' spec (also written into RANGES.json). */
const SPEC = { count: COUNT, seed: 60000, characters: 120, firstCharacter: 60000, firstStyle: 61000, familySize: 4, backgroundSeed: 62000, backgrounds: 24 };

function toInput(crops) {
  const data = new Float32Array(crops.length * 128 * 128 * 3);
  crops.forEach((c, n) => {
    const src = c.image.data;
    for (let i = 0, o = n * 128 * 128 * 3; i < 128 * 128 * 3; i++) data[o + i] = (src[i] - 127.5) / 127.5;
  });
  return new ort.Tensor('float32', data, [crops.length, 128, 128, 3]);
}

async function main() {
  if (!calibPath || !tensorsPath || !rangesPath) throw new Error('usage: calibrate-int8.js CALIB.onnx TENSORS.json RANGES.json [crops] [percentile] [method]');
  if (!['percentile', 'minmax'].includes(METHOD)) throw new Error(`method must be percentile or minmax, got ${METHOD}`);
  const { tensors, input: inputTensors = [] } = JSON.parse(fs.readFileSync(tensorsPath, 'utf8'));
  const t0 = Date.now();
  const chars = Array.from({ length: SPEC.characters }, (_, i) => SPEC.firstCharacter + i);
  const crops = await windowCrops({
    count: SPEC.count,
    seed: SPEC.seed,
    characters: chars,
    styleOf: (s) => SPEC.firstStyle + Math.floor((s - SPEC.firstCharacter) / SPEC.familySize),
    backgroundSeed: SPEC.backgroundSeed,
    backgrounds: SPEC.backgrounds,
  });
  console.log(`calibrate: ${crops.length} crops rendered in ${Date.now() - t0} ms`);
  const session = await ort.InferenceSession.create(calibPath, { intraOpNumThreads: 2, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
  const lo = new Map(tensors.map((t) => [t, Infinity]));
  const hi = new Map(tensors.map((t) => [t, -Infinity]));
  const hist = new Map(tensors.map((t) => [t, new Float64Array(BINS)]));
  const forEachBatch = async (fn) => {
    for (let b = 0; b < crops.length; b += BATCH) {
      const res = await session.run({ input: toInput(crops.slice(b, b + BATCH)) }, tensors);
      for (const t of tensors) fn(t, res[t].data);
    }
  };
  await forEachBatch((t, v) => {
    let a = lo.get(t);
    let z = hi.get(t);
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      if (x < a) a = x;
      if (x > z) z = x;
    }
    lo.set(t, a);
    hi.set(t, z);
  });
  await forEachBatch((t, v) => {
    const a = lo.get(t);
    const w = (hi.get(t) - a) / BINS || 1;
    const h = hist.get(t);
    for (let i = 0; i < v.length; i++) h[Math.min(BINS - 1, Math.floor((v[i] - a) / w))]++;
  });
  const minmax = {};
  const percentile = {};
  for (const t of tensors) {
    const a = lo.get(t);
    const z = hi.get(t);
    const h = hist.get(t);
    const w = (z - a) / BINS;
    const total = h.reduce((s, x) => s + x, 0);
    const tail = (total * (100 - PCT)) / 100;
    // Upper bound: the bin edge below which all but `tail` values lie; lower bound likewise from below
    // (only where the tensor goes negative: post-ReLU6 tensors keep 0).
    let acc = 0;
    let k = BINS;
    while (k > 0 && acc + h[k - 1] <= tail) acc += h[--k];
    let pz = a + k * w;
    acc = 0;
    let j = 0;
    while (j < BINS && acc + h[j] <= tail) acc += h[j++];
    let pa = a + j * w;
    if (a >= 0) pa = a;
    pz = Math.min(z, pz);
    pa = Math.max(a, pa);
    minmax[t] = [a, z];
    // The model input's range is what the pixels can reach: clipping it only loses contrast.
    percentile[t] = inputTensors.includes(t) ? [a, z] : [pa, pz];
  }
  const ranges = METHOD === 'minmax' ? minmax : percentile;
  fs.writeFileSync(rangesPath, JSON.stringify({ method: METHOD, percentile: PCT, crops: SPEC, ranges, minmax, percentiles: percentile }, null, 1));
  console.log(`calibrate: ${tensors.length} tensors, method ${METHOD}${METHOD === 'percentile' ? ` ${PCT}` : ''}, ${Date.now() - t0} ms -> ${rangesPath}`);
  for (const t of tensors.slice(0, 3).concat(tensors.slice(-3))) {
    console.log(`  ${t}: min/max [${minmax[t].map((v) => v.toFixed(3)).join(', ')}], p${PCT} [${percentile[t].map((v) => v.toFixed(3)).join(', ')}]`);
  }
  await session.release();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

/**
 * The int8 descriptors (models/kagami-descriptor-v{2,6,8,9,10,11}-int8.*, built by training/quantise.sh):
 * selectable with KAGAMI_MODEL, pinned by their manifest's sha256, derived from the committed float
 * model, and close to it through the product's embedder on window crops they were not calibrated on
 * (the calibration crops use character seeds 60000+, these 80000+). Bounds from training/quantise.sh's
 * check (600 crops, median cosine / 5th percentile / min: v2 0.989 / 0.965 / 0.902, v6 0.985 / 0.939 /
 * 0.849: v6 was trained three times as long and its weights quantise a little less well; v8 0.982 /
 * 0.947 / 0.853; v9 0.984 / 0.953 / 0.823; v10 0.982 / 0.953 / 0.866; v11 0.980 / 0.949 / 0.891), with margin.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { modelFor, modelManifestPath, readEnv } from '../../src/config';
import { cosineDrift, dot, neighbourAgreement } from '../../src/signals/embedding/drift';
import { hasInt8Dot, int8WeightBits, readCpuinfo } from '../../src/signals/embedding/int8-weights';
import { loadManifest } from '../../src/signals/embedding/manifest';
import { OnnxEmbedder } from '../../src/signals/embedding/onnx-embedder';
import { referenceViews, windowCrops } from '../../src/synthetic/crops';

const MODELS = [
  { INT8: 'kagami-descriptor-v2-int8', FP32: 'kagami-descriptor-v2', bounds: { median: 0.98, p5: 0.95, min: 0.9 } },
  { INT8: 'kagami-descriptor-v6-int8', FP32: 'kagami-descriptor-v6', bounds: { median: 0.975, p5: 0.92, min: 0.8 } },
  { INT8: 'kagami-descriptor-v8-int8', FP32: 'kagami-descriptor-v8', bounds: { median: 0.975, p5: 0.92, min: 0.8 } },
  { INT8: 'kagami-descriptor-v9-int8', FP32: 'kagami-descriptor-v9', bounds: { median: 0.975, p5: 0.92, min: 0.8 } },
  { INT8: 'kagami-descriptor-v10-int8', FP32: 'kagami-descriptor-v10', bounds: { median: 0.975, p5: 0.92, min: 0.8 } },
  { INT8: 'kagami-descriptor-v11-int8', FP32: 'kagami-descriptor-v11', bounds: { median: 0.975, p5: 0.92, min: 0.8 } },
];

describe.each(MODELS)('$INT8', ({ INT8, FP32, bounds }) => {
  test('KAGAMI_MODEL selects the int8 manifest; its file matches its sha256 and it names the float model it came from', () => {
    const m = loadManifest(modelManifestPath(modelFor(readEnv({ KAGAMI_MODEL: INT8 }))));
    const f = loadManifest(modelManifestPath(FP32));
    expect(m.id).toBe(INT8);
    expect(createHash('sha256').update(readFileSync(m.modelPath)).digest('hex')).toBe(m.sha256);
    expect(m.quantised).toMatchObject({ from: FP32, fromSha256: f.sha256, scheme: 'qdq-static' });
    expect({ input: m.input, output: m.output, usage: m.usage, calibration: m.calibration }).toEqual({ input: f.input, output: f.output, usage: f.usage, calibration: f.calibration });
  });

  test('int8 embeddings agree with fp32 ones on crops disjoint from calibration', async () => {
    const chars = Array.from({ length: 40 }, (_, i) => 80000 + i);
    const styleOf = (s: number) => 81000 + Math.floor((s - 80000) / 4);
    const crops = await windowCrops({ count: 96, seed: 80001, characters: chars, styleOf, backgroundSeed: 82000, backgrounds: 12 });
    const refs = await referenceViews(chars, styleOf);
    const fp32 = await OnnxEmbedder.create(modelManifestPath(FP32));
    const int8 = await OnnxEmbedder.create(modelManifestPath(INT8));
    try {
      const images = crops.map((c) => c.image);
      const [a, b] = [await fp32.embed(images), await int8.embed(images)];
      for (const v of b) {
        expect(v).toHaveLength(256);
        expect(Math.sqrt(dot(v, v))).toBeCloseTo(1, 4);
      }
      const d = cosineDrift(a, b);
      const withChar = crops.flatMap((c, i) => (c.character >= 0 ? [i] : []));
      const nn = neighbourAgreement(
        withChar.map((i) => a[i]), await fp32.embed(refs),
        withChar.map((i) => b[i]), await int8.embed(refs),
        withChar.map((i) => crops[i].character),
      );
      console.log(`int8 vs fp32 over ${d.count} crops: cosine median ${d.median.toFixed(4)}, p5 ${d.p5.toFixed(4)}, min ${d.min.toFixed(4)}; nearest of ${refs.length} references: same ${(100 * nn.agreement).toFixed(1)} %`);
      // The weights hold 7-bit values (training/quantise.py), so onnxruntime's u8 x s8 kernels compute
      // exactly on CPUs with and without VNNI (8-bit weights drifted to median 0.978 on an AVX2-only
      // CPU, where pairs of products saturate in 16 bits); v10's embedder runs its 8-bit variant
      // instead where the CPU has int8 dot products (below). A broken model would give cosine ~0.
      expect(d.median).toBeGreaterThan(bounds.median);
      expect(d.p5).toBeGreaterThan(bounds.p5);
      expect(d.min).toBeGreaterThan(bounds.min);
      expect(nn.agreement).toBeGreaterThan(0.75);
    } finally {
      await fp32.dispose();
      await int8.dispose();
    }
  }, 120_000);
});

/**
 * The 8-bit weights variant of v10-int8 and v11-int8 (`weights8`, training/quantise.sh): the same
 * model id and activation ranges, full 8-bit weights; the embedder runs it on CPUs with int8 dot
 * products (int8-weights.ts). quantise.sh's check on this machine class (AMD EPYC, AVX512-VNNI),
 * median cosine to fp32 over 600 crops, 8-bit / 7-bit: v10 0.994 / 0.982, v11 0.994 / 0.980.
 */
describe.each(['kagami-descriptor-v10', 'kagami-descriptor-v11'])('%s-int8 with 8-bit weights', (FP32) => {
  const INT8 = `${FP32}-int8`;
  const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

  test('int8Weights picks the 7-bit or the 8-bit files, each pinned by the manifest', () => {
    const m7 = loadManifest(modelManifestPath(INT8), { int8Weights: 7 });
    const m8 = loadManifest(modelManifestPath(INT8), { int8Weights: 8 });
    expect([m7.weightBits, m8.weightBits]).toEqual([7, 8]);
    expect(m8.id).toBe(m7.id);
    expect(m8.modelPath).not.toBe(m7.modelPath);
    expect(m8.densePath).not.toBe(m7.densePath);
    for (const m of [m7, m8]) {
      expect(sha(m.modelPath)).toBe(m.sha256);
      expect(sha(m.densePath!)).toBe(m.dense!.sha256);
    }
    expect(m8.sha256).toBe(m7.weights8!.sha256);
    // Without the option the CPU decides (KAGAMI_INT8_WEIGHTS unset in the tests).
    expect(loadManifest(modelManifestPath(INT8)).weightBits).toBe(int8WeightBits('auto'));
  });

  test('on a CPU with int8 dot products the 8-bit weights are closer to fp32 than the 7-bit ones', async () => {
    if (!hasInt8Dot(process.arch, readCpuinfo())) {
      // Without them (x86-64 before VNNI) 8-bit weights saturate: the CPU must get the 7-bit file.
      expect(int8WeightBits('auto')).toBe(7);
      return;
    }
    expect(int8WeightBits('auto')).toBe(8);
    const chars = Array.from({ length: 40 }, (_, i) => 80000 + i);
    const styleOf = (s: number) => 81000 + Math.floor((s - 80000) / 4);
    const crops = await windowCrops({ count: 96, seed: 80001, characters: chars, styleOf, backgroundSeed: 82000, backgrounds: 12 });
    const images = crops.map((c) => c.image);
    const [fp32, w7, w8] = [
      await OnnxEmbedder.create(modelManifestPath(FP32)),
      await OnnxEmbedder.create(modelManifestPath(INT8), { int8Weights: 7 }),
      await OnnxEmbedder.create(modelManifestPath(INT8), { int8Weights: 8 }),
    ];
    try {
      expect(w8.sha256).not.toBe(w7.sha256);
      const a = await fp32.embed(images);
      const d7 = cosineDrift(a, await w7.embed(images));
      const d8 = cosineDrift(a, await w8.embed(images));
      console.log(`cosine to fp32 over ${d8.count} crops, median / p5: 7-bit ${d7.median.toFixed(4)} / ${d7.p5.toFixed(4)}, 8-bit ${d8.median.toFixed(4)} / ${d8.p5.toFixed(4)}`);
      expect(d8.median).toBeGreaterThan(0.99);
      expect(d8.median).toBeGreaterThan(d7.median);
      expect(d8.p5).toBeGreaterThan(d7.p5);
    } finally {
      await Promise.all([fp32.dispose(), w7.dispose(), w8.dispose()]);
    }
  }, 120_000);
});

/**
 * The background bank of the trained descriptor (src/signals/embedding/background-bank.ts), with
 * the real model: deterministic, cached beside the model and rebuilt when the cache is damaged,
 * and the margin it defines separates "character in the window" from "only scenery in the window"
 * better than the raw cosine does.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { MODELS_DIR } from '../../src/config';
import type { RawImage } from '../../src/media/types';
import { calibrateCosine } from '../../src/matching/fuse';
import { BackgroundBank } from '../../src/signals/embedding/background-bank';
import { OnnxEmbedder } from '../../src/signals/embedding/onnx-embedder';
import { renderBackground, renderCharacter } from '../helpers/synthetic-art';

let embedder: OnnxEmbedder;
let tmp: string;

beforeAll(async () => {
  embedder = await OnnxEmbedder.create(path.join(MODELS_DIR, 'kagami-descriptor-v1.json'));
  tmp = mkdtempSync(path.join(os.tmpdir(), 'kagami-bank-'));
});

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function crop(bg: number, seed?: number, opts: { mirror?: boolean; style?: 'busy' | 'gradient' } = {}): Promise<RawImage> {
  const size = 128;
  const layers = [];
  if (seed !== undefined) {
    let art = sharp(await renderCharacter(seed, 108, { styleSeed: seed }));
    if (opts.mirror) art = art.flop();
    layers.push({ input: await art.png().toBuffer(), gravity: 'centre' });
  }
  const { data } = await sharp(await renderBackground(bg, size, size, { style: opts.style ?? 'busy' }))
    .composite(layers)
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: size, height: size, channels: 3, data };
}

const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + v * b[i], 0);

test('the bank is deterministic, cached beside the model file, and rebuilt from a damaged cache', async () => {
  expect(embedder.calibration?.background).toBeDefined();
  const file = path.join(tmp, 'bank.f32');
  const a = await BackgroundBank.forEmbedder(embedder, file);
  expect(a.dimension).toBe(256);
  expect(a.size).toBeGreaterThan(200);
  expect(statSync(file).size).toBe(a.size * 256 * 4);
  const probe = (await embedder.embed([await crop(61_001, 7301)]))[0];
  const fromCache = await BackgroundBank.forEmbedder(embedder, file);
  expect(fromCache.maxSimilarity(probe)).toBe(a.maxSimilarity(probe));
  // truncated cache: not trusted, rebuilt (to the same vectors: the cache is only a shortcut) and rewritten
  writeFileSync(file, readFileSync(file).subarray(0, 1001));
  const repaired = await BackgroundBank.forEmbedder(embedder, file);
  expect(repaired.size).toBe(a.size);
  expect(repaired.maxSimilarity(probe)).toBeCloseTo(a.maxSimilarity(probe), 5);
  expect(statSync(file).size).toBe(a.size * 256 * 4);
  // the product's embedder finds its own bank (cached next to the model)
  const own = await embedder.backgroundBank!();
  expect(own.maxSimilarity(probe)).toBeCloseTo(a.maxSimilarity(probe), 5);
});

test('bad rows are refused', () => {
  expect(() => BackgroundBank.fromRows(4, new Float32Array(6))).toThrow(/whole number/);
  expect(() => BackgroundBank.fromRows(2, Float32Array.from([1, 0, 0, 0]))).toThrow(/zero or non-finite/);
  expect(() => BackgroundBank.fromRows(2, Float32Array.from([1, 0, NaN, 1]))).toThrow(/zero or non-finite/);
  const bank = BackgroundBank.fromRows(2, Float32Array.from([3, 4, 0, 2]));
  expect(bank.maxSimilarity(Float32Array.from([0, 5]))).toBeCloseTo(1, 6);
  expect(bank.maxSimilarity(Float32Array.from([1, 0]))).toBeCloseTo(0.6, 6);
  expect(() => bank.maxSimilarity(new Float32Array(3))).toThrow(/expected 2/);
  // Its rows, normalised, as copies.
  const rows = bank.vectors();
  expect(rows.map((r) => Array.from(r, (x) => +x.toFixed(6)))).toEqual([[0.6, 0.8], [0, 1]]);
  rows[0][0] = 9;
  expect(bank.maxSimilarity(Float32Array.from([1, 0]))).toBeCloseTo(0.6, 6);
});

test('the margin over the bank ranks scenery-only windows below windows showing the character, and scores them 0', async () => {
  const bank = await embedder.backgroundBank!();
  // Six characters: a reference (on one scene) and two windows of another scene (not in the bank),
  // one showing the character mirrored and one showing only the scene.
  const rows: Array<{ rawPos: number; rawNeg: number; mPos: number; mNeg: number }> = [];
  for (let i = 0; i < 6; i++) {
    const seed = 7310 + i;
    const [ref, pos, neg] = await embedder.embed([
      await crop(61_100 + i, seed, { style: 'gradient' }),
      await crop(61_200 + i, seed, { mirror: true }),
      await crop(61_200 + i),
    ]);
    const refBg = bank.maxSimilarity(ref);
    const margin = (w: Float32Array) => dot(w, ref) - Math.max(bank.maxSimilarity(w), refBg);
    rows.push({ rawPos: dot(pos, ref), rawNeg: dot(neg, ref), mPos: margin(pos), mNeg: margin(neg) });
  }
  console.log(rows.map((r) => `raw ${r.rawPos.toFixed(3)}/${r.rawNeg.toFixed(3)} margin ${r.mPos.toFixed(3)}/${r.mNeg.toFixed(3)}`).join('\n'));
  // Every character window beats its own scenery-only window under the margin …
  for (const r of rows) expect(r.mPos).toBeGreaterThan(r.mNeg);
  // … and with the model's calibration, scenery-only windows score 0 while every character window
  // scores clearly above it.
  const { floor, ceil } = embedder.calibration!.background!;
  const score = (m: number) => calibrateCosine(m, floor, ceil);
  expect(Math.max(...rows.map((r) => score(r.mNeg)))).toBe(0);
  expect(Math.min(...rows.map((r) => score(r.mPos)))).toBeGreaterThan(0.3);
}, 60_000);

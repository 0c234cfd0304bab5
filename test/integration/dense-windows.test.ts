/**
 * The default descriptor's dense form (manifest `dense`, training/dense.py): one pass of the network
 * over a scaled frame gives the vectors of all its windows of one size. Real model, real synthetic
 * scenes: a window's dense vector is its crop's vector with the window's surroundings in view, so it
 * equals the crop's where there are none, and finds the same character where one stands in a scene.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEFAULT_MODEL, modelManifestPath } from '../../src/config';
import type { RawImage } from '../../src/media/types';
import { cropWindows, slidingWindows } from '../../src/scan/windows';
import { dot } from '../../src/signals/embedding/drift';
import { loadManifest, parseManifest } from '../../src/signals/embedding/manifest';
import { OnnxEmbedder } from '../../src/signals/embedding/onnx-embedder';
import { composite, decodeToRaw, renderBackground, renderCharacter } from '../../src/synthetic/art';
import { referenceViews } from '../../src/synthetic/crops';

let e: OnnxEmbedder;
beforeAll(async () => {
  e = await OnnxEmbedder.create(modelManifestPath(DEFAULT_MODEL));
});
afterAll(async () => {
  await e?.dispose();
});

const nearest = (v: Float32Array, refs: Float32Array[]) => refs.reduce((best, r, i) => (dot(v, r) > dot(v, refs[best]) ? i : best), 0);

test('the default model has a dense form, pinned by its manifest and derived from the same model', () => {
  const m = loadManifest(modelManifestPath(DEFAULT_MODEL));
  expect(m.dense).toMatchObject({ stride: 16, recipe: expect.stringContaining('training/dense.py') });
  expect(createHash('sha256').update(readFileSync(m.densePath!)).digest('hex')).toBe(m.dense!.sha256);
  expect(e.embedRegions).toBeDefined();
});

test('a window that is the whole frame gets the crop\'s own vector; regions come back in order, whatever their sizes', async () => {
  const bg = (await decodeToRaw(await renderBackground(11, 256, 256, { style: 'busy', shapes: 40 }), 3)) as RawImage;
  const [whole] = await e.embed([cropWindows(bg, [{ x: 0, y: 0, size: 256 }], 128, 128)[0]]);
  const small = (await decodeToRaw(await renderBackground(12, 128, 128, { style: 'busy', shapes: 20 }), 3)) as RawImage;
  const [own] = await e.embed([small]);
  const [d] = await e.embedRegions!(small, [{ x: 0, y: 0, size: 128 }]);
  expect(dot(d, own)).toBeGreaterThan(0.999);
  // The 256 px frame is scaled to 128 by sharp, the crop by box filter + bilinear: close, not equal.
  const regions = [{ x: 0, y: 0, size: 256 }, { x: 64, y: 64, size: 128 }, { x: 0, y: 128, size: 128 }];
  const together = await e.embedRegions!(bg, regions);
  expect(dot(together[0], whole)).toBeGreaterThan(0.97);
  for (let i = 0; i < regions.length; i++) {
    const [alone] = await e.embedRegions!(bg, [regions[i]]);
    expect(dot(together[i], alone)).toBeGreaterThan(0.9999);
  }
  expect(dot(together[1], together[2])).toBeLessThan(0.99);
}, 60_000);

test('in a busy scene, the window around a character finds it among 12 references, as its crop does', async () => {
  const seeds = Array.from({ length: 12 }, (_, i) => 700 + i);
  const refs = await e.embed(await referenceViews(seeds));
  const W = 960;
  const H = 540;
  const background = await renderBackground(31, W, H, { style: 'busy', shapes: 90 });
  const windows = slidingWindows(W, H, [0.35]);
  let dense = 0;
  let crops = 0;
  const agree: number[] = [];
  for (let i = 0; i < seeds.length; i++) {
    // A character of ~30 % of the frame height, centred in one of the 0.35 windows.
    const win = windows[(i * 7 + 3) % windows.length];
    const art = await renderCharacter(seeds[i], 160);
    const scene = await composite(background, [{ image: art, cx: win.x + win.size / 2, cy: win.y + win.size / 2 }]);
    const [d] = await e.embedRegions!(scene.raw, [win]);
    const [c] = await e.embed(cropWindows(scene.raw, [win], 128, 128));
    if (nearest(d, refs) === i) dense++;
    if (nearest(c, refs) === i) crops++;
    agree.push(dot(d, c));
  }
  agree.sort((a, b) => a - b);
  console.log(`dense vs crop windows: right character ${dense} / ${crops} of ${seeds.length}; cosine min ${agree[0].toFixed(3)}, median ${agree[6].toFixed(3)}`);
  expect(crops).toBeGreaterThanOrEqual(10);
  expect(dense).toBeGreaterThanOrEqual(crops - 1);
  expect(agree[6]).toBeGreaterThan(0.8);
}, 120_000);

test('a dense form is refused when its file differs from the manifest, and is only for crop models', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'kagami-dense-'));
  try {
    const m = JSON.parse(readFileSync(modelManifestPath(DEFAULT_MODEL), 'utf8'));
    writeFileSync(path.join(dir, `${m.id}.json`), JSON.stringify(m));
    // Both weights variants (7-bit and, where the manifest has one, 8-bit) check their own dense form.
    const variants: Array<{ bits: 7 | 8; file: string; dense: string }> = [{ bits: 7, file: m.file, dense: m.dense.file }];
    if (m.weights8) variants.push({ bits: 8, file: m.weights8.file, dense: m.weights8.dense.file });
    for (const v of variants) {
      copyFileSync(path.join(path.dirname(modelManifestPath(DEFAULT_MODEL)), v.file), path.join(dir, v.file));
      writeFileSync(path.join(dir, v.dense), 'not the dense model');
      await expect(OnnxEmbedder.create(path.join(dir, `${m.id}.json`), { int8Weights: v.bits })).rejects.toMatchObject({
        code: 'model_checksum',
        message: expect.stringContaining(v.dense),
      });
    }
    expect(variants.length).toBe(2);
    expect(() => parseManifest({ ...m, usage: 'frame' }, path.join(dir, 'x.json'))).toThrow(/dense: a dense form is for committed crop models/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * A crop model's reference is embedded at several sizes (REFERENCE_VIEW_SCALES: the whole picture
 * fitted into the input, then at 70 % and 50 % of it), each flattened onto several canvas colours
 * (REFERENCE_VIEW_BACKGROUNDS: grey first), and indexed by the
 * re-normalised mean of those views: one vector of the model's dimension, as before. A library
 * registered before the views is brought up to date by re-embedding it with its own model, which a
 * running scanner picks up at its next refresh. Real descriptor model, SQLite library on disk.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_MODEL, modelManifestPath } from '../../src/config';
import { addReferences, meanOfViews, openLibrary, reembedLibrary, REFERENCE_VIEW_BACKGROUNDS, REFERENCE_VIEW_SCALES, type Library } from '../../src/library/library';
import { decodeReference, resizeCentred, resizeRaw } from '../../src/media/image';
import { ReferenceSet } from '../../src/scan/reference-set';
import { dot } from '../../src/signals/embedding/drift';
import { OnnxEmbedder } from '../../src/signals/embedding/onnx-embedder';
import { renderCharacter } from '../../src/synthetic/art';

let dir: string;
let lib: Library;
let embedder: OnnxEmbedder;
const art: Buffer[] = [];

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-views-'));
  lib = await openLibrary(dir, { create: true });
  embedder = await OnnxEmbedder.create(modelManifestPath(DEFAULT_MODEL));
  for (const seed of [31, 32]) art.push(await renderCharacter(seed, 300, { styleSeed: 7 }));
  for (const [i, png] of art.entries()) await addReferences(lib, embedder, { id: `hero-${i}`, name: `Hero ${i}`, owner: 'studio' }, [{ name: `hero-${i}.png`, bytes: png }]);
}, 120_000);

afterAll(async () => {
  await embedder?.dispose();
  await lib?.store.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('resizeCentred: scale 1 is a contain fit; smaller scales put the picture in the middle of a grey canvas', async () => {
  const { image } = await decodeReference('hero-0.png', art[0]);
  expect(await resizeCentred(image, 128, 128, 1)).toEqual(await resizeRaw(image, 128, 128, 'contain'));
  const half = await resizeCentred(image, 128, 128, 0.5);
  expect([half.width, half.height, half.channels]).toEqual([128, 128, 3]);
  // The outer quarter on every side is grey 128; the middle is not all grey.
  const px = (x: number, y: number) => Array.from(half.data.subarray((y * 128 + x) * 3, (y * 128 + x) * 3 + 3));
  for (const [x, y] of [[0, 0], [127, 0], [0, 127], [127, 127], [20, 64], [64, 20], [107, 64], [64, 107]]) expect(px(x, y)).toEqual([128, 128, 128]);
  let other = 0;
  for (let y = 40; y < 88; y++) for (let x = 40; x < 88; x++) if (px(x, y).some((v) => v !== 128)) other++;
  expect(other).toBeGreaterThan(48 * 48 * 0.3);
});

test('each reference is stored as the unit mean of its views, closest to each view and unlike the other character', async () => {
  expect(REFERENCE_VIEW_SCALES).toEqual([1, 0.7, 0.5]);
  expect(REFERENCE_VIEW_BACKGROUNDS[0]).toEqual({ r: 128, g: 128, b: 128 });
  const { features } = await lib.store.loadFeatures();
  const sorted = [...features].sort((a, b) => a.characterId.localeCompare(b.characterId));
  expect(sorted.map((f) => f.embedding.length)).toEqual([embedder.dimension, embedder.dimension]);
  for (const [i, f] of sorted.entries()) {
    const { image } = await decodeReference(`hero-${i}.png`, art[i]);
    const views = await embedder.embed(
      await Promise.all(REFERENCE_VIEW_BACKGROUNDS.flatMap((bg) => REFERENCE_VIEW_SCALES.map((s) => resizeCentred(image, 128, 128, s, bg)))),
    );
    expect(views).toHaveLength(REFERENCE_VIEW_BACKGROUNDS.length * REFERENCE_VIEW_SCALES.length);
    const mean = meanOfViews(views);
    expect(dot(f.embedding, mean)).toBeGreaterThan(0.9999);
    expect(Math.sqrt(dot(f.embedding, f.embedding))).toBeCloseTo(1, 4);
    // The grey views alone are not the stored vector: the other canvases count.
    expect(dot(f.embedding, meanOfViews(views.slice(0, REFERENCE_VIEW_SCALES.length)))).toBeLessThan(0.9999);
    // The smaller views really differ from the whole picture, and the mean lies between them.
    expect(dot(views[0], views[2])).toBeLessThan(0.99);
    for (const v of views) expect(dot(f.embedding, v)).toBeGreaterThan(dot(views[0], views[2]));
  }
  expect(dot(sorted[0].embedding, sorted[1].embedding)).toBeLessThan(0.95);
});

test('meanOfViews leaves a single vector as it is and normalises a sum', () => {
  const a = Float32Array.from([1, 0]);
  expect(meanOfViews([a])).toBe(a);
  const m = meanOfViews([Float32Array.from([1, 0]), Float32Array.from([0, 1])]);
  expect(Array.from(m).map((v) => +v.toFixed(6))).toEqual([0.707107, 0.707107]);
});

test('re-embedding with the library\'s own model replaces one-view vectors, and a loaded ReferenceSet takes them at its next refresh', async () => {
  // A library registered before the views: each reference indexed by its whole picture only.
  const model = { modelId: embedder.modelId, dimension: embedder.dimension };
  const ids = (await lib.store.loadFeatures()).features.map((f) => f.referenceId);
  const refs = await Promise.all(ids.map((id) => lib.store.getReference(id)));
  const single = await Promise.all(
    refs.map(async (r) => {
      const { image } = await decodeReference(r!.fileName, await lib.blobs.get(r!.sha256));
      return { referenceId: r!.id, embedding: (await embedder.embed([await resizeCentred(image, 128, 128, 1)]))[0] };
    }),
  );
  await lib.store.replaceModel(model, single);
  const set = await ReferenceSet.load(lib.store, embedder);
  const nearest = () => single.map((s) => set.vectors.search([s.embedding], 1)[0][0]);
  expect(nearest().map((h) => [h.id, +h.similarity.toFixed(4)])).toEqual(single.map((s) => [s.referenceId, 1]));

  expect(await reembedLibrary(lib, embedder)).toEqual({ from: model.modelId, to: model.modelId, references: 2 });
  const stored = new Map((await lib.store.loadFeatures()).features.map((f) => [f.referenceId, f.embedding]));
  for (const s of single) expect(dot(stored.get(s.referenceId)!, s.embedding)).toBeLessThan(0.999);
  // Before its refresh the set still holds the one-view vectors; after it, the stored means.
  expect(nearest().every((h) => h.similarity > 0.9999)).toBe(true);
  expect(await set.refresh()).toBe(2);
  for (const s of single) {
    const [hit] = set.vectors.search([stored.get(s.referenceId)!], 1)[0];
    expect(hit.id).toBe(s.referenceId);
    expect(hit.similarity).toBeGreaterThan(0.9999);
  }
  expect(nearest().every((h) => h.similarity < 0.999)).toBe(true);
  expect(set.vectors.size).toBe(2);
});

/**
 * Likeness alone reaching review (manifest `calibration.review`), end to end: the real default
 * descriptor, a real ffmpeg clip in which a registered character appears redrawn (thicker outline,
 * nothing its keypoints verify), the scanner's own aggregation. The committed review point keeps
 * this resemblance (cosine ~0.76) below review; the same model with a lower review point in its
 * manifest flags it, as `likeness`, never as a match, and says why.
 */
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_MODEL, modelManifestPath } from '../../src/config';
import type { Library } from '../../src/library/library';
import { ReferenceSet } from '../../src/scan/reference-set';
import { DEFAULT_SCAN_OPTIONS, Scanner, type ScanReport } from '../../src/scan/scanner';
import { loadManifest } from '../../src/signals/embedding/manifest';
import { OnnxEmbedder } from '../../src/signals/embedding/onnx-embedder';
import { redrawnScene, REDRAWN_SHOWN } from '../helpers/redrawn-scene';

let dir: string;
let lib: Library;
let clip: string;
const embedders: OnnxEmbedder[] = [];

/** The default model with its manifest's review point moved (a copy of the manifest beside links to the committed model files). */
async function withReviewPoint(review: number): Promise<OnnxEmbedder> {
  const manifestPath = modelManifestPath(DEFAULT_MODEL);
  const m = JSON.parse(readFileSync(manifestPath, 'utf8'));
  const at = mkdtempSync(path.join(dir, 'model-'));
  for (const f of [m.file, m.dense?.file, m.weights8?.file, m.weights8?.dense?.file].filter(Boolean)) symlinkSync(path.join(path.dirname(manifestPath), f), path.join(at, f));
  const copy = path.join(at, `${m.id}.json`);
  writeFileSync(copy, JSON.stringify({ ...m, calibration: { ...m.calibration, review } }));
  const e = await OnnxEmbedder.create(copy);
  embedders.push(e);
  return e;
}

async function scan(embedder: OnnxEmbedder): Promise<ScanReport> {
  const scanner = new Scanner(embedder, await ReferenceSet.load(lib.store, embedder), DEFAULT_SCAN_OPTIONS);
  try {
    return await scanner.scan({ file: clip, minScore: 0, top: 10 });
  } finally {
    await scanner.dispose();
  }
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-likeness-review-'));
  const registrar = await OnnxEmbedder.create(modelManifestPath(DEFAULT_MODEL));
  embedders.push(registrar);
  ({ lib, clip } = await redrawnScene(dir, registrar));
}, 180_000);

afterAll(async () => {
  for (const e of embedders) await e.dispose();
  await lib?.store.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the default descriptor names a review point; this redrawing stays below it and is listed clear, first among the characters', async () => {
  expect(loadManifest(modelManifestPath(DEFAULT_MODEL)).calibration?.review).toBeDefined();
  const rep = await scan(embedders[0]);
  expect(rep.verdict).toBe('clear');
  const [top] = rep.matches;
  expect(top).toMatchObject({ characterId: REDRAWN_SHOWN, verdict: 'clear', kind: 'likeness' });
  expect(top.score).toBeGreaterThan(0);
  expect(top.score).toBeLessThan(DEFAULT_SCAN_OPTIONS.aggregate.thresholds.review);
}, 120_000);

test('with a review point below its resemblance, the same model flags it for review by likeness, in the right interval, never as a match', async () => {
  const rep = await scan(await withReviewPoint(0.6));
  expect(rep.verdict).toBe('review');
  const [top] = rep.matches;
  expect(top).toMatchObject({ characterId: REDRAWN_SHOWN, verdict: 'review', kind: 'likeness' });
  expect(top.score).toBeGreaterThanOrEqual(DEFAULT_SCAN_OPTIONS.aggregate.thresholds.review);
  expect(top.score).toBeLessThan(DEFAULT_SCAN_OPTIONS.aggregate.thresholds.match);
  expect(top.reason).toMatch(/^review: .*appearance similarity only/);
  expect(top.evidence.box).toBeDefined();
  expect(top.evidence.timeSec).toBeGreaterThanOrEqual(1);
  expect(top.evidence.timeSec).toBeLessThanOrEqual(4);
  for (const s of top.segments) {
    expect(s.endSec).toBeGreaterThan(0.5);
    expect(s.startSec).toBeLessThan(4.5);
  }
  // The characters not shown resemble the redrawing less: none of them is flagged.
  expect(rep.matches.filter((m) => m.verdict !== 'clear').map((m) => m.characterId)).toEqual([REDRAWN_SHOWN]);
}, 120_000);

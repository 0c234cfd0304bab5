/**
 * The default descriptor's objectness probe (manifest `objectness`, training/objectness.js), end to
 * end with the real model: on a composite frame it tells the windows that hold a character from
 * those that show only scenery, and in a scan of a real ffmpeg clip the windows it reads as scenery
 * give no likeness evidence while the character's own windows still find it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_MODEL, modelManifestPath } from '../../src/config';
import type { Library } from '../../src/library/library';
import { ReferenceSet } from '../../src/scan/reference-set';
import { DEFAULT_SCAN_OPTIONS, newScanStages, Scanner, type ScanOptions } from '../../src/scan/scanner';
import { slidingWindows } from '../../src/scan/windows';
import { objectnessOf } from '../../src/signals/embedding/objectness';
import { OnnxEmbedder } from '../../src/signals/embedding/onnx-embedder';
import { composite, intersectionArea, renderBackground, renderCharacter } from '../../src/synthetic/art';
import { redrawnScene, REDRAWN_SHOWN } from '../helpers/redrawn-scene';

let dir: string;
let lib: Library;
let clip: string;
let embedder: OnnxEmbedder;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-objectness-'));
  embedder = await OnnxEmbedder.create(modelManifestPath(DEFAULT_MODEL));
  ({ lib, clip } = await redrawnScene(dir, embedder));
}, 180_000);

afterAll(async () => {
  await embedder?.dispose();
  await lib?.store.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('on a composite frame, the windows around the character score above the floor and most scenery windows below it', async () => {
  const probe = embedder.objectness!;
  expect(probe).toBeDefined();
  const { raw, boxes } = await composite(await renderBackground(4242, 960, 540), [{ image: await renderCharacter(4243, 300, { styleSeed: 9 }), cx: 600, cy: 280, scale: 0.9 }]);
  const box = boxes[0]!;
  const windows = slidingWindows(960, 540, DEFAULT_SCAN_OPTIONS.windows.map((w) => w.size));
  const vectors = await embedder.embedRegions!(raw, windows);
  const scored = windows.map((w, i) => ({ w, p: objectnessOf(probe, vectors[i]), overlap: intersectionArea({ x: w.x, y: w.y, width: w.size, height: w.size }, box) }));
  const holding = scored.filter((s) => s.overlap >= 0.6 * box.width * box.height && Math.max(box.width, box.height) >= 0.4 * s.w.size);
  const scenery = scored.filter((s) => s.overlap === 0);
  expect(holding.length).toBeGreaterThan(0);
  expect(scenery.length).toBeGreaterThan(50);
  expect(Math.max(...holding.map((s) => s.p))).toBeGreaterThanOrEqual(probe.floor);
  expect(scenery.filter((s) => s.p < probe.floor).length / scenery.length).toBeGreaterThan(0.5);
}, 60_000);

async function scan(opts: Partial<ScanOptions>) {
  const scanner = new Scanner(embedder, await ReferenceSet.load(lib.store, embedder), { ...DEFAULT_SCAN_OPTIONS, ...opts });
  const stages = newScanStages();
  try {
    return { report: await scanner.scan({ file: clip, minScore: 0, top: 10, stages }), stages };
  } finally {
    await scanner.dispose();
  }
}

test('a scan searches only the windows the probe keeps, and still finds the redrawn character by likeness in its interval', async () => {
  const { report, stages } = await scan({});
  expect(stages.windows).toBeGreaterThan(0);
  expect(stages.sceneryWindows / stages.windows).toBeGreaterThan(0.3);
  const [top] = report.matches;
  expect(top).toMatchObject({ characterId: REDRAWN_SHOWN, kind: 'likeness' });
  expect(top.score).toBeGreaterThan(0);
  expect(top.evidence.timeSec).toBeGreaterThanOrEqual(1);
  expect(top.evidence.timeSec).toBeLessThanOrEqual(4);
}, 120_000);

test('the floor decides: at 0 every window is searched, at 1 none is and the likeness tier finds nothing', async () => {
  const all = await scan({ objectnessFloor: 0 });
  expect(all.stages.sceneryWindows).toBe(0);
  expect(all.report.matches[0]).toMatchObject({ characterId: REDRAWN_SHOWN, kind: 'likeness' });
  const none = await scan({ objectnessFloor: 1 });
  expect(none.stages.sceneryWindows).toBe(none.stages.windows);
  expect(none.report.matches.filter((m) => m.score > 0)).toEqual([]);
}, 180_000);

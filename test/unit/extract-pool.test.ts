/**
 * Frame keypoints in worker threads (ExtractPool): the same KeypointSets as in-thread, the same
 * scan report with 1 and 2 keypoint threads (real ffmpeg clip, real model, real library), and a
 * failing frame or a dying worker rejects instead of hanging; a scan's raw observations re-aggregate
 * to its report.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { modelManifestPath } from '../../src/config';
import { addReferences, openLibrary } from '../../src/library/library';
import { aggregateClip } from '../../src/matching/aggregate';
import type { RawImage } from '../../src/media/types';
import { ReferenceSet } from '../../src/scan/reference-set';
import { DEFAULT_SCAN_OPTIONS, newScanStages, Scanner, type ScanRequest } from '../../src/scan/scanner';
import { OnnxEmbedder } from '../../src/signals/embedding/onnx-embedder';
import { extractFrameFeatures, frameLuma, type KeypointSet } from '../../src/signals/keypoints';
import { ExtractPool } from '../../src/signals/keypoints/extract-pool';
import { renderBackground, renderCharacter } from '../helpers/synthetic-art';
import { makeClip } from '../helpers/synthetic-video';

async function frame(seed: number, w: number, h: number): Promise<RawImage> {
  const { data } = await sharp(await renderBackground(seed, w, h))
    .composite([{ input: await renderCharacter(seed, Math.round(h * 0.6), { styleSeed: 3 }), left: Math.round(w * 0.3), top: Math.round(h * 0.2) }])
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: w, height: h, channels: 3, data: new Uint8Array(data) };
}

const bytes = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

function expectSameSet(a: KeypointSet, b: KeypointSet): void {
  expect([b.width, b.height, b.count]).toEqual([a.width, a.height, a.count]);
  expect(bytes(b.xy).equals(bytes(a.xy))).toBe(true);
  expect(bytes(b.size).equals(bytes(a.size))).toBe(true);
  expect(bytes(b.angle).equals(bytes(a.angle))).toBe(true);
  expect(bytes(b.descriptors).equals(bytes(a.descriptors))).toBe(true);
  expect(b.gray && [b.gray.width, b.gray.height]).toEqual([a.gray!.width, a.gray!.height]);
  expect(bytes(b.gray!.data).equals(bytes(a.gray!.data))).toBe(true);
}

describe('ExtractPool', () => {
  const pool = new ExtractPool(2);
  afterAll(() => pool.close());

  test('gives the in-thread KeypointSets, frame for frame, several frames at once', async () => {
    const frames = await Promise.all([frame(1, 960, 540), frame(2, 960, 540), frame(3, 640, 360), frame(4, 960, 540)]);
    for (const maxKeypoints of [4000, 500]) {
      const pooled = await Promise.all(frames.map((f) => pool.extract(f, { maxKeypoints })));
      for (let i = 0; i < frames.length; i++) {
        const own = await extractFrameFeatures(frames[i], { maxKeypoints });
        expect(own.count).toBeGreaterThan(100);
        expectSameSet(own, pooled[i]);
        expect(pooled[i].workerMs).toBeGreaterThan(0);
      }
    }
  });

  test('warmUp starts every worker and gives the frame\'s in-thread KeypointSet', async () => {
    const fresh = new ExtractPool(2);
    try {
      expect(fresh.started).toBe(0);
      const f = await frame(7, 320, 240);
      const own = await extractFrameFeatures(f);
      expect(own.count).toBeGreaterThan(50);
      expectSameSet(own, await fresh.warmUp(frameLuma(f)));
      expect(fresh.started).toBe(2);
    } finally {
      await fresh.close();
    }
  });

  test('a bad frame rejects with the reason, and the pool goes on', async () => {
    await expect(pool.extractGray({ width: 100, height: 100, data: new Uint8Array(10) })).rejects.toThrow(/keypoint worker: keypoints: gray image of 100x100 needs 10000 bytes, got 10/);
    await expect(pool.extract({ width: 10, height: 10, channels: 3, data: new Uint8Array(5) })).rejects.toThrow(/image data too short/);
    const f = await frame(5, 320, 240);
    expectSameSet(await extractFrameFeatures(f), await pool.extract(f));
  });

  test('a worker that dies rejects its frame (no hang), and a closed pool rejects', async () => {
    // A heap far too small for opencv-js: the worker dies of it while loading.
    const tiny = new ExtractPool(1, { resourceLimits: { maxOldGenerationSizeMb: 2, maxYoungGenerationSizeMb: 1 } });
    try {
      await expect(tiny.extract(await frame(6, 320, 240))).rejects.toThrow(/keypoint worker died/);
    } finally {
      await tiny.close();
    }
    await expect(tiny.extract(await frame(6, 320, 240))).rejects.toThrow(/closed/);
  });
});

describe('Scanner with keypoint threads', () => {
  let dir: string;
  let embedder: OnnxEmbedder;
  let refs: ReferenceSet;
  let clip: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-pool-'));
    embedder = await OnnxEmbedder.create(modelManifestPath('kagami-descriptor-v1'));
    const lib = await openLibrary(path.join(dir, 'lib'), { create: true });
    try {
      for (const seed of [21, 22, 23]) {
        await addReferences(lib, embedder, { id: `c${seed}`, name: `C${seed}`, owner: 'Test' }, [{ name: `c${seed}.png`, bytes: await renderCharacter(seed, 400, { styleSeed: 2 }) }]);
      }
      refs = await ReferenceSet.load(lib.store, embedder);
    } finally {
      await lib.store.close();
    }
    clip = path.join(dir, 'clip.mp4');
    await makeClip({
      out: clip,
      width: 960,
      height: 540,
      durationSec: 6,
      background: await renderBackground(9, 1360, 540),
      appearances: [
        { png: await renderCharacter(21, 400, { styleSeed: 2 }), startSec: 0.5, endSec: 4, heightFrac: 0.55, x: 0.15, y: 0.2, drift: 30 },
        { png: await renderCharacter(22, 400, { styleSeed: 2 }), startSec: 2.5, endSec: 5.5, heightFrac: 0.45, x: 0.55, y: 0.3, mirror: true },
      ],
    });
  });

  afterAll(async () => {
    await embedder?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  test('KAGAMI_SCAN_THREADS=1 and =2 give the same report', async () => {
    const one = new Scanner(embedder, refs, { ...DEFAULT_SCAN_OPTIONS, scanThreads: 1 });
    const two = new Scanner(embedder, refs, { ...DEFAULT_SCAN_OPTIONS, scanThreads: 2 });
    try {
      const stages = newScanStages();
      const a = await one.scan({ file: clip, minScore: 0, top: 10 });
      const b = await two.scan({ file: clip, minScore: 0, top: 10, stages });
      expect(a.framesSampled).toBeGreaterThan(8);
      expect(a.matches.find((m) => m.characterId === 'c21')?.verdict).not.toBe('clear');
      expect({ ...b, elapsedSec: 0 }).toEqual({ ...a, elapsedSec: 0 });
      expect(stages.orbWorkers).toBeGreaterThan(0);
      expect(stages.total).toBeGreaterThan(0);
    } finally {
      await one.dispose();
      await two.dispose();
    }
  });

  test('a warmed-up scanner gives the report of a cold one', async () => {
    const cold = new Scanner(embedder, refs, { ...DEFAULT_SCAN_OPTIONS, scanThreads: 2 });
    const warm = new Scanner(embedder, refs, { ...DEFAULT_SCAN_OPTIONS, scanThreads: 2 });
    try {
      const a = await cold.scan({ file: clip, minScore: 0, top: 10 });
      await warm.warmUp();
      const b = await warm.scan({ file: clip, minScore: 0, top: 10 });
      expect(a.matches.length).toBeGreaterThan(0);
      expect({ ...b, elapsedSec: 0 }).toEqual({ ...a, elapsedSec: 0 });
    } finally {
      await cold.dispose();
      await warm.dispose();
    }
  });

  test('the observations a scan hands to onObservations aggregate to its report (what the bench re-scorer relies on)', async () => {
    const scanner = new Scanner(embedder, refs, DEFAULT_SCAN_OPTIONS);
    try {
      let seen: Parameters<NonNullable<ScanRequest['onObservations']>>[0] | undefined;
      const report = await scanner.scan({ file: clip, minScore: 0, top: 1000, onObservations: (r) => (seen = r) });
      expect(seen?.frameTimes).toHaveLength(report.framesSampled);
      const again = aggregateClip(refs.characters.keys(), seen!.observations, seen!.frameTimes, seen!.durationSec, DEFAULT_SCAN_OPTIONS.aggregate);
      expect(report.matches.length).toBeGreaterThan(0);
      for (const m of report.matches) expect(again.find((c) => c.characterId === m.characterId)?.score).toBeCloseTo(m.score, 4);
    } finally {
      await scanner.dispose();
    }
  });

  test('keypointFrameStep 2: the odd frames, and the even ones next to a verified hit (or only at a copy\'s edges), each with the keypoints a scan of every frame finds there', async () => {
    type Seen = Parameters<NonNullable<ScanRequest['onObservations']>>[0];
    const run = async (file: string, keypointFrameStep: 1 | 2, keypointBetween: 'hits' | 'edges' = 'hits') => {
      const scanner = new Scanner(embedder, refs, { ...DEFAULT_SCAN_OPTIONS, scanThreads: 2, keypointFrameStep, keypointBetween });
      try {
        let seen: Seen | undefined;
        const stages = newScanStages();
        const report = await scanner.scan({ file, minScore: 0, top: 10, stages, onObservations: (r) => (seen = r) });
        // frame index -> character -> its keypoint observation there
        const kp = new Map<number, Map<string, unknown>>();
        for (const [cid, list] of seen!.observations) {
          for (const o of list) if (o.keypoints) kp.set(o.frameIndex, (kp.get(o.frameIndex) ?? new Map()).set(cid, o.keypoints));
        }
        const hits = [...seen!.observations.values()].flat().filter((o) => o.keypoints && o.keypoints.verified !== false);
        const verified = new Set(hits.map((o) => o.frameIndex));
        // frame index -> the characters verified there
        const who = new Map<number, string>();
        for (const o of hits.sort((a, b) => a.characterId.localeCompare(b.characterId))) who.set(o.frameIndex, `${who.get(o.frameIndex) ?? ''}${o.characterId};`);
        return { report, stages, kp, verified, who };
      } finally {
        await scanner.dispose();
      }
    };
    const every = await run(clip, 1);
    const half = await run(clip, 2);
    const frames = every.report.framesSampled;
    expect(every.stages.orbFrames).toBe(frames);
    expect(every.verified.size).toBeGreaterThan(2);
    /** Checks that `r` looked at exactly the frames `looked` names, with every frame's keypoints there, and the same verdicts; the even frames it looked at. */
    const expectLookedAt = (r: Awaited<ReturnType<typeof run>>, looked: (i: number) => boolean): number => {
      let even = 0;
      for (let i = 0; i < frames; i++) {
        if (!looked(i)) {
          expect(r.kp.has(i)).toBe(false);
          continue;
        }
        if (i % 2 === 0) even++;
        expect(r.kp.get(i)).toEqual(every.kp.get(i));
      }
      expect(r.stages.orbFrames).toBe(Array.from({ length: frames }, (_, i) => i).filter(looked).length);
      for (const id of ['c21', 'c22']) expect(r.report.matches.find((m) => m.characterId === id)?.verdict).toBe(every.report.matches.find((m) => m.characterId === id)?.verdict);
      return even;
    };
    const evenLooked = expectLookedAt(half, (i) => i % 2 === 1 || half.verified.has(i - 1) || half.verified.has(i + 1));
    expect(evenLooked).toBeGreaterThan(0);

    // keypointBetween 'edges': an even frame only where its neighbours verified different characters
    // (a neighbour past the clip's end: next to a hit, as 'hits').
    const edges = await run(clip, 2, 'edges');
    const evenEdges = expectLookedAt(
      edges,
      (i) => i % 2 === 1 || (i + 1 < frames ? (edges.who.get(i - 1) ?? '') !== (edges.who.get(i + 1) ?? '') : edges.verified.has(i - 1)),
    );
    expect(evenEdges).toBeGreaterThan(0);
    expect(evenEdges).toBeLessThan(evenLooked);

    // A clip that copies nothing registered: the keypoint tier on the odd frames only.
    const plain = path.join(dir, 'plain.mp4');
    await makeClip({
      out: plain,
      width: 960,
      height: 540,
      durationSec: 4,
      background: await renderBackground(11, 1360, 540),
      appearances: [{ png: await renderCharacter(31, 400, { styleSeed: 5 }), startSec: 0.5, endSec: 3.5, heightFrac: 0.5, x: 0.3, y: 0.2 }],
    });
    const quiet = await run(plain, 2);
    expect(quiet.verified.size).toBe(0);
    expect(quiet.stages.orbFrames).toBe(Math.floor(quiet.report.framesSampled / 2));
  });

  test('a dying keypoint worker fails the scan with a clear error', async () => {
    const pool = new ExtractPool(1, { resourceLimits: { maxOldGenerationSizeMb: 2, maxYoungGenerationSizeMb: 1 } });
    const scanner = new Scanner(embedder, refs, { ...DEFAULT_SCAN_OPTIONS, scanThreads: 2 }, undefined, pool);
    try {
      await expect(scanner.scan({ file: clip, minScore: 0, top: 10 })).rejects.toThrow(/keypoint worker died/);
    } finally {
      await scanner.dispose();
    }
  });
});

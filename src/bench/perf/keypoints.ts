/**
 * Keypoint matching for the verification tier: KeypointIndex's brute-force matching vs its
 * hashed matcher (DescriptorIndex, used from 50k reference descriptors on), on real ORB descriptors.
 *
 * Library: N synthetic characters (src/synthetic/art.ts, 50 shared styles, so many look-alikes),
 * reference features from extractReferenceFeatures (normal + mirrored, <= 500 keypoints each),
 * cached in .cache/bench/kp-refs/. Frames: 960x540 composites of two library characters (one
 * mirrored) on a background, JPEG q80, extractFrameFeatures (<= 2000 keypoints).
 *
 * Brute force = KeypointIndex with matcher 'brute'; hashed = the same index with 'auto' (match +
 * verify, reached through its private members to time them apart). Kept = verified inliers of the
 * hashed path over those of brute force, hit by hit (same reference and appearance).
 * Brute-force results are cached per frame (keyed by the compiled keypoint code), since at 1 M
 * descriptors they cost seconds per frame (6-7 s in DescriptorIndex's exact kernel, 15-35 s in the
 * JS loop it replaced).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { composite, decodeToRaw, renderBackground, renderCharacter } from '../../synthetic/art';
import {
  deserializeKeypointSet,
  extractFrameFeatures,
  extractReferenceFeatures,
  KeypointIndex,
  QUERY_DEFAULTS,
  serializeKeypointSet,
  type KeypointHit,
  type KeypointSet,
  type QueryOptions,
  type ReferenceFeatures,
} from '../../signals/keypoints';
import type { DescriptorIndex } from '../../signals/keypoints/descriptor-index';
import { cacheDir, fmt, now, out, p50, p95, section, table, type BenchContext } from './util';

const STYLES = 50;
const charSeed = (i: number) => 1000 + i;

async function artOf(i: number): Promise<Buffer> {
  return renderCharacter(charSeed(i), 400, { styleSeed: charSeed(i) % STYLES });
}

/** Reference features of library characters 0..n-1 (cached one file per reference). */
export async function library(n: number): Promise<ReferenceFeatures[]> {
  const dir = cacheDir('kp-refs');
  const refs: ReferenceFeatures[] = [];
  let built = 0;
  const t0 = now();
  for (let i = 0; i < n; i++) {
    const f = path.join(dir, `ref-${charSeed(i)}.bin`);
    let normal: KeypointSet, mirrored: KeypointSet;
    if (existsSync(f)) {
      const b = readFileSync(f);
      const len = b.readUInt32LE(0);
      normal = deserializeKeypointSet(b.subarray(4, 4 + len));
      mirrored = deserializeKeypointSet(b.subarray(4 + len));
    } else {
      const raw = await decodeToRaw(await artOf(i), 4);
      ({ normal, mirrored } = await extractReferenceFeatures(raw));
      const a = serializeKeypointSet(normal);
      const head = Buffer.alloc(4);
      head.writeUInt32LE(a.length);
      writeFileSync(f, Buffer.concat([head, a, serializeKeypointSet(mirrored)]));
      built++;
      if (built % 100 === 0) process.stderr.write(`  built ${built} reference feature sets (${fmt((now() - t0) / 1000)} s)\n`);
    }
    refs.push({ referenceId: `ref-${charSeed(i)}`, characterId: `char-${charSeed(i)}`, features: { normal, mirrored } });
  }
  if (built) out(`  built ${built} reference feature sets in ${fmt((now() - t0) / 1000)} s (cached for later runs)`);
  return refs;
}

/** Frame j: two library characters (one mirrored) on a background. */
export async function frame(j: number, libSize: number): Promise<{ set: KeypointSet; truth: string[] }> {
  const a = (j * 7919) % libSize;
  const b = (j * 104729 + 13) % libSize;
  const W = 960;
  const H = 540;
  const bg = await renderBackground(700 + j, W, H);
  const res = await composite(
    bg,
    [
      { image: await artOf(a), cx: W * 0.3, cy: H * 0.5, scale: (H * (0.45 + 0.05 * (j % 3))) / 400 },
      { image: await artOf(b), cx: W * 0.72, cy: H * 0.55, scale: (H * 0.5) / 400, mirror: true },
    ],
    { jpegQuality: 80 },
  );
  return { set: await extractFrameFeatures(res.raw, { maxKeypoints: 2000 }), truth: [`ref-${charSeed(a)}`, `ref-${charSeed(b)}`] };
}

type Matches = { f: Int32Array; r: Int32Array; d: Int32Array; n: number };
interface KpInternals {
  rebuild(): void;
  nDesc: number;
  hashed: DescriptorIndex | null;
  match(frame: KeypointSet, o: Required<QueryOptions>): Matches;
  verify(frame: KeypointSet, m: Matches, o: Required<QueryOptions>): KeypointHit[];
}

function codeHash(): string {
  const h = createHash('sha1');
  for (const f of ['keypoint-index.js', 'features.js', 'appearance.js']) {
    const p = path.join(__dirname, '..', '..', 'signals', 'keypoints', f);
    if (existsSync(p)) h.update(readFileSync(p));
  }
  return h.digest('hex').slice(0, 10);
}

export async function benchKeypoints(ctx: BenchContext): Promise<void> {
  const libSize = 1000;
  const nFrames = ctx.quick ? 3 : 8;
  section(`keypoint matching: brute force vs multi-index hashing, ${libSize}-image library, ${nFrames} frames`);
  const refs = await library(libSize);
  const kp = new KeypointIndex();
  for (const r of refs) kp.add(r);
  const ki = kp as unknown as KpInternals;
  if (typeof ki.verify !== 'function' || typeof ki.match !== 'function') throw new Error('KeypointIndex internals changed: update the bench');
  kp.matcher = 'brute';
  ki.rebuild();
  const nDesc = ki.nDesc;
  out(`  library: ${kp.size} references, ${nDesc} descriptors (normal + mirrored), ${kp.characterCount} characters`);
  const o: Required<QueryOptions> = { ...QUERY_DEFAULTS };

  const gtDir = cacheDir('kp-bf', `${codeHash()}-${libSize}`);
  mkdirSync(gtDir, { recursive: true });
  const bfMs: number[] = [];
  const bfHits: KeypointHit[][] = [];
  const frames: KeypointSet[] = [];
  let bfSurvivors = 0;
  let cachedBf = 0;
  for (let j = 0; j < nFrames; j++) {
    const { set } = await frame(j, libSize);
    frames.push(set);
    const gf = path.join(gtDir, `frame-${j}.json`);
    if (existsSync(gf)) {
      const g = JSON.parse(readFileSync(gf, 'utf8')) as { ms: number; survivors: number; hits: KeypointHit[] };
      bfMs.push(g.ms);
      bfHits.push(g.hits);
      bfSurvivors += g.survivors;
      cachedBf++;
      continue;
    }
    const t0 = now();
    const m = ki.match(set, o);
    const hits = ki.verify(set, m, o);
    const ms = now() - t0;
    bfMs.push(ms);
    bfHits.push(hits);
    bfSurvivors += m.n;
    writeFileSync(gf, JSON.stringify({ ms, survivors: m.n, hits }));
  }
  const frameKp = frames.reduce((a, f) => a + f.count, 0) / frames.length;
  out(`  frames: ${fmt(frameKp)} keypoints on average; brute force ${cachedBf ? `cached for ${cachedBf}/${nFrames} frames (measured when first run)` : 'measured now'}`);

  // The hashed matcher, as KeypointIndex uses it at this size ('auto').
  kp.matcher = 'auto';
  let t0 = now();
  ki.rebuild();
  const buildMs = now() - t0;
  const di = ki.hashed;
  if (!di) throw new Error('KeypointIndex did not switch to the hashed matcher at 1,000 references');

  const rows: Array<Array<string | number>> = [];
  const bfInliers = bfHits.reduce((a, h) => a + h.reduce((s, x) => s + x.inliers, 0), 0);
  const nHits = bfHits.flat().length;
  rows.push(['brute force', p50(bfMs), p95(bfMs), 1, bfSurvivors / nFrames, nHits, 1, '-', nDesc]);
  const reps = 3; // every frame `reps` times (the first pass warms the JIT up)
  const ms: number[] = [];
  const matchMs: number[] = [];
  let kept = 0;
  let hitsKept = 0;
  let extraHits = 0;
  let survivors = 0;
  for (let rep = 0; rep < reps; rep++) {
    for (let j = 0; j < nFrames; j++) {
      const t0 = now();
      const m = ki.match(frames[j], o);
      const t1 = now();
      const hits = ki.verify(frames[j], m, o);
      const t2 = now();
      if (rep === 0) continue;
      ms.push(t2 - t0);
      matchMs.push(t1 - t0);
      if (rep > 1) continue;
      survivors += m.n;
      const byKey = new Map(hits.map((h) => [`${h.referenceId}/${h.mirrored}`, h]));
      for (const h of bfHits[j]) {
        const f = byKey.get(`${h.referenceId}/${h.mirrored}`);
        if (f) {
          kept += Math.min(f.inliers, h.inliers);
          hitsKept++;
          byKey.delete(`${h.referenceId}/${h.mirrored}`);
        }
      }
      extraHits += byKey.size;
    }
  }
  const keep = bfInliers ? kept / bfInliers : NaN;
  rows.push([
    `hashed (${di.usesWasm ? 'wasm' : 'js'})`, p50(ms), p95(ms), p50(bfMs) / p50(ms), survivors / nFrames, `${hitsKept}/${nHits} (+${extraHits})`, keep,
    fmt(buildMs / 1000), `${fmt(di.memoryBytes / 2 ** 20)} MiB, max bucket ${di.largestBucket}`,
  ]);
  ctx.summary.kpFrameMs = p50(ms);
  ctx.summary.kpKeep = keep;
  table(['matcher', 'p50_ms/frame', 'p95_ms', 'speed-up', 'ratio-test survivors/frame', 'hits kept (+extra)', 'inliers kept', 'build_s', 'notes'], rows);
  out(`  hashed: matching alone p50 ${fmt(p50(matchMs))} ms / p95 ${fmt(p95(matchMs))} ms per frame, verification p50 ${fmt(p50(ms.map((v, i) => v - matchMs[i])))} ms`);

  // Incremental upkeep: one more reference on the big library, then the next query.
  const extra = refs[0];
  kp.add({ ...extra, referenceId: 'bench-extra', characterId: 'bench-extra' });
  t0 = now();
  kp.query(frames[0]);
  const addMs = now() - t0;
  kp.remove('bench-extra');
  t0 = now();
  kp.query(frames[0]);
  const removeMs = now() - t0;
  out(`  incremental: first query after adding 1 reference ${fmt(addMs)} ms, after removing it ${fmt(removeMs)} ms (full build ${fmt(buildMs)} ms)`);
}

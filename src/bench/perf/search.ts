/**
 * Search: exact (ExactVectorIndex's JS loop) vs HNSW (AnnVectorIndex over usearch) on 10 k,
 * 100 k and 1 M synthetic reference vectors of the product model's dimension (its manifest's
 * output.dimension: 256 for kagami-descriptor-v1).
 *
 * Data model (clustered by character; the descriptor's output is a linear projection, so signed):
 * character c has a centre N(0,1)^dim and PER_CENTRE references centre + U(-0.6, 0.6) (L2-normalised
 * by the index); a query is a fresh noisy copy of a random centre among those present, so its true
 * top-10 are that character's references. Ground truth: usearch's brute-force exactSearch (f32,
 * SIMD), merged over chunks, checked against the JS exact index at 10 k. The 1 M HNSW graph (f16
 * storage) takes minutes to build on 2 cores, so graphs of 100 k and more are cached in .cache/bench/ann/
 * (rebuilt when missing).
 *
 * A crop model queries once per sliding window: one frame of the scan is a batch of windows
 * (slidingWindows on a 960x540 frame, every window size) searched for the scanner's k each; the
 * sizes are slid over every n-th sampled frame only, so a sampled frame costs that batch's time
 * scaled by the windows it gets on average. Last, the windows' search beam on the product model's
 * own vectors (realWindowBeams): how often HNSW's nearest reference is exact search's.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { exactSearch, MetricKind, type BatchMatches } from 'usearch';
import { modelManifestPath } from '../../config';
import { DEFAULT_SCAN_OPTIONS } from '../../scan/scanner';
import { meanWindowsPerFrame, slidingWindows } from '../../scan/windows';
import { referenceViews, windowCrops } from '../../synthetic/crops';
import type { RawImage } from '../../media/types';
import { ExactVectorIndex } from '../../signals/embedding/exact-index';
import { AnnVectorIndex, ANN_THRESHOLD, defaultBeam } from '../../signals/embedding/ann-index';
import { loadProductEmbedder, PRODUCT_MODEL_ID } from './fixtures';
import { cacheDir, fmt, gaussian, now, out, p50, p95, section, table, type BenchContext } from './util';

const MANIFEST = JSON.parse(readFileSync(modelManifestPath(PRODUCT_MODEL_ID), 'utf8')) as { output: { dimension: number }; calibration?: { background?: unknown } };
/** The product model's embedding dimension, from its manifest. */
const DIM = MANIFEST.output.dimension;
/** References a scan asks for per window (Scanner.likeness): its nearest only when a window counts for its winner alone. */
const WINDOW_K = DEFAULT_SCAN_OPTIONS.windowWinnerOnly && !MANIFEST.calibration?.background ? 1 : DEFAULT_SCAN_OPTIONS.embeddingTopK;
/** Windows of one 960x540 frame (the scan's frame size for 16:9 video) at every default window size. */
const FRAME_WINDOWS = slidingWindows(960, 540, DEFAULT_SCAN_OPTIONS.windows.map((w) => w.size)).length;
/** Windows a sampled frame gets on average (each size on every frameStep-th frame). */
const MEAN_WINDOWS = meanWindowsPerFrame(960, 540, DEFAULT_SCAN_OPTIONS.windows);
/** References per synthetic character (consecutive rows share a centre). */
const PER_CENTRE = 10;
const CHUNK = 50_000;

class Synth {
  private centre = new Float32Array(DIM);
  private centreId = -1;
  /** Rows [from, to) as one flat array (deterministic per row). */
  rows(from: number, to: number): Float32Array {
    const outv = new Float32Array((to - from) * DIM);
    for (let i = from; i < to; i++) this.noisy(Math.floor(i / PER_CENTRE), i * 2654435761 + 7, outv, (i - from) * DIM);
    return outv;
  }
  /** A new image of a random character among the first `present` references' characters. */
  query(q: number, present: number): Float32Array {
    let s = (q * 40503 + 99) >>> 0;
    s = (Math.imul(s ^ (s >>> 15), 2246822507) >>> 0) % Math.max(1, Math.floor(present / PER_CENTRE));
    const v = new Float32Array(DIM);
    this.noisy(s, q * 97 + 1_000_003, v, 0);
    return v;
  }
  private noisy(c: number, seed: number, dst: Float32Array, o: number): void {
    if (c !== this.centreId) {
      const g = gaussian(c * 7919 + 1);
      for (let t = 0; t < DIM; t++) this.centre[t] = g();
      this.centreId = c;
    }
    let x = (seed >>> 0) || 1;
    for (let t = 0; t < DIM; t++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const u = (x >>> 0) / 4294967296 - 0.5;
      dst[o + t] = this.centre[t] + 1.2 * u;
    }
  }
}

const split = (flat: Float32Array, n: number): Float32Array[] => Array.from({ length: n }, (_, i) => flat.subarray(i * DIM, (i + 1) * DIM));

export async function benchSearch(ctx: BenchContext): Promise<void> {
  section(`search: exact (JS) vs HNSW (usearch), dim ${DIM} (${PRODUCT_MODEL_ID}), k=10 per query; a frame = ${FRAME_WINDOWS} window queries`);
  const synth = new Synth();
  const nq = ctx.quick ? 50 : 200;
  const queries = Array.from({ length: nq }, (_, q) => synth.query(q, 1_000_000));
  out(`  data: characters of ${PER_CENTRE} references each (noisy copies of a centre), queries = new noisy copies`);
  const sizes = [10_000, 100_000, 1_000_000];
  const header = ['refs', 'index', 'p50_ms', 'p95_ms', 'recall@10', 'build_s'];
  for (const n of sizes) {
    const rows: Array<Array<string | number>> = [];
    const qs = queries.map((_, q) => synth.query(q, n));
    const big = n >= 1_000_000;
    // Graphs of 100 k and more are cached (100 k: ~30-60 s to build here, 1 M: ~36 min).
    const cacheGraph = n >= 100_000;
    const quant = big ? 'f16' : 'f32';
    const ann = new AnnVectorIndex('bench', DIM, { quantization: quant, threads: 2 });
    const ids = Array.from({ length: n }, (_, i) => `r${i}`);
    const keys = ids.map((_, i) => `c${Math.floor(i / PER_CENTRE)}`);
    const dir = cacheDir('ann');
    const file = path.join(dir, `synth3-d${DIM}-${n}-${quant}-M16-ef128.usearch`);
    const gtFile = path.join(dir, `synth3-d${DIM}-${n}-gt-${nq}.json`);
    let gt: number[][] | undefined = existsSync(gtFile) ? (JSON.parse(readFileSync(gtFile, 'utf8')) as number[][]) : undefined;
    let buildS = NaN;
    // JS exact: the full scan's time is the sum over chunks (measured on a few queries at 1M).
    const exactQ = big ? 3 : n >= 100_000 ? 10 : 30;
    const exactMs: number[] = new Array(exactQ).fill(0);
    const needBuild = !(cacheGraph && existsSync(file));
    const needGt = !gt;
    if (big && needBuild && ctx.quick && !process.env.KAGAMI_BENCH_BUILD_1M) {
      out(`  1M: no cached graph (${path.relative(process.cwd(), file)}); a full run (or KAGAMI_BENCH_BUILD_1M=1) builds it once (minutes on 2 cores)`);
      continue;
    }
    process.stderr.write(`  search: preparing ${n} references${needBuild ? ' (building the graph)' : ''}\n`);
    const partial: Array<Array<[number, number]>> = qs.map(() => []);
    if (needBuild || needGt || !big) {
      const t0 = now();
      let addMs = 0;
      for (let from = 0; from < n; from += CHUNK) {
        const to = Math.min(n, from + CHUNK);
        const flat = synth.rows(from, to);
        const vecs = split(flat, to - from);
        if (needBuild) {
          const ta = now();
          ann.addMany(ids.slice(from, to), keys.slice(from, to), vecs);
          addMs += now() - ta;
        }
        if (needGt) {
          const normed = vecs.map(normalise);
          const m = exactSearch(normed, qs.map(normalise), DIM, 10, MetricKind.IP, 2) as BatchMatches;
          for (let q = 0; q < qs.length; q++) {
            const r = m.get(q);
            for (let t = 0; t < r.keys.length; t++) partial[q].push([from + Number(r.keys[t]), 1 - r.distances[t]]);
          }
        }
        // JS exact index on this chunk (its search cost is linear in n)
        const ex = new ExactVectorIndex('bench', DIM);
        if (!big || from === 0) {
          for (let i = 0; i < vecs.length; i++) ex.add(ids[from + i], keys[from + i], vecs[i]);
          for (let q = 0; q < exactQ; q++) {
            const ts = now();
            ex.search([qs[q]], 10);
            exactMs[q] += (now() - ts) * (big ? n / (to - from) : 1);
          }
        }
      }
      if (needBuild) buildS = addMs / 1000;
      if (needGt) {
        gt = partial.map((p) => p.sort((a, b) => b[1] - a[1]).slice(0, 10).map((x) => x[0]));
        writeFileSync(gtFile, JSON.stringify(gt));
      }
      if (cacheGraph && needBuild) {
        ann.save(file + '.tmp');
        renameSync(file + '.tmp', file);
      }
      void t0;
    } else {
      // cached 1M graph and ground truth: JS exact from one chunk, scaled
      const flat = synth.rows(0, CHUNK);
      const ex = new ExactVectorIndex('bench', DIM);
      split(flat, CHUNK).forEach((v, i) => ex.add(ids[i], keys[i], v));
      for (let q = 0; q < exactQ; q++) {
        const ts = now();
        ex.search([qs[q]], 10);
        exactMs[q] = (now() - ts) * (n / CHUNK);
      }
    }
    if (cacheGraph && !needBuild) {
      const tl = now();
      ann.load(file, ids, keys);
      out(`  ${n} graph loaded from cache in ${fmt((now() - tl) / 1000)} s (${path.relative(process.cwd(), file)})`);
    }
    // ANN latency / recall, one query (frame) per call, 1 search thread.
    const gtSets = gt!.map((g) => new Set(g.map((i) => `r${i}`)));
    for (const ef of ctx.quick ? (big ? [64, 128, 256, 512] : [64, 128]) : [32, 64, 128, 256, 512]) {
      ann.expansionSearch = ef;
      const lat: number[] = [];
      let hit = 0;
      ann.threads = 1;
      ann.search([qs[0]], 10);
      for (let q = 0; q < nq; q++) {
        const ts = now();
        const r = ann.search([qs[q]], 10)[0];
        lat.push(now() - ts);
        for (const h of r) if (gtSets[q].has(h.id)) hit++;
      }
      const recall = hit / (nq * 10);
      const own = ef === defaultBeam(n) ? ' (index default)' : '';
      rows.push([n, `hnsw ${quant} ef=${ef}${own}`, p50(lat), p95(lat), recall, Number.isNaN(buildS) ? (cacheGraph ? 'cached' : '-') : fmt(buildS)]);
      // The summary: the beam a library of this size searches with.
      if (big && own) {
        ctx.summary.search1MP50Ms = p50(lat);
        ctx.summary.recall10 = recall;
      }
    }
    // One frame of a scan: its windows as one batch, WINDOW_K each (1 thread), by beam width; the
    // recall column is the windows' top-1 against exact (a window counts for its nearest only).
    const k = WINDOW_K;
    const frames = ctx.quick ? 10 : 30;
    const share = MEAN_WINDOWS / FRAME_WINDOWS;
    for (const ef of [...new Set([...(ctx.quick ? [32, 128] : [16, 32, 64, 128]), DEFAULT_SCAN_OPTIONS.windowBeam])].sort((a, b) => a - b)) {
      ann.expansionSearch = ef;
      const frameMs: number[] = [];
      let top1 = 0;
      let asked = 0;
      for (let f = 0; f < frames; f++) {
        const qi = Array.from({ length: FRAME_WINDOWS }, (_, w) => (f * FRAME_WINDOWS + w) % nq);
        const ts = now();
        const res = ann.search(qi.map((q) => qs[q]), k);
        frameMs.push(now() - ts);
        res.forEach((r, j) => {
          asked++;
          if (r[0]?.id === `r${gt![qi[j]][0]}`) top1++;
        });
      }
      rows.push([n, `hnsw ef=${ef}${ef === DEFAULT_SCAN_OPTIONS.windowBeam ? ' (scan default)' : ''}: frame of ${FRAME_WINDOWS} windows, k=${k}`, p50(frameMs), p95(frameMs), `${fmt(top1 / asked)} (top-1)`, '-']);
      rows.push([n, `  per sampled frame (${fmt(MEAN_WINDOWS)} windows on average)`, p50(frameMs) * share, p95(frameMs) * share, '-', '-']);
    }
    ann.expansionSearch = defaultBeam(n);
    rows.push([n, big ? 'exact JS (extrapolated from 50k)' : 'exact JS', p50(exactMs), p95(exactMs), 1, '-']);
    if (n === 10_000) {
      // sanity: JS exact agrees with the usearch ground truth
      const ex = new ExactVectorIndex('bench', DIM);
      split(synth.rows(0, n), n).forEach((v, i) => ex.add(ids[i], keys[i], v));
      let agree = 0;
      for (let q = 0; q < 10; q++) for (const h of ex.search([qs[q]], 10)[0]) if (gtSets[q].has(h.id)) agree++;
      out(`  ground truth check: JS exact vs usearch exactSearch overlap@10 = ${fmt(agree / 100)}`);
    }
    table(header, rows);
  }
  out(`  ANN_THRESHOLD (exact below, HNSW above) = ${ANN_THRESHOLD} references`);
  await realWindowBeams();
}

/**
 * The windows' beam on the product model's own vectors: 6,000 synthetic characters' reference
 * views as the library and 600 sliding-window crops of 2,000 of them as queries (seeds disjoint
 * from tests and training), embedded once and cached in .cache/bench/ann-real/. Reported: how often
 * HNSW's nearest reference is exact search's, by beam (a window counts for its nearest only).
 */
async function realWindowBeams(): Promise<void> {
  const nRefs = 6000;
  const nCrops = 600;
  const file = path.join(cacheDir('ann-real'), `${PRODUCT_MODEL_ID}-${nRefs}x${nCrops}-v1.f32`);
  const chars = Array.from({ length: nRefs }, (_, i) => 90000 + i);
  const styleOf = (s: number) => 91000 + Math.floor((s - 90000) / 6);
  if (!existsSync(file)) {
    const embedder = await loadProductEmbedder(2);
    try {
      const embedAll = async (imgs: RawImage[]) => {
        const out: Float32Array[] = [];
        for (let i = 0; i < imgs.length; i += 64) out.push(...(await embedder.embed(imgs.slice(i, i + 64))));
        return out;
      };
      const refs = await embedAll(await referenceViews(chars, styleOf, embedder.inputWidth));
      const crops = await windowCrops({ count: nCrops, seed: 92000, characters: chars.slice(0, 2000), styleOf, backgroundSeed: 93000, backgrounds: 16, size: embedder.inputWidth });
      const queries = await embedAll(crops.map((c) => c.image));
      const flat = new Float32Array((nRefs + nCrops) * DIM);
      [...refs, ...queries].forEach((v, i) => flat.set(v, i * DIM));
      writeFileSync(file + '.tmp', Buffer.from(flat.buffer));
      renameSync(file + '.tmp', file);
    } finally {
      await embedder.dispose();
    }
  }
  const buf = readFileSync(file);
  const all = split(new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4), nRefs + nCrops);
  const refs = all.slice(0, nRefs);
  const queries = all.slice(nRefs);
  const exact = new ExactVectorIndex('bench', DIM);
  refs.forEach((v, i) => exact.add(`r${i}`, `c${i}`, v));
  const ann = new AnnVectorIndex('bench', DIM);
  ann.addMany(refs.map((_, i) => `r${i}`), refs.map((_, i) => `c${i}`), refs);
  ann.threads = 1;
  const truth = exact.search(queries, 1).map((h) => h[0].id);
  const rows: Array<Array<string | number>> = [];
  for (const beam of [16, 32, 64, 128]) {
    const t0 = now();
    const got = ann.search(queries, 1, beam);
    const us = ((now() - t0) * 1000) / queries.length;
    const same = got.filter((h, i) => h[0]?.id === truth[i]).length / queries.length;
    rows.push([beam === DEFAULT_SCAN_OPTIONS.windowBeam ? `${beam} (scan default)` : String(beam), same, us]);
  }
  out(`  ${PRODUCT_MODEL_ID} vectors: ${nRefs} synthetic characters' references, ${nCrops} window crops as queries (HNSW f32, 1 thread)`);
  table(['window beam', 'nearest = exact', 'us/query'], rows);
}

function normalise(v: Float32Array): Float32Array {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  const k = 1 / Math.sqrt(s);
  const o = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) o[i] = v[i] * k;
  return o;
}

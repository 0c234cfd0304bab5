/**
 * Hubness of the likeness tier, measured offline: do a few references win too many windows, and
 * does a correction help? Two steps on a recorded accuracy-bench run (run.ts --record):
 *
 *   node dist/bench/accuracy/hubness.js dump --cache C --seed S --out W.jsonl
 *   node dist/bench/accuracy/hubness.js score C/accuracy-result.json OBS.jsonl W.jsonl
 *
 * `dump` slides the scanner's windows over every clip again (the product's model, sampling and
 * window plan) and writes each window's 16 nearest references with their cosines, and each
 * reference's hubness: the mean of its k highest cosines to other characters' references, to the
 * background bank's scenery crops and to windows of Kagami's synthetic characters (seeds of the
 * int8 calibration range, never in the benchmark). `score` rebuilds the likeness observations from
 * the dump (each window counts for its winner, as windowWinnerOnly does), keeps the recorded
 * keypoint observations, and prints the bench's figures uncorrected (which must equal the run's)
 * and under reference-side and window-side corrections.
 */
import { createWriteStream, readFileSync } from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { modelFor, modelManifestPath, readEnv } from '../../config';
import { openLibrary } from '../../library/library';
import { sampleFrames } from '../../media/ffmpeg';
import { calibrateCosine } from '../../matching/fuse';
import type { FrameObservation } from '../../matching/types';
import { ReferenceSet } from '../../scan/reference-set';
import { DEFAULT_SCAN_OPTIONS } from '../../scan/scanner';
import { frameWindows } from '../../scan/windows';
import { BackgroundBank } from '../../signals/embedding/background-bank';
import { dot } from '../../signals/embedding/drift';
import { normaliseInto } from '../../signals/embedding/exact-index';
import { objectnessOf } from '../../signals/embedding/objectness';
import { OnnxEmbedder } from '../../signals/embedding/onnx-embedder';
import { windowCrops } from '../../synthetic/crops';
import { clipResultOf, figuresLine, readRecordedRun } from './recorded';
import { evaluate, type ClipResult } from './run';

const NEAREST = 16;

interface Header {
  refs: Array<{ id: string; key: string }>;
  hubs: Record<string, number[]>;
  calibration: { floor: number; ceil: number };
}

/** A window: x, y, size, then (reference index, cosine) pairs, nearest first. */
type DumpedWindow = number[];

interface DumpedClip {
  clip: string;
  frames: Array<{ i: number; t: number; w: DumpedWindow[] }>;
}

const unit = (v: Float32Array) => {
  const out = new Float32Array(v.length);
  normaliseInto(v, out, 0);
  return out;
};
const meanTop = (values: number[], k: number) => {
  const top = values.sort((a, b) => b - a).slice(0, k);
  return top.reduce((a, b) => a + b, 0) / Math.max(1, top.length);
};
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];

async function dump(o: { cache: string; seed: string; out: string }): Promise<void> {
  const result = JSON.parse(readFileSync(path.join(o.cache, 'accuracy-result.json'), 'utf8')) as { clips: Array<{ id: string; file: string }> };
  const embedder = await OnnxEmbedder.create(modelManifestPath(modelFor(readEnv())), { threads: 2 });
  try {
    // As a scan with the product model (denseUpTo 1): every window through the dense form.
    if (!embedder.embedRegions || embedder.denseUpTo !== 1) throw new Error(`${embedder.modelId} does not send all windows through a dense form; the dump would differ from its scans`);
    const embedRegions = embedder.embedRegions.bind(embedder);
    const lib = await openLibrary(path.join(o.cache, `library-seed${o.seed}-full`), { create: false });
    const refs = await ReferenceSet.load(lib.store, embedder);
    const { features } = await lib.store.loadFeatures();
    await lib.store.close();
    const index = new Map(features.map((f, i) => [f.referenceId, i]));
    const vecs = features.map((f) => unit(f.embedding));
    const scenery = (await BackgroundBank.build(embedder)).vectors();
    const crops = await windowCrops({ count: 600, seed: 777, characters: Array.from({ length: 200 }, (_, i) => 60_000 + i), backgroundSeed: 62_000, backgrounds: 12, emptyShare: 0 });
    const characters: Float32Array[] = [];
    for (let i = 0; i < crops.length; i += 64) characters.push(...(await embedder.embed(crops.slice(i, i + 64).map((c) => c.image))).map(unit));
    const hubs: Record<string, number[]> = {};
    for (const k of [3, 10]) hubs[`library k${k}`] = vecs.map((v, i) => meanTop(vecs.flatMap((w, j) => (features[j].characterId === features[i].characterId ? [] : [dot(v, w)])), k));
    for (const [name, bank] of [['scenery', scenery], ['characters', characters]] as const) {
      for (const k of [1, 10, 50]) hubs[`${name} k${k}`] = vecs.map((v) => meanTop(bank.map((b) => dot(v, b)), k));
    }
    const out = createWriteStream(o.out);
    const header: Header = { refs: features.map((f) => ({ id: f.referenceId, key: f.characterId })), hubs, calibration: embedder.calibration ?? DEFAULT_SCAN_OPTIONS.embeddingCalibration };
    out.write(JSON.stringify(header) + '\n');
    const opts = DEFAULT_SCAN_OPTIONS;
    const env = readEnv();
    const objFloor = env.KAGAMI_OBJECTNESS_FLOOR ?? embedder.objectness?.floor ?? 0;
    const probe = objFloor > 0 ? embedder.objectness : undefined;
    for (const [n, c] of result.clips.entries()) {
      const frames: DumpedClip['frames'] = [];
      for await (const frame of sampleFrames(c.file, opts.sampling)) {
        const windows = frameWindows(frame.width, frame.height, opts.windows, frame.index);
        if (!windows.length) continue;
        // As the scan: the windows its objectness probe reads as scenery are not searched.
        const all = await embedRegions(frame, windows);
        const kept = windows.map((_, j) => j).filter((j) => !probe || objectnessOf(probe, all[j]) >= objFloor);
        const found = refs.vectors.search(kept.map((j) => all[j]), NEAREST, opts.windowBeam);
        frames.push({ i: frame.index, t: frame.timeSec, w: kept.map((k, j) => [windows[k].x, windows[k].y, windows[k].size, ...found[j].flatMap((h) => [index.get(h.id)!, h.similarity])]) });
      }
      out.write(JSON.stringify({ clip: c.id, frames } satisfies DumpedClip) + '\n');
      if ((n + 1) % 20 === 0) console.log(`${n + 1}/${result.clips.length} clips`);
    }
    await new Promise((r) => out.end(r));
  } finally {
    await embedder.dispose();
  }
}

/** Re-ranks one window: the adjusted cosine of each of its references; the winner's is the window's. */
type Adjust = (w: DumpedWindow, ref: number, cosine: number) => number;

function score(resultFile: string, obsFile: string, dumpFile: string): void {
  const { plan, registered, byClip: recs, clips, aggregate } = readRecordedRun(resultFile, obsFile);
  const lines = readFileSync(dumpFile, 'utf8').split('\n').filter(Boolean);
  const header = JSON.parse(lines[0]) as Header;
  const dumps = new Map(lines.slice(1).map((l) => JSON.parse(l) as DumpedClip).map((d) => [d.clip, d]));
  const { floor, ceil } = header.calibration;

  const run = (name: string, adjust: Adjust) => {
    const results: ClipResult[] = clips
      .filter((c) => dumps.has(c.id))
      .map((clip) => {
        const rec = recs.get(clip.id)!;
        const obs = new Map<string, Map<number, FrameObservation>>();
        const at = (cid: string, f: number, t: number) => {
          let m = obs.get(cid);
          if (!m) obs.set(cid, (m = new Map()));
          let o = m.get(f);
          if (!o) m.set(f, (o = { frameIndex: f, timeSec: t, characterId: cid }));
          return o;
        };
        for (const [cid, list] of Object.entries(rec.observations)) for (const o of list) if (o.keypoints) at(cid, o.frameIndex, o.timeSec).keypoints = o.keypoints;
        for (const fr of dumps.get(clip.id)!.frames) {
          for (const w of fr.w) {
            let best = -1;
            let bestAdj = -Infinity;
            let bestCos = 0;
            for (let j = 3; j < w.length; j += 2) {
              const a = adjust(w, w[j], w[j + 1]);
              if (a > bestAdj) [best, bestAdj, bestCos] = [w[j], a, w[j + 1]];
            }
            if (best < 0) continue;
            const s = calibrateCosine(bestAdj, floor, ceil);
            const o = at(header.refs[best].key, fr.i, fr.t);
            if (!o.embedding || s > o.embedding.score) o.embedding = { score: s, cosine: bestCos, referenceId: header.refs[best].id, box: { x: w[0], y: w[1], width: w[2], height: w[2] } };
          }
        }
        const observations = new Map([...obs].map(([cid, m]) => [cid, [...m.values()].sort((a, b) => a.frameIndex - b.frameIndex)]));
        return clipResultOf(clip, rec, observations, registered, aggregate);
      });
    console.log(figuresLine(name, evaluate(plan, results, registered).kagami, 40));
  };

  // How lopsided the wins are: the references that top clips not showing their character.
  const wrongTops = new Map<string, number>();
  for (const clip of clips) {
    const rec = recs.get(clip.id)!;
    let top: [string, number] | undefined;
    for (const [cid, list] of Object.entries(rec.observations)) for (const o of list) if (o.embedding && (!top || o.embedding.score > top[1])) top = [cid, o.embedding.score];
    if (top && top[0] !== clip.truthCharacter) wrongTops.set(top[0], (wrongTops.get(top[0]) ?? 0) + 1);
  }
  console.log(`top likeness of a clip not showing it: ${[...wrongTops].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([c, n]) => `${c} ${n}`).join(', ')}`);

  run('uncorrected (must equal the run)', (_w, _r, c) => c);
  for (const [name, hub] of Object.entries(header.hubs)) {
    const centre = median(hub);
    for (const beta of [0.25, 0.5, 1]) run(`reference hubness, ${name}, beta ${beta}`, (_w, r, c) => c - beta * (hub[r] - centre));
  }
  const windowMean = (w: DumpedWindow, k: number) => {
    let t = 0;
    let n = 0;
    for (let j = 4; j < w.length && n < k; j += 2, n++) t += w[j];
    return t / Math.max(1, n);
  };
  const all = [...dumps.values()].flatMap((d) => d.frames.flatMap((fr) => fr.w));
  for (const k of [4, 16]) {
    const centre = median(all.map((w) => windowMean(w, k)));
    for (const gamma of [0.25, 0.5, 1]) run(`window hubness, mean top ${k}, gamma ${gamma}`, (w, _r, c) => c - gamma * (windowMean(w, k) - centre));
  }
  // The window's margin over the nearest reference of another character (a ratio test per window).
  const runnerUp = (w: DumpedWindow, r: number) => {
    for (let j = 3; j < w.length; j += 2) if (header.refs[w[j]].key !== header.refs[r].key) return w[j + 1];
    return undefined;
  };
  const margins = all.map((w) => w[4] - (runnerUp(w, w[3]) ?? w[w.length - 1]));
  const centre = median(margins);
  for (const gamma of [0.25, 0.5, 1, 2]) run(`window margin over its runner-up, gamma ${gamma}`, (w, r, c) => c + gamma * (c - (runnerUp(w, r) ?? w[w.length - 1]) - centre));
}

function main(argv: string[]): void {
  const program = new Command('hubness').description('hubness of the likeness tier on a recorded accuracy-bench run');
  program
    .command('dump')
    .description("every window's nearest references, and each reference's hubness")
    .requiredOption('--cache <dir>', "the run's cache folder (accuracy-result.json, clips, library)")
    .requiredOption('--seed <n>', "the run's seed (its library folder)")
    .requiredOption('--out <file>', 'where the dump goes (JSON lines)')
    .action((o: { cache: string; seed: string; out: string }) =>
      dump(o).catch((e: Error) => {
        process.stderr.write(`hubness: ${e.message}\n`);
        process.exitCode = 1;
      }),
    );
  program
    .command('score')
    .description('the bench figures with the likeness tier rebuilt from a dump, uncorrected and corrected')
    .argument('<result>', "the run's accuracy-result.json")
    .argument('<record>', 'the observations it recorded with --record')
    .argument('<dump>', 'the dump of the same run')
    .action((result: string, record: string, d: string) => {
      try {
        score(result, record, d);
      } catch (e) {
        process.stderr.write(`hubness: ${(e as Error).message}\n`);
        process.exitCode = 2;
      }
    });
  program.parse(argv);
}

main(process.argv);

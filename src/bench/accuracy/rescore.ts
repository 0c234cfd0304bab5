/**
 * Re-scores a recorded accuracy-bench run offline under variants of the clip aggregation, so a
 * change to how frame observations become clip scores can be measured in seconds instead of a
 * 30-minute scan:
 *
 *   node dist/bench/accuracy/run.js --clips 200 --seed 1 --library 150 --cache C --record C/obs.jsonl
 *   node dist/bench/accuracy/rescore.js C/accuracy-result.json C/obs.jsonl
 *
 * The first variant is the product's own aggregation and must reproduce the bench's SUMMARY.
 */
import { Command } from 'commander';
import { withLikenessReview, type AggregateParams } from '../../matching/aggregate';
import { calibrateCosine, type FusionParams } from '../../matching/fuse';
import type { Box, FrameObservation } from '../../matching/types';
import { DEFAULT_SCAN_OPTIONS } from '../../scan/scanner';
import { iou } from '../../synthetic/art';
import { diagnose } from './diagnose';
import { clipResultOf, figuresLine, readRecordedRun, type RecordedRun } from './recorded';
import { describeVerdicts, evaluate, printMissCauses, type ClipResult } from './run';

type Transform = (obs: Map<string, FrameObservation[]>, frameCount: number) => Map<string, FrameObservation[]>;

interface Variant {
  name: string;
  params?: Partial<AggregateParams>;
  transform?: Transform;
}

/**
 * Likeness consistency: a character seen by likeness alone in one window only is more likely a
 * stray resemblance than a character. A likeness observation whose window is not seen again for the
 * same character (by likeness or keypoints, box IoU ≥ minIoU) on another frame within spanSec keeps
 * only (1 − penalty) of its likeness score.
 */
function likenessConsistency(spanSec: number, minIoU: number, penalty: number): Transform {
  return (obs) => {
    const out = new Map<string, FrameObservation[]>();
    for (const [cid, list] of obs) {
      const boxes = list
        .map((o) => ({ t: o.timeSec, f: o.frameIndex, boxes: [o.embedding?.box, o.keypoints?.box].filter((b): b is Box => !!b) }))
        .filter((x) => x.boxes.length);
      out.set(
        cid,
        list.map((o) => {
          const e = o.embedding;
          if (!e?.box || (o.keypoints && o.keypoints.verified !== false)) return o;
          const seenAgain = boxes.some((x) => x.f !== o.frameIndex && Math.abs(x.t - o.timeSec) <= spanSec && x.boxes.some((b) => iou(b, e.box!) >= minIoU));
          return seenAgain ? o : { ...o, embedding: { ...e, score: e.score * (1 - penalty) } };
        }),
      );
    }
    return out;
  };
}

/**
 * Likeness support: a likeness observation scoring far above every other likeness observation of
 * the same character within spanSec (on other frames) loses alpha × the excess.
 */
function likenessSupport(spanSec: number, alpha: number): Transform {
  return (obs) => {
    const out = new Map<string, FrameObservation[]>();
    for (const [cid, list] of obs) {
      out.set(
        cid,
        list.map((o) => {
          const e = o.embedding;
          if (!e || (o.keypoints && o.keypoints.verified !== false)) return o;
          const other = Math.max(0, ...list.filter((x) => x.frameIndex !== o.frameIndex && Math.abs(x.timeSec - o.timeSec) <= spanSec).map((x) => Math.max(x.embedding?.score ?? 0, x.keypoints?.score ?? 0)));
          return other >= e.score ? o : { ...o, embedding: { ...e, score: e.score - alpha * (e.score - other) } };
        }),
      );
    }
    return out;
  };
}

/** Another calibration of the likeness tier: every observation's cosine mapped again, linearly from floor (0) to ceil (1). */
function recalibrate(floor: number, ceil: number): Transform {
  return (obs) => new Map([...obs].map(([cid, list]) => [cid, list.map((o) => (o.embedding ? { ...o, embedding: { ...o.embedding, score: calibrateCosine(o.embedding.cosine, floor, ceil) } } : o))]));
}

/** Keypoint floor: a frame's keypoint score k becomes floor + (1 − floor)·k (verified only, or unverified too). */
function keypointFloor(floor: number, unverifiedToo: boolean): Transform {
  return (obs) =>
    new Map(
      [...obs].map(([cid, list]) => [
        cid,
        list.map((o) => (o.keypoints && (unverifiedToo || o.keypoints.verified !== false) && o.keypoints.score > 0 ? { ...o, keypoints: { ...o.keypoints, score: floor + (1 - floor) * o.keypoints.score } } : o)),
      ]),
    );
}

/** The observations with one tier's evidence dropped on the frames it did not look at (and observations left empty dropped). */
function withoutTier(obs: Map<string, FrameObservation[]>, tier: 'keypoints' | 'embedding', looked: (frame: number) => boolean): Map<string, FrameObservation[]> {
  return new Map(
    [...obs].map(([cid, list]) => [
      cid,
      list.map((o) => (o[tier] && !looked(o.frameIndex) ? { ...o, [tier]: undefined } : o)).filter((o) => o.keypoints || o.embedding),
    ]),
  );
}

/** How many sampled frames the keypoint tier ran on, over all clips, under keypointFrames (printed with its variant). */
const orbFrames = { ran: 0, of: 0 };

/**
 * The keypoint tier on every step-th sampled frame only (index % step === phase), its observations
 * on the other frames dropped; with `densify`, growing outward from its hits (any character;
 * `verified`: a verified one): the frames next to a frame it looked at and found a hit on are looked
 * at too, as a scanner would run ORB on the neighbours of a hit after the fact (for step 2, the
 * scanner's keypointFrameStep 2 with keypointBetween 'hits').
 * Transforms only drop observations: a frame the recorded scan did not look at stays unlooked, so
 * a variant that looks at more frames than the product (every frame, or 'hits' against the default
 * 'edges') needs a run recorded with KAGAMI_KEYPOINT_FRAME_STEP=1.
 */
function keypointFrames(step: number, phase: number, densify?: 'any' | 'verified'): Transform {
  return (obs, frameCount) => {
    const looked = new Set<number>();
    for (let f = 0; f < frameCount; f++) if (f % step === phase) looked.add(f);
    if (densify) {
      const hitAt = new Set<number>();
      for (const list of obs.values()) for (const o of list) if (o.keypoints && (densify === 'any' || o.keypoints.verified !== false)) hitAt.add(o.frameIndex);
      const queue = [...looked].filter((f) => hitAt.has(f));
      while (queue.length) {
        const f = queue.pop()!;
        for (const g of [f - 1, f + 1]) {
          if (g < 0 || g >= frameCount || looked.has(g)) continue;
          looked.add(g);
          if (hitAt.has(g)) queue.push(g);
        }
      }
    }
    orbFrames.ran += looked.size;
    orbFrames.of += frameCount;
    return withoutTier(obs, 'keypoints', (f) => looked.has(f));
  };
}

/**
 * The keypoint tier on the odd-numbered frames, and on an even-numbered one only where a verified
 * copy starts or ends next to it: when some character is verified on one of its two neighbours and
 * not on the other. Between two frames that verified the same characters it is not looked at (the
 * segment spans it anyway; mergeGapSec bridges one frame).
 */
function keypointEdges(): Transform {
  return (obs, frameCount) => {
    const verified = new Map<number, Set<string>>();
    for (const [cid, list] of obs) {
      for (const o of list) {
        if (o.frameIndex % 2 !== 1 || !o.keypoints || o.keypoints.verified === false) continue;
        let set = verified.get(o.frameIndex);
        if (!set) verified.set(o.frameIndex, (set = new Set()));
        set.add(cid);
      }
    }
    const differ = (a = new Set<string>(), b = new Set<string>()) => a.size !== b.size || [...a].some((c) => !b.has(c));
    const looked = (f: number) => f % 2 === 1 || differ(verified.get(f - 1), verified.get(f + 1));
    for (let f = 0; f < frameCount; f++) if (looked(f)) orbFrames.ran++;
    orbFrames.of += frameCount;
    return withoutTier(obs, 'keypoints', looked);
  };
}

/** How many sampled frames the likeness windows ran on, over all clips, under windowFrames (printed with its variant). */
const windowFrameCount = { ran: 0, of: 0, emptyRan: 0, emptyOf: 0 };
/** Whether the clip being re-scored shows no character at all (its share of windowed frames is printed apart). */
let emptyClip = false;

/**
 * The likeness windows on every `step`-th sampled frame only (the recorded scan ran them on the
 * even-numbered ones), their observations on the other frames dropped; a frame in between that a
 * recorded scan windowed is windowed again when a neighbouring windowed frame (`step`/2 away) has a
 * likeness observation scoring at least `minScore` (any character).
 */
function windowFrames(step: number, minScore: number): Transform {
  return (obs, frameCount) => {
    const half = step / 2;
    // The scanner decides a batch's frames from that batch and the one before it.
    const sameBatch = (a: number, b: number) => Math.floor(a / DEFAULT_SCAN_OPTIONS.batchSize) === Math.floor(b / DEFAULT_SCAN_OPTIONS.batchSize);
    const strong = new Set<number>();
    for (const list of obs.values()) for (const o of list) if (o.frameIndex % step === 0 && (o.embedding?.score ?? -1) >= minScore) strong.add(o.frameIndex);
    const looked = (f: number) => f % step === 0 || (f % half === 0 && (strong.has(f - half) || (sameBatch(f, f + half) && strong.has(f + half))));
    for (let f = 0; f < frameCount; f += 2) {
      windowFrameCount.of++;
      if (emptyClip) windowFrameCount.emptyOf++;
      if (looked(f)) {
        windowFrameCount.ran++;
        if (emptyClip) windowFrameCount.emptyRan++;
      }
    }
    return withoutTier(obs, 'embedding', looked);
  };
}

function main(argv: string[]): void {
  const program = new Command('rescore')
    .description('re-scores a recorded accuracy-bench run under variants of the clip aggregation')
    .argument('<result>', "the run's accuracy-result.json")
    .argument('<record>', 'the observations it recorded with --record')
    .option('--only <text>', 'only the variants whose name contains this (and the product)')
    .parse(argv);
  const [resultFile, recordFile] = program.args;
  const only = program.opts<{ only?: string }>().only;
  let run: RecordedRun;
  try {
    run = readRecordedRun(resultFile, recordFile);
  } catch (e) {
    return fail((e as Error).message);
  }
  const { plan, registered, byClip, clips, aggregate: base } = run;
  const records = [...byClip.values()];
  const stats = { likenessOnly: 0, withBox: 0 };
  for (const r of records) for (const list of Object.values(r.observations)) for (const o of list) if (o.embedding && !o.keypoints) (stats.likenessOnly++, o.embedding.box && stats.withBox++);
  console.log(`${clips.length}/${plan.clips.length} clips recorded, ${registered.length} characters; likeness-only observations ${stats.likenessOnly} (${stats.withBox} with a window)`);

  const fusion = (f: Partial<FusionParams>) => ({ fusion: { ...base.fusion, ...f } });
  const all: Variant[] = [
    { name: 'product' },
    { name: 'without the verified lift', params: fusion({ verifiedLift: 0 }) },
    ...[0.01, 0.2, 0.7].map((l) => ({ name: `verified lift ${l}`, params: fusion({ verifiedLift: l }) })),
    ...[0.15, 0.3].map((f) => ({ name: `keypoint floor ${f} (affine, no lift)`, params: fusion({ verifiedLift: 0 }), transform: keypointFloor(f, false) })),
    { name: 'keypoint floor 0.3, unverified too (no lift)', params: fusion({ verifiedLift: 0 }), transform: keypointFloor(0.3, true) },
    ...[0.2, 0.4].map((w) => ({ name: `likeness weight ${w}`, params: fusion({ embeddingWeight: w }) })),
    ...[[0.4, 0.95], [0.6, 0.95], [0.55, 0.9]].map(([f, c]) => ({ name: `calibration ${f}-${c}`, transform: recalibrate(f, c) })),
    { name: 'likeness alone never reaching review', params: fusion({ strongLikeness: undefined }) },
    ...[0.8, 0.85, 0.9, 0.95].map((from) => ({ name: `likeness review from ${from}`, params: withLikenessReview({ ...base, ...fusion({ strongLikeness: undefined }) }, from) })),
    ...[[3, 0.5], [3, 2], [1.5, 1], [6, 1]].map(([spanSec, weight]) => ({ name: `rivalry span ${spanSec} weight ${weight}`, params: { rivalry: { spanSec, weight } } })),
    ...[1, 2].map((span) => ({ name: `likeness support span ${span} alpha 0.25`, transform: likenessSupport(span, 0.25) })),
    ...[0.6, 0.8].map((pen) => ({ name: `likeness consistency span 0.6 penalty ${pen}`, transform: likenessConsistency(0.6, 0.1, pen) })),
    { name: 'likeness consistency span 1.1 penalty 0.3', transform: likenessConsistency(1.1, 0.1, 0.3) },
    ...[[2, 1], [2, 0]].map(([step, phase]) => ({ name: `keypoints on frames ${phase} mod ${step}`, transform: keypointFrames(step, phase) })),
    ...(['any', 'verified'] as const).map((d) => ({ name: `keypoints on frames 1 mod 2 + next to ${d} hits`, transform: keypointFrames(2, 1, d) })),
    ...[3, 4].map((step) => ({ name: `keypoints on frames ${step - 1} mod ${step} + growing around verified hits`, transform: keypointFrames(step, step - 1, 'verified') })),
    { name: 'keypoints on frames 1 mod 2 + where a verified copy starts or ends', transform: keypointEdges() },
    { name: 'windows on frames 0 mod 4', transform: windowFrames(4, Infinity) },
    ...[0.5, 0.6].map((t) => ({ name: `windows on frames 0 mod 4 + next to likeness ${t}`, transform: windowFrames(4, t) })),
  ];
  const variants = only ? all.filter((v) => v.name === 'product' || v.name.includes(only)) : all;
  for (const v of variants) {
    const p: AggregateParams = { ...base, ...v.params };
    const results: ClipResult[] = clips.map((clip) => {
      const rec = byClip.get(clip.id)!;
      let obs = new Map(Object.entries(rec.observations));
      emptyClip = clip.kind === 'empty';
      if (v.transform) obs = v.transform(obs, rec.frameTimes.length);
      // The misses' causes, for the product's own observations (a variant's transform may change them).
      const diagnosis = v.name === 'product' && clip.truthCharacter ? diagnose(obs, clip.truthCharacter) : undefined;
      return { ...clipResultOf(clip, rec, obs, registered, p), ...(diagnosis ? { diagnosis } : {}) };
    });
    const k = evaluate(plan, results, registered).kagami;
    const ran = orbFrames.of ? ` keypoint tier on ${((100 * orbFrames.ran) / orbFrames.of).toFixed(0)} % of frames` : '';
    orbFrames.ran = orbFrames.of = 0;
    const pc = (a: number, b: number) => ((100 * a) / b).toFixed(0);
    const w = windowFrameCount;
    const windowed = w.of ? ` windows on ${pc(w.ran, w.of)} % of the even frames (${pc(w.emptyRan, w.emptyOf)} % in empty clips)` : '';
    w.ran = w.of = w.emptyRan = w.emptyOf = 0;
    console.log(`${figuresLine(v.name, k, 44)}${ran}${windowed}`);
    console.log(`${''.padEnd(44)} flagged by the verdicts: ${describeVerdicts(k.verdicts)}`);
    if (v.name === 'product') printMissCauses(k.failures);
  }
}

function fail(message: string): void {
  process.stderr.write(`rescore: ${message}\n`);
  process.exitCode = 2;
}

main(process.argv);

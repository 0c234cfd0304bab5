import { fuseFrame, type FusionParams, DEFAULT_FUSION } from './fuse';
import type { CharacterResult, Evidence, FrameObservation, Segment, Thresholds, Verdict } from './types';

export interface AggregateParams {
  thresholds: Thresholds;
  fusion: FusionParams;
  /** Two matched frames at most this far apart belong to one segment (bridges a missed frame or two). */
  mergeGapSec: number;
  /**
   * A character whose best frame stays below review still says when it was most likely seen: its
   * segments are then the frames scoring at least this fraction of its best frame.
   */
  hintFraction: number;
}

export const DEFAULT_THRESHOLDS: Thresholds = { match: 0.6, review: 0.35 };
export const DEFAULT_AGGREGATE: AggregateParams = { thresholds: DEFAULT_THRESHOLDS, fusion: DEFAULT_FUSION, mergeGapSec: 1.5, hintFraction: 0.8 };

export function verdictFor(score: number, t: Thresholds): Verdict {
  if (score >= t.match) return 'match';
  if (score >= t.review) return 'review';
  return 'clear';
}

/**
 * Turns one character's per-frame observations into its result for the clip.
 *
 * - score: the best fused frame score;
 * - segments: runs of frames scoring at least the review threshold, merged across short gaps; a
 *   segment reaches halfway to the neighbouring sampled frames (the best estimate of when the
 *   character entered and left, given only the samples), clamped to the clip. When no frame reaches
 *   review (a weak likeness), the runs of frames within `hintFraction` of the best frame instead:
 *   a reviewer of a low score still learns where to look;
 * - evidence: the best frame, its reference and the tier that carried it.
 *
 * `frameTimes` are the times of all sampled frames, ascending; `durationSec` bounds the segments.
 */
export function aggregateCharacter(
  characterId: string,
  observations: FrameObservation[],
  frameTimes: number[],
  durationSec: number,
  p: AggregateParams = DEFAULT_AGGREGATE,
): CharacterResult {
  const scored = observations
    .map((o) => ({ o, s: fuseFrame(o, p.fusion) }))
    .sort((a, b) => a.o.timeSec - b.o.timeSec);
  let best = scored[0];
  for (const x of scored) if (!best || x.s > best.s) best = x;
  const score = best ? best.s : 0;
  const verdict = verdictFor(score, p.thresholds);
  const hits = scored.filter((x) => x.s >= p.thresholds.review).map((x) => x.o.timeSec);
  const hinted = !hits.length && score > 0;
  const segmentTimes = hinted ? scored.filter((x) => x.s >= p.hintFraction * score).map((x) => x.o.timeSec) : hits;
  const segments = toSegments(segmentTimes, frameTimes, durationSec, p.mergeGapSec);
  const evidence = best ? evidenceOf(best.o, best.s) : { frameIndex: -1, timeSec: 0, referenceId: '', similarity: 0, kind: 'likeness' as const };
  const reason = !best
    ? 'no frame resembled any reference'
    : `${verdict}: best frame at ${evidence.timeSec.toFixed(2)} s scored ${score.toFixed(3)} (` +
      (evidence.kind === 'copy' ? `${evidence.inliers} geometrically consistent keypoints` : 'appearance similarity only') +
      `), ${hits.length} frame(s) at or above the review threshold ${p.thresholds.review}` +
      (hinted ? `; the segments mark the ${segmentTimes.length} frame(s) within ${Math.round(p.hintFraction * 100)} % of its best` : '');
  return { characterId, score, verdict, kind: evidence.kind, framesMatched: hits.length, segments, evidence, reason };
}

function evidenceOf(o: FrameObservation, s: number): Evidence {
  const kp = o.keypoints;
  const copy = !!kp && kp.score > 0 && kp.score >= (o.embedding?.score ?? 0) * DEFAULT_FUSION.embeddingWeight;
  if (copy && kp) {
    return { frameIndex: o.frameIndex, timeSec: o.timeSec, referenceId: kp.referenceId, similarity: s, kind: 'copy', inliers: kp.inliers, mirrored: kp.mirrored, box: kp.box };
  }
  const box = o.embedding?.box;
  return { frameIndex: o.frameIndex, timeSec: o.timeSec, referenceId: o.embedding?.referenceId ?? kp?.referenceId ?? '', similarity: s, kind: 'likeness', ...(box ? { box } : {}) };
}

/** Groups hit times into segments; see aggregateCharacter. Pure; exported for tests. */
export function toSegments(hitTimes: number[], frameTimes: number[], durationSec: number, mergeGapSec: number): Segment[] {
  if (!hitTimes.length) return [];
  const times = [...frameTimes].sort((a, b) => a - b);
  const end = durationSec > 0 ? durationSec : Math.max(...times, ...hitTimes);
  const neighbour = (t: number, dir: -1 | 1): number | undefined => {
    const i = times.findIndex((x) => Math.abs(x - t) < 1e-6);
    const j = i + dir;
    return i >= 0 && j >= 0 && j < times.length ? times[j] : undefined;
  };
  const runs: Array<[number, number]> = [];
  for (const t of [...hitTimes].sort((a, b) => a - b)) {
    const last = runs[runs.length - 1];
    if (last && t - last[1] <= mergeGapSec) last[1] = t;
    else runs.push([t, t]);
  }
  return runs.map(([a, b]) => {
    const prev = neighbour(a, -1);
    const next = neighbour(b, 1);
    const startSec = prev === undefined ? 0 : (prev + a) / 2;
    const endSec = next === undefined ? end : (b + next) / 2;
    return { startSec: round3(Math.max(0, startSec)), endSec: round3(Math.min(end, Math.max(endSec, startSec))) };
  });
}

const round3 = (v: number) => Math.round(v * 1000) / 1000;

/** The clip's verdict: the most serious of its characters'. */
export function clipVerdict(results: Array<{ verdict: Verdict }>): Verdict {
  if (results.some((r) => r.verdict === 'match')) return 'match';
  if (results.some((r) => r.verdict === 'review')) return 'review';
  return 'clear';
}

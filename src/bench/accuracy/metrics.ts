/**
 * Pure evaluation functions of the accuracy benchmark.
 *
 * The unit of evaluation is a (clip, registered character) pair with a score: positive when that
 * character really appears in the clip. A score ≤ 0 means "not retrieved" (it never counts as a
 * detection, at any threshold).
 *
 * AP is the step-wise (non-interpolated) average precision over distinct score thresholds, as in
 * scikit-learn's `average_precision_score`: AP = Σ_t (R_t − R_{t−1}) · P_t, thresholds taken from
 * high to low, all pairs tied at a threshold entering together (no optimistic tie-breaking).
 * Positives never retrieved add recall 0, so they lower AP. µAP is this AP over all pairs pooled.
 */

import { intersectionArea, iou, type Box } from '../../synthetic/art';

export interface ScoredPair {
  score: number;
  positive: boolean;
}

export interface PrPoint {
  threshold: number;
  precision: number;
  recall: number;
  /** Detections at this threshold (score ≥ threshold). */
  tp: number;
  fp: number;
}

/** Precision/recall at every distinct positive score, thresholds descending. */
export function precisionRecallCurve(pairs: readonly ScoredPair[]): PrPoint[] {
  const positives = pairs.filter((p) => p.positive).length;
  const sorted = pairs.filter((p) => p.score > 0 && Number.isFinite(p.score)).sort((a, b) => b.score - a.score);
  const out: PrPoint[] = [];
  let tp = 0;
  let fp = 0;
  for (let i = 0; i < sorted.length; ) {
    const t = sorted[i].score;
    while (i < sorted.length && sorted[i].score === t) {
      if (sorted[i].positive) tp++;
      else fp++;
      i++;
    }
    out.push({ threshold: t, precision: tp / (tp + fp), recall: positives ? tp / positives : 0, tp, fp });
  }
  return out;
}

/** Average precision (see the module comment); NaN when there are no positives. */
export function averagePrecision(pairs: readonly ScoredPair[]): number {
  const positives = pairs.filter((p) => p.positive).length;
  if (!positives) return NaN;
  let ap = 0;
  let prevRecall = 0;
  for (const p of precisionRecallCurve(pairs)) {
    ap += (p.recall - prevRecall) * p.precision;
    prevRecall = p.recall;
  }
  return ap;
}

/**
 * The highest recall reachable with precision ≥ `minPrecision`, and the (highest) threshold that
 * reaches it; recall 0 and threshold Infinity when no threshold is precise enough.
 */
export function recallAtPrecision(pairs: readonly ScoredPair[], minPrecision: number): { recall: number; threshold: number } {
  let best = { recall: 0, threshold: Infinity };
  for (const p of precisionRecallCurve(pairs)) {
    if (p.precision >= minPrecision - 1e-12 && p.recall > best.recall) best = { recall: p.recall, threshold: p.threshold };
  }
  return best;
}

/** Fraction of `scores` at or above `threshold` (0 for an empty list). */
export function rateAtOrAbove(scores: readonly number[], threshold: number): number {
  return scores.length ? scores.filter((s) => s >= threshold).length / scores.length : 0;
}

export interface Interval {
  startSec: number;
  endSec: number;
}

/** Merges overlapping/touching intervals; drops empty ones. */
export function unionIntervals(xs: readonly Interval[]): Interval[] {
  const s = xs.filter((x) => x.endSec > x.startSec).map((x) => ({ ...x })).sort((a, b) => a.startSec - b.startSec);
  const out: Interval[] = [];
  for (const x of s) {
    const last = out[out.length - 1];
    if (last && x.startSec <= last.endSec) last.endSec = Math.max(last.endSec, x.endSec);
    else out.push(x);
  }
  return out;
}

const total = (xs: readonly Interval[]) => xs.reduce((a, x) => a + (x.endSec - x.startSec), 0);

/**
 * Temporal IoU of two sets of intervals: |pred ∩ truth| / |pred ∪ truth| (lengths in seconds).
 * 1 when both are empty (nothing predicted where nothing was), 0 when only one is.
 */
export function temporalIoU(pred: readonly Interval[], truth: readonly Interval[]): number {
  const p = unionIntervals(pred);
  const t = unionIntervals(truth);
  const lp = total(p);
  const lt = total(t);
  if (lp === 0 && lt === 0) return 1;
  let inter = 0;
  for (const a of p) for (const b of t) inter += Math.max(0, Math.min(a.endSec, b.endSec) - Math.max(a.startSec, b.startSec));
  const union = lp + lt - inter;
  return union > 0 ? inter / union : 0;
}

/**
 * Groups the times of frames that scored at or above a threshold into intervals: consecutive hits
 * at most `mergeGapSec` apart form one run, extended halfway to the neighbouring sampled frames.
 * (The same rule as Kagami's report segments; used for the pHash peer.)
 */
export function hitsToIntervals(frameTimes: readonly number[], hits: readonly boolean[], durationSec: number, mergeGapSec: number): Interval[] {
  const runs: Array<[number, number]> = [];
  for (let i = 0; i < frameTimes.length; i++) {
    if (!hits[i]) continue;
    const last = runs[runs.length - 1];
    if (last && frameTimes[i] - frameTimes[last[1]] <= mergeGapSec) last[1] = i;
    else runs.push([i, i]);
  }
  return runs.map(([a, b]) => ({
    startSec: a > 0 ? (frameTimes[a - 1] + frameTimes[a]) / 2 : 0,
    endSec: b < frameTimes.length - 1 ? (frameTimes[b] + frameTimes[b + 1]) / 2 : durationSec,
  }));
}

export interface Summary {
  pairs: number;
  positives: number;
  ap: number;
  recallAtP90: number;
  thresholdAtP90: number;
  recallAtP95: number;
  thresholdAtP95: number;
}

export function summarise(pairs: readonly ScoredPair[]): Summary {
  const r90 = recallAtPrecision(pairs, 0.9);
  const r95 = recallAtPrecision(pairs, 0.95);
  return {
    pairs: pairs.length,
    positives: pairs.filter((p) => p.positive).length,
    ap: averagePrecision(pairs),
    recallAtP90: r90.recall,
    thresholdAtP90: r90.threshold,
    recallAtP95: r95.recall,
    thresholdAtP95: r95.threshold,
  };
}

export function mean(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

/** Intersection over union of two boxes: the synthetic art's own (0 when either is empty). */
export { iou as boxIoU, type Box };

/** `box` cut to the frame (undefined when nothing of it is inside). */
export function clipBox(box: Box, width: number, height: number): Box | undefined {
  const x = Math.max(0, box.x);
  const y = Math.max(0, box.y);
  const w = Math.min(width, box.x + box.width) - x;
  const h = Math.min(height, box.y + box.height) - y;
  return w > 0 && h > 0 ? { x, y, width: w, height: h } : undefined;
}

/**
 * How well a set of square proposal windows covers a character's (in-frame) box: the best IoU, and
 * whether some window is *usable* by a crop descriptor trained on characters at 55–95 % of the crop
 * side, partly cut: it holds at least 80 % of the box and the box's long side is 40–100 % of its side.
 */
export function windowCoverage(truth: Box, windows: readonly { x: number; y: number; size: number }[]): { bestIoU: number; usable: boolean } {
  let bestIoU = 0;
  let usable = false;
  const area = truth.width * truth.height;
  const long = Math.max(truth.width, truth.height);
  for (const w of windows) {
    const sq = { x: w.x, y: w.y, width: w.size, height: w.size };
    bestIoU = Math.max(bestIoU, iou(truth, sq));
    if (area > 0 && intersectionArea(truth, sq) / area >= 0.8 && long >= 0.4 * w.size && long <= w.size) usable = true;
  }
  return { bestIoU, usable };
}

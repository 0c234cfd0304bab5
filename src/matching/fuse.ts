import type { FrameObservation } from './types';

export interface FusionParams {
  /** How far the likeness tier alone can raise a score: at most this, so it cannot make a `match` on its own. */
  embeddingWeight: number;
  /**
   * Verified keypoints outrank likeness alone: a frame whose keypoints verified scores at least
   * embeddingWeight + verifiedLift × k (k its keypoint score), above anything the likeness tier can
   * reach on its own. 0 turns it off. Kept at most `review − embeddingWeight`, a weak placement
   * lifted this way stays below review: the order of the scores changes, no verdict does.
   */
  verifiedLift: number;
  /**
   * Likeness strong enough to review: a calibrated likeness e of at least `from` counts
   * `score` + (cap − score)·(e − from)/(1 − from) instead of embeddingWeight·e, so it reaches the
   * review threshold (`score`) without ever making a match (`cap` stays below it). Unset: likeness
   * alone stays under embeddingWeight.
   */
  strongLikeness?: { from: number; score: number; cap: number };
}

// verifiedLift: 200-clip accuracy bench, 150 characters, re-scored from recorded scans: µAP 0.760 →
// 0.773 (seed 1) and 0.757 → 0.776 (seed 2); any lift from 0.01 to 0.7 read the same.
export const DEFAULT_FUSION: FusionParams = { embeddingWeight: 0.3, verifiedLift: 0.05 };

/**
 * One frame's score for one character, in [0,1], from the two tiers. Geometric verification is the
 * high-precision signal and passes through; the likeness tier adds evidence as an independent
 * probability, weighted down (frozen ImageNet features separate cartoon characters poorly).
 * 1 − (1 − k)(1 − w·e): monotone in both, equal to k when e = 0, never above 1. A weak
 * verified placement (k below about w) is lifted to w + verifiedLift·k: the likeness tier alone
 * never outranks geometric verification (a few verified inliers are more reliable than a strong
 * resemblance, which unrelated characters of one style also reach).
 */
export function fuseFrame(o: Pick<FrameObservation, 'keypoints' | 'embedding'>, p: FusionParams = DEFAULT_FUSION): number {
  const k = clamp01(o.keypoints?.score ?? 0);
  const e = clamp01(o.embedding?.score ?? 0);
  const fused = 1 - (1 - k) * (1 - likenessPart(e, p));
  if (p.verifiedLift > 0 && verifiedScore(o) > 0) return Math.max(fused, Math.min(1, p.embeddingWeight + p.verifiedLift * k));
  return fused;
}

/** What a calibrated likeness e in [0,1] contributes to a frame's score (fuseFrame). */
export function likenessPart(e: number, p: FusionParams = DEFAULT_FUSION): number {
  const strong = p.strongLikeness;
  if (strong && pastReviewPoint(e, p)) return strong.score + ((strong.cap - strong.score) * (e - strong.from)) / Math.max(1e-9, 1 - strong.from);
  return p.embeddingWeight * e;
}

/** Whether a calibrated likeness e reaches the model's review point (FusionParams.strongLikeness). */
export function pastReviewPoint(e: number, p: FusionParams): boolean {
  return !!p.strongLikeness && e >= p.strongLikeness.from;
}

/** The frame's keypoint score when its keypoints verified (a copy's evidence), else 0. */
export function verifiedScore(o: Pick<FrameObservation, 'keypoints'>): number {
  return o.keypoints && o.keypoints.verified !== false ? o.keypoints.score : 0;
}

/** Maps a raw cosine to [0,1] linearly between the model's `floor` (unrelated images) and `ceil` (same image). */
export function calibrateCosine(cosine: number, floor: number, ceil: number): number {
  if (!(ceil > floor)) return 0;
  return clamp01((cosine - floor) / (ceil - floor));
}

export function clamp01(v: number): number {
  return Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : 0;
}

import type { FrameObservation } from './types';

export interface FusionParams {
  /** How far the likeness tier alone can raise a score: at most this, so it cannot make a `match` on its own. */
  embeddingWeight: number;
}

export const DEFAULT_FUSION: FusionParams = { embeddingWeight: 0.3 };

/**
 * One frame's score for one character, in [0,1], from the two tiers. Geometric verification is the
 * high-precision signal and passes through; the likeness tier adds evidence as an independent
 * probability, weighted down (frozen ImageNet features separate cartoon characters poorly).
 * 1 − (1 − k)(1 − w·e): monotone in both, equal to k when e = 0, never above 1.
 */
export function fuseFrame(o: Pick<FrameObservation, 'keypoints' | 'embedding'>, p: FusionParams = DEFAULT_FUSION): number {
  const k = clamp01(o.keypoints?.score ?? 0);
  const e = clamp01(o.embedding?.score ?? 0);
  return 1 - (1 - k) * (1 - p.embeddingWeight * e);
}

/** Maps a raw cosine to [0,1] linearly between the model's `floor` (unrelated images) and `ceil` (same image). */
export function calibrateCosine(cosine: number, floor: number, ceil: number): number {
  if (!(ceil > floor)) return 0;
  return clamp01((cosine - floor) / (ceil - floor));
}

export function clamp01(v: number): number {
  return Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : 0;
}

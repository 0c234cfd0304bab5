/** What one frame says about one character, from each signal. */
export interface FrameObservation {
  frameIndex: number;
  timeSec: number;
  characterId: string;
  /**
   * Verification tier: local features that agree on one geometric transform. `verified: false`
   * when the silhouette under the transform did not agree (a down-weighted shape score: likeness
   * evidence, not a copy); absent means verified.
   */
  keypoints?: { score: number; inliers: number; referenceId: string; mirrored: boolean; box: Box; verified?: boolean };
  /** Likeness tier: calibrated embedding similarity in [0,1], the nearest reference and, for crop models, the window. */
  embedding?: { score: number; cosine: number; referenceId: string; box?: Box };
}

export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

export type Verdict = 'match' | 'review' | 'clear';

export interface Thresholds {
  /** A character whose score reaches this is a `match`. */
  match: number;
  /** … and one that reaches this is a `review` case. */
  review: number;
}

export interface Segment {
  startSec: number;
  endSec: number;
}

export interface Evidence {
  frameIndex: number;
  timeSec: number;
  referenceId: string;
  /** Frame-level fused score of the evidence frame, [0,1]. */
  similarity: number;
  /** `copy`: the same drawing (geometric verification); `likeness`: similar appearance only. */
  kind: 'copy' | 'likeness';
  inliers?: number;
  mirrored?: boolean;
  box?: Box;
}

export interface CharacterResult {
  characterId: string;
  score: number;
  verdict: Verdict;
  kind: 'copy' | 'likeness';
  framesMatched: number;
  segments: Segment[];
  evidence: Evidence;
  /** Why the verdict is what it is, in words. */
  reason: string;
}

/**
 * Why a positive clip scored what it did, from its frame observations: which tier saw the true
 * character at all, and whether its likeness lost to another character's. The misses of a run then
 * say which part of the matcher to work on (a near copy the keypoints never found is ORB's problem;
 * one whose likeness another character outscored is the descriptor's).
 */
import type { FrameObservation } from '../../matching/types';

/**
 * - copy: keypoints verified on some frame (the verification tier found it);
 * - unverified: keypoints agreed on a transform but the silhouette never verified;
 * - likeness-outranked: likeness only, and another character's best likeness in the clip was higher;
 * - likeness-only: likeness only, and no other character's was higher;
 * - unseen: no observation of the character in any frame.
 */
export type Cause = 'copy' | 'unverified' | 'likeness-outranked' | 'likeness-only' | 'unseen';
export const CAUSES: readonly Cause[] = ['copy', 'unverified', 'likeness-outranked', 'likeness-only', 'unseen'];

export interface Diagnosis {
  cause: Cause;
  /** Most inliers on a frame whose keypoints verified (0: none). */
  verifiedInliers: number;
  /** Most inliers on a frame whose keypoints did not verify (0: none). */
  unverifiedInliers: number;
  /** The true character's best likeness score over the clip (0: none). */
  likeness: number;
  /** The best likeness score of any other observed key (a character or a negative), and whose. */
  rivalLikeness: number;
  rival?: string;
}

export function diagnose(observations: ReadonlyMap<string, readonly FrameObservation[]>, truth: string): Diagnosis {
  let verifiedInliers = 0;
  let unverifiedInliers = 0;
  let likeness = 0;
  for (const o of observations.get(truth) ?? []) {
    if (o.keypoints) {
      if (o.keypoints.verified === false) unverifiedInliers = Math.max(unverifiedInliers, o.keypoints.inliers);
      else verifiedInliers = Math.max(verifiedInliers, o.keypoints.inliers);
    }
    if (o.embedding) likeness = Math.max(likeness, o.embedding.score);
  }
  let rivalLikeness = 0;
  let rival: string | undefined;
  for (const [key, list] of observations) {
    if (key === truth) continue;
    for (const o of list) {
      if (o.embedding && o.embedding.score > rivalLikeness) {
        rivalLikeness = o.embedding.score;
        rival = key;
      }
    }
  }
  const cause: Cause =
    verifiedInliers > 0 ? 'copy'
    : unverifiedInliers > 0 ? 'unverified'
    : likeness > 0 ? (rivalLikeness > likeness ? 'likeness-outranked' : 'likeness-only')
    : 'unseen';
  return { cause, verifiedInliers, unverifiedInliers, likeness, rivalLikeness, ...(rival ? { rival } : {}) };
}

/** A diagnosis in a few words, for the bench's list of misses. */
export function describeDiagnosis(d: Diagnosis): string {
  const like = `likeness ${d.likeness.toFixed(2)}` + (d.rival ? ` vs ${d.rivalLikeness.toFixed(2)} ${d.rival}` : '');
  switch (d.cause) {
    case 'copy':
      return `copy, ${d.verifiedInliers} inliers verified`;
    case 'unverified':
      return `${d.unverifiedInliers} inliers, outline not verified; ${like}`;
    case 'unseen':
      return 'seen by neither tier';
    default:
      return `no keypoints; ${like}`;
  }
}

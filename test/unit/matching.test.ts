import { aggregateCharacter, aggregateClip, clipVerdict, DEFAULT_AGGREGATE, toSegments, verdictFor, withLikenessReview } from '../../src/matching/aggregate';
import { calibrateCosine, fuseFrame, likenessPart } from '../../src/matching/fuse';
import type { FrameObservation } from '../../src/matching/types';

const box = { x: 0, y: 0, width: 10, height: 10 };
const kp = (score: number, inliers = 20) => ({ score, inliers, referenceId: 'r1', mirrored: false, box });
const emb = (score: number) => ({ score, cosine: 0.9 + score / 10, referenceId: 'r2' });

describe('fuseFrame', () => {
  test.each([
    ['nothing', {}, 0],
    ['keypoints only pass through', { keypoints: kp(0.8) }, 0.8],
    ['embedding alone is capped by its weight', { embedding: emb(1) }, 0.3],
    ['both add as independent evidence', { keypoints: kp(0.5), embedding: emb(1) }, 1 - 0.5 * 0.7],
    ['out-of-range inputs are clamped', { keypoints: kp(7), embedding: emb(-3) }, 1],
    ['weak verified keypoints outrank any likeness alone, below review', { keypoints: kp(0.1) }, 0.3 + 0.05 * 0.1],
    ['unverified keypoints are not lifted', { keypoints: { ...kp(0.1), verified: false } }, 0.1],
  ])('%s', (_n, o, want) => {
    expect(fuseFrame(o as Pick<FrameObservation, 'keypoints' | 'embedding'>)).toBeCloseTo(want, 6);
  });

  test('is monotone in each tier', () => {
    for (const e of [0, 0.3, 0.9]) {
      let prev = -1;
      for (const k of [0, 0.1, 0.5, 0.9, 1]) {
        const s = fuseFrame({ keypoints: kp(k), embedding: emb(e) });
        expect(s).toBeGreaterThanOrEqual(prev);
        prev = s;
      }
    }
  });
});

describe('likeness review (a model naming its review point)', () => {
  const p = withLikenessReview(DEFAULT_AGGREGATE, 0.8);
  const { review, match } = DEFAULT_AGGREGATE.thresholds;

  test('likeness below the point keeps its weight; at the point it reaches review, at 1 it stays below match', () => {
    expect(likenessPart(0.79, p.fusion)).toBeCloseTo(0.3 * 0.79, 6);
    expect(likenessPart(0.8, p.fusion)).toBeCloseTo(review, 6);
    expect(likenessPart(1, p.fusion)).toBeCloseTo(review + 0.6 * (match - review), 6);
    expect(likenessPart(1, p.fusion)).toBeLessThan(match);
    let prev = -1;
    for (let e = 0; e <= 1.0001; e += 0.01) {
      const s = likenessPart(e, p.fusion);
      expect(s).toBeGreaterThanOrEqual(prev);
      prev = s;
    }
  });

  test('a model without a review point, or one at 1, changes nothing', () => {
    expect(withLikenessReview(DEFAULT_AGGREGATE, undefined)).toBe(DEFAULT_AGGREGATE);
    expect(withLikenessReview(DEFAULT_AGGREGATE, 1)).toBe(DEFAULT_AGGREGATE);
    // nor do thresholds out of order (the configuration refuses them)
    expect(withLikenessReview({ ...DEFAULT_AGGREGATE, thresholds: { match: 0.3, review: 0.5 } }, 0.8).fusion.strongLikeness).toBeUndefined();
  });

  test('follows the verdict thresholds it is given', () => {
    const q = withLikenessReview({ ...DEFAULT_AGGREGATE, thresholds: { match: 0.8, review: 0.5 } }, 0.9);
    expect(q.fusion.strongLikeness?.from).toBe(0.9);
    expect(q.fusion.strongLikeness?.score).toBe(0.5);
    expect(q.fusion.strongLikeness?.cap).toBeCloseTo(0.5 + 0.6 * 0.3, 9);
  });

  test('a strong likeness alone is a review case, a weaker one stays clear, and a copy still outranks it', () => {
    const times = [0, 0.5, 1, 1.5, 2];
    const at = (t: number, e: number): FrameObservation => ({ frameIndex: times.indexOf(t), timeSec: t, characterId: 'c', embedding: emb(e) });
    const strong = aggregateCharacter('c', [at(0.5, 0.6), at(1, 0.95), at(1.5, 0.7)], times, 2.5, p);
    expect(strong.verdict).toBe('review');
    expect(strong.kind).toBe('likeness');
    expect(strong.score).toBeGreaterThanOrEqual(review);
    expect(strong.segments.length).toBe(1);
    expect(strong.reason).toMatch(/^review: .*\(appearance similarity only, cosine 0\.995, past the model's review point\)/);
    expect(aggregateCharacter('c', [at(1, 0.75)], times, 2.5, p).reason).toMatch(/\(appearance similarity only, cosine 0\.975\)/);
    const weak = aggregateCharacter('c', [at(1, 0.75)], times, 2.5, p);
    expect(weak.verdict).toBe('clear');
    expect(weak.score).toBeCloseTo(0.3 * 0.75, 6);
    // the same strong likeness without the model's review point: clear, as before
    expect(aggregateCharacter('c', [at(1, 0.95)], times, 2.5).verdict).toBe('clear');
    const copy = aggregateCharacter('c', [{ ...at(1, 0), keypoints: kp(0.9) }], times, 2.5, p);
    expect(copy.score).toBeGreaterThan(strong.score);
    expect(copy.kind).toBe('copy');
    // weak verified keypoints under a stronger likeness: a likeness, and the reason names both
    const both = aggregateCharacter('c', [{ ...at(1, 0.95), keypoints: kp(0.05) }], times, 2.5, p);
    expect(both.kind).toBe('likeness');
    expect(both.reason).toContain("(appearance similarity with 20 geometrically consistent keypoints, cosine 0.995, past the model's review point)");
  });

  test("a frame whose own windows found the character much weaker does not borrow a neighbour's strong likeness", () => {
    const times = [0, 1, 2, 3, 4];
    const at = (t: number, e: number): FrameObservation => ({ frameIndex: times.indexOf(t), timeSec: t, characterId: 'c', embedding: emb(e) });
    // 0 s and 3 s saw the character weakly, 2 s nearly as strongly as 1 s: the review segment is 1-2 s.
    const r = aggregateCharacter('c', [at(0, 0.1), at(1, 0.95), at(2, 0.8), at(3, 0.1)], times, 4.5, p);
    expect(r.verdict).toBe('review');
    expect(r.segments).toEqual([{ startSec: 0.5, endSec: 2.5 }]);
    // A frame with keypoints still borrows it (one appearance seen by both tiers on neighbouring frames).
    const withKp = aggregateCharacter('c', [at(0, 0.1), at(1, 0.95), { ...at(2, 0.1), keypoints: { ...kp(0.05), verified: false } }], times, 4.5, p);
    expect(withKp.segments).toEqual([{ startSec: 0.5, endSec: 2.5 }]);
  });
});

describe('calibrateCosine', () => {
  test.each([
    [0.95, 0.9, 1.0, 0.5],
    [0.5, 0.9, 1.0, 0],
    [1.2, 0.9, 1.0, 1],
    [0.95, 1.0, 0.9, 0], // degenerate calibration never scores
    [NaN, 0.9, 1.0, 0],
  ])('cos %p in [%p,%p] → %p', (c, f, ce, want) => expect(calibrateCosine(c, f, ce)).toBeCloseTo(want, 6));
});

describe('verdictFor', () => {
  const t = { match: 0.6, review: 0.35 };
  test.each([
    [0.6, 'match'],
    [0.99, 'match'],
    [0.59, 'review'],
    [0.35, 'review'],
    [0.34, 'clear'],
    [0, 'clear'],
  ])('%p → %p', (s, v) => expect(verdictFor(s, t)).toBe(v));
});

describe('toSegments', () => {
  const grid = Array.from({ length: 20 }, (_, i) => i * 0.5); // 0 … 9.5 s at 2 fps
  test.each([
    ['no hits', [], []],
    ['a run reaches halfway to its unmatched neighbours', [2, 2.5, 3, 3.5], [{ startSec: 1.75, endSec: 3.75 }]],
    ['a run from the first frame starts at 0', [0, 0.5], [{ startSec: 0, endSec: 0.75 }]],
    ['a run to the last frame ends at the clip end', [9, 9.5], [{ startSec: 8.75, endSec: 10 }]],
    ['a short gap is bridged', [2, 2.5, 3.5, 4], [{ startSec: 1.75, endSec: 4.25 }]],
    ['a long gap splits', [1, 1.5, 5, 5.5], [{ startSec: 0.75, endSec: 1.75 }, { startSec: 4.75, endSec: 5.75 }]],
    ['a single frame gets half a step each side', [4], [{ startSec: 3.75, endSec: 4.25 }]],
  ])('%s', (_n, hits, want) => expect(toSegments(hits as number[], grid, 10, 1.5)).toEqual(want));
});

describe('aggregateCharacter', () => {
  const times = [0, 0.5, 1, 1.5, 2, 2.5, 3];
  const obs = (t: number, k?: number, e?: number): FrameObservation => ({
    frameIndex: times.indexOf(t),
    timeSec: t,
    characterId: 'c',
    ...(k !== undefined ? { keypoints: kp(k, Math.round(k * 40)) } : {}),
    ...(e !== undefined ? { embedding: emb(e) } : {}),
  });

  test('no observations: clear with zero score and no segments', () => {
    const r = aggregateCharacter('c', [], times, 3);
    expect(r).toMatchObject({ score: 0, verdict: 'clear', segments: [], framesMatched: 0 });
  });

  test('verified frames make a copy match with the best frame as evidence', () => {
    const r = aggregateCharacter('c', [obs(1, 0.7), obs(1.5, 0.9), obs(2, 0.65), obs(0, undefined, 0.2)], times, 3);
    expect(r.verdict).toBe('match');
    expect(r.kind).toBe('copy');
    // The likeness at 0 s is within mergeGapSec (1.5 s) of the best frame and adds to it: 1 - 0.1 * (1 - 0.3 * 0.2).
    expect(r.score).toBeCloseTo(0.906, 6);
    expect(r.evidence).toMatchObject({ timeSec: 1.5, referenceId: 'r1', kind: 'copy', inliers: 36 });
    expect(r.segments).toEqual([{ startSec: 0.75, endSec: 2.25 }]);
    expect(r.framesMatched).toBe(3);
    expect(r.reason).toMatch(/36 geometrically consistent keypoints/);
  });

  test('keypoints whose outline did not verify add to the likeness but make a likeness, not a copy', () => {
    const unverified = { ...kp(0.2, 15), verified: false };
    const r = aggregateCharacter('c', [{ ...obs(1, undefined, 0.8), keypoints: unverified }], times, 3);
    expect(r.score).toBeCloseTo(1 - 0.8 * (1 - 0.3 * 0.8), 6);
    expect(r.kind).toBe('likeness');
    expect(r.evidence).toMatchObject({ kind: 'likeness', referenceId: 'r2' });
    expect(r.evidence).not.toHaveProperty('inliers');
    expect(r.reason).toContain('appearance similarity and 15 keypoints agreeing on one transform, outline not verified');
    // Verified keypoints scoring as much as the likeness weighs make a copy.
    const v = aggregateCharacter('c', [{ ...obs(1, undefined, 0.8), keypoints: kp(0.3, 15) }], times, 3);
    expect(v.kind).toBe('copy');
    // Alone (no likeness in reach) the reason says so.
    const alone = aggregateCharacter('c', [{ ...obs(1), keypoints: unverified }], times, 3);
    expect(alone.reason).toMatch(/\(15 keypoints agreeing on one transform, outline not verified\)/);
    expect(alone.verdict).toBe('clear');
  });

  test('likeness alone never reaches a match', () => {
    const r = aggregateCharacter('c', times.map((t) => obs(t, undefined, 1)), times, 3);
    expect(r.kind).toBe('likeness');
    expect(r.verdict).not.toBe('match');
    expect(r.score).toBeLessThan(DEFAULT_AGGREGATE.thresholds.match);
  });

  test('below review, the segments mark the frames near the best one', () => {
    // best frame e=0.9 → 0.27; 0.8 of it is 0.216, i.e. e ≥ 0.72: frames 1, 1.5 and 3 (one run: the
    // 1.5 s gap is bridged), not frame 0.
    const r = aggregateCharacter('c', [obs(0, undefined, 0.5), obs(1, undefined, 0.8), obs(1.5, undefined, 0.9), obs(2.5, undefined, 0.6), obs(3, undefined, 0.75)], times, 3);
    expect(r.verdict).toBe('clear');
    expect(r.framesMatched).toBe(0);
    expect(r.segments).toEqual([{ startSec: 0.75, endSec: 3 }]);
    expect(r.reason).toMatch(/segments mark the 3 frame\(s\) within 80 % of its best/);
  });

  test('once a frame reaches review, weaker frames near the best one add no segment', () => {
    const r = aggregateCharacter('c', [obs(0, 0.5), obs(0.5, 0.45), obs(3, undefined, 1)], times, 3);
    expect(r.verdict).toBe('review');
    expect(r.score).toBeCloseTo(0.5, 6); // the likeness at 3 s is 2.5 s away: another appearance
    expect(r.segments).toEqual([{ startSec: 0, endSec: 0.75 }]);
    expect(r.reason).not.toMatch(/segments mark/);
  });

  test('keypoints and likeness of one appearance add up across neighbouring frames, not across a longer gap', () => {
    // Likeness is sampled on every other frame: the copy hit at 1.5 s and the likeness at 1 s are one appearance.
    const near = aggregateCharacter('c', [obs(1, undefined, 0.9), obs(1.5, 0.45)], times, 3);
    expect(near.score).toBeCloseTo(1 - 0.55 * (1 - 0.3 * 0.9), 6);
    expect(near.verdict).toBe('review');
    expect(near.kind).toBe('copy');
    expect(near.evidence).toMatchObject({ timeSec: 1.5, kind: 'copy' });
    expect(near.segments).toEqual([{ startSec: 1.25, endSec: 1.75 }]);
    const apart = aggregateCharacter('c', [obs(0, undefined, 0.9), obs(3, 0.45)], [0, 3], 3);
    expect(apart.score).toBeCloseTo(0.45, 6);
  });

  test('likeness evidence borrowed by a frame is reported on the frame it was seen in', () => {
    const box = { x: 10, y: 20, width: 189, height: 189 };
    const seen: FrameObservation = { ...obs(1, undefined, 0.9), embedding: { ...emb(0.9), box } };
    // A weak keypoint frame next to it borrows the likeness, and the likeness carries the score.
    const r = aggregateCharacter('c', [seen, obs(1.5, 0.05)], times, 3);
    expect(r.kind).toBe('likeness');
    expect(r.evidence).toMatchObject({ kind: 'likeness', timeSec: 1, frameIndex: times.indexOf(1), box });
  });

  test('likeness evidence carries the window it was found in', () => {
    const box = { x: 10, y: 20, width: 189, height: 189 };
    const weak = obs(0.5, undefined, 0.4);
    const strong: FrameObservation = { ...obs(1, undefined, 0.8), embedding: { ...emb(0.8), box } };
    const r = aggregateCharacter('c', [weak, strong], times, 3);
    expect(r.evidence).toMatchObject({ kind: 'likeness', timeSec: 1, box });
    expect(aggregateCharacter('c', [weak], times, 3).evidence.box).toBeUndefined();
  });
});

test('clipVerdict takes the most serious', () => {
  expect(clipVerdict([])).toBe('clear');
  expect(clipVerdict([{ verdict: 'clear' }, { verdict: 'review' }])).toBe('review');
  expect(clipVerdict([{ verdict: 'review' }, { verdict: 'match' }, { verdict: 'clear' }])).toBe('match');
});

describe('aggregateClip: likeness rivalry', () => {
  const times = Array.from({ length: 41 }, (_, i) => i * 0.5); // 0 … 20 s at 2 fps
  const at = (cid: string, t: number, k?: number, e?: number): FrameObservation => ({
    frameIndex: times.indexOf(t),
    timeSec: t,
    characterId: cid,
    ...(k !== undefined ? { keypoints: kp(k) } : {}),
    ...(e !== undefined ? { embedding: emb(e) } : {}),
  });
  const run = (obs: FrameObservation[], p = DEFAULT_AGGREGATE) => {
    const byChar = new Map<string, FrameObservation[]>();
    for (const o of obs) byChar.set(o.characterId, [...(byChar.get(o.characterId) ?? []), o]);
    return Object.fromEntries(aggregateClip(['a', 'b', 'c'], byChar, times, 20, p).map((r) => [r.characterId, r]));
  };
  const off = { ...DEFAULT_AGGREGATE, rivalry: { spanSec: 3, weight: 0 } };

  test('a weaker likeness at the same time loses weight × its shortfall; the stronger keeps its score', () => {
    const r = run([at('a', 5, undefined, 0.9), at('b', 5, undefined, 0.6)]);
    const w = DEFAULT_AGGREGATE.rivalry.weight;
    expect(r.a.score).toBeCloseTo(0.3 * 0.9, 6);
    expect(r.b.score).toBeCloseTo(0.3 * 0.6 - w * 0.3 * (0.9 - 0.6), 6);
    expect(r.b.reason).toContain("lowered because another character's likeness scored 0.270");
    expect(r.a.reason).not.toContain('lowered');
    // without rivalry both keep their own likeness
    const plain = run([at('a', 5, undefined, 0.9), at('b', 5, undefined, 0.6)], off);
    expect(plain.b.score).toBeCloseTo(0.3 * 0.6, 6);
    expect(r.c.score).toBe(0);
  });

  test('verified keypoints never lose, and characters further apart than the span do not compete', () => {
    const r = run([at('a', 5, undefined, 1), at('b', 5, 0.2, 0.2), at('c', 15, undefined, 0.5)]);
    // b's verified keypoints are weak, so its frame is lifted above any likeness alone (fuseFrame)
    expect(r.b.score).toBeCloseTo(Math.max(1 - 0.8 * (1 - 0.3 * 0.2), 0.3 + 0.05 * 0.2), 6);
    expect(r.c.score).toBeCloseTo(0.3 * 0.5, 6);
  });

  test('keypoints whose outline did not verify are likeness evidence: such a frame still loses to a stronger rival', () => {
    const unverified = { ...at('b', 5, undefined, 0.6), keypoints: { ...kp(0.1), verified: false } };
    const own = 1 - 0.9 * (1 - 0.3 * 0.6);
    const r = run([at('a', 5, undefined, 1), unverified]);
    expect(r.b.score).toBeCloseTo(own - (0.3 - own), 6);
    expect(r.b.reason).toContain('lowered');
    // verified, the same keypoints keep it out of the rivalry (and lift it above any likeness alone)
    const v = run([at('a', 5, undefined, 1), { ...unverified, keypoints: kp(0.1) }]);
    expect(v.b.score).toBeCloseTo(Math.max(own, 0.3 + 0.05 * 0.1), 6);
    expect(run([at('a', 5, undefined, 1), { ...unverified, keypoints: kp(0.1) }], { ...DEFAULT_AGGREGATE, fusion: { ...DEFAULT_AGGREGATE.fusion, verifiedLift: 0 } }).b.score).toBeCloseTo(own, 6);
  });

  test('a character keeps its best frame where no stronger rival is near', () => {
    // b trails a at 5 s but is alone at 12 s with a weaker likeness: 12 s carries its score.
    const r = run([at('a', 5, undefined, 1), at('b', 5, undefined, 0.6), at('b', 12, undefined, 0.5)]);
    expect(r.b.score).toBeCloseTo(0.3 * 0.5, 6);
    expect(r.b.evidence.timeSec).toBe(12);
  });

  test('the shortfall never takes a score below zero', () => {
    const r = run([at('a', 5, undefined, 1), at('b', 5, undefined, 0.05)], { ...DEFAULT_AGGREGATE, rivalry: { spanSec: 3, weight: 10 } });
    expect(r.b.score).toBe(0);
  });
});

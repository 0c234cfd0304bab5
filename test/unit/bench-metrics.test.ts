import {
  averagePrecision,
  boxIoU,
  clipBox,
  windowCoverage,
  hitsToIntervals,
  precisionRecallCurve,
  rateAtOrAbove,
  recallAtPrecision,
  temporalIoU,
  unionIntervals,
  type ScoredPair,
} from '../../src/bench/accuracy/metrics';
import { describeDiagnosis, diagnose } from '../../src/bench/accuracy/diagnose';
import { describeVerdicts, verdictFigures, type ClipResult } from '../../src/bench/accuracy/run';
import type { FrameObservation } from '../../src/matching/types';

/** '0.9+' is a positive scored 0.9, '0.8-' a negative. */
const P = (...xs: string[]): ScoredPair[] => xs.map((x) => ({ score: Number(x.slice(0, -1)), positive: x.endsWith('+') }));

describe('averagePrecision (hand-computed)', () => {
  test.each([
    ['perfect ranking', P('0.9+', '0.8+', '0.1-'), 1],
    ['negative in between: .5·1 + .5·(2/3)', P('0.9+', '0.8-', '0.7+'), 0.5 + 0.5 * (2 / 3)],
    ['negative first: 1·(1/2)', P('0.9-', '0.8+'), 0.5],
    ['a tie enters together: P = 1/2 at R = 1', P('0.5+', '0.5-'), 0.5],
    ['an unretrieved positive (score 0) adds no recall', P('0.9+', '0+'), 0.5],
    ['unretrieved negatives do not matter', P('0.9+', '0-', '0-'), 1],
    ['three positives: 1/3·1 + 1/3·(2/3) + 1/3·(3/5)', P('0.9+', '0.8-', '0.7+', '0.6-', '0.5+'), (1 + 2 / 3 + 3 / 5) / 3],
  ])('%s', (_name, pairs, expected) => {
    expect(averagePrecision(pairs)).toBeCloseTo(expected, 10);
  });

  test('no positives: NaN', () => {
    expect(averagePrecision(P('0.9-', '0.1-'))).toBeNaN();
  });
});

describe('precisionRecallCurve', () => {
  test('one point per distinct score, thresholds descending', () => {
    expect(precisionRecallCurve(P('0.9+', '0.8-', '0.8+', '0.1-', '0+'))).toEqual([
      { threshold: 0.9, precision: 1, recall: 1 / 3, tp: 1, fp: 0 },
      { threshold: 0.8, precision: 2 / 3, recall: 2 / 3, tp: 2, fp: 1 },
      { threshold: 0.1, precision: 2 / 4, recall: 2 / 3, tp: 2, fp: 2 },
    ]);
  });
});

describe('recallAtPrecision (hand-computed)', () => {
  const pairs = P('0.9+', '0.8+', '0.7-', '0.6+', '0.5-');
  // thresholds: .9 P=1 R=1/3; .8 P=1 R=2/3; .7 P=2/3; .6 P=3/4 R=1; .5 P=3/5 R=1
  test.each([
    [0.9, 2 / 3, 0.8],
    [0.95, 2 / 3, 0.8],
    [0.75, 1, 0.6],
    [0.5, 1, 0.6],
  ])('precision ≥ %p → recall %p at threshold %p', (minP, recall, threshold) => {
    expect(recallAtPrecision(pairs, minP)).toEqual({ recall, threshold });
  });

  test('no threshold precise enough: recall 0', () => {
    expect(recallAtPrecision(P('0.9-', '0.8+'), 0.9)).toEqual({ recall: 0, threshold: Infinity });
  });
});

describe('temporalIoU (hand-computed)', () => {
  const I = (a: number, b: number) => ({ startSec: a, endSec: b });
  test.each([
    ['identical', [I(2, 6)], [I(2, 6)], 1],
    ['partial overlap: 1 / 5', [I(1, 3)], [I(2, 6)], 0.2],
    ['two predictions inside one truth: 2 / 3', [I(0, 1), I(2, 3)], [I(0, 3)], 2 / 3],
    ['overlapping predictions count once', [I(1, 3), I(2, 4)], [I(1, 4)], 1],
    ['disjoint', [I(0, 1)], [I(2, 3)], 0],
    ['nothing predicted for a truth', [], [I(1, 2)], 0],
    ['nothing predicted, nothing there', [], [], 1],
  ])('%s', (_name, pred, truth, expected) => {
    expect(temporalIoU(pred, truth)).toBeCloseTo(expected as number, 10);
  });

  test('unionIntervals merges and drops empty intervals', () => {
    expect(unionIntervals([I(3, 4), I(1, 2), I(1.5, 2.5), I(5, 5)])).toEqual([I(1, 2.5), I(3, 4)]);
  });
});

describe('hitsToIntervals', () => {
  const times = [0, 0.5, 1, 1.5, 2];
  test.each([
    ['one run, halfway to the neighbours', [false, true, true, false, false], 1.5, [{ startSec: 0.25, endSec: 1.25 }]],
    ['runs at the clip ends reach the ends', [true, false, false, false, true], 0.6, [{ startSec: 0, endSec: 0.25 }, { startSec: 1.75, endSec: 2.5 }]],
    ['a gap within mergeGapSec is bridged', [true, false, true, false, false], 1.0, [{ startSec: 0, endSec: 1.25 }]],
    ['no hits', [false, false, false, false, false], 1.5, []],
  ])('%s', (_name, hits, gap, expected) => {
    expect(hitsToIntervals(times, hits as boolean[], 2.5, gap as number)).toEqual(expected);
  });
});

test('rateAtOrAbove', () => {
  expect(rateAtOrAbove([0.1, 0.6, 0.7, 0.2], 0.6)).toBe(0.5);
  expect(rateAtOrAbove([], 0.6)).toBe(0);
});

describe('proposal coverage (hand-computed)', () => {
  test('boxIoU and clipBox', () => {
    expect(boxIoU({ x: 0, y: 0, width: 10, height: 10 }, { x: 5, y: 0, width: 10, height: 10 })).toBeCloseTo(50 / 150, 10);
    expect(boxIoU({ x: 0, y: 0, width: 10, height: 10 }, { x: 10, y: 0, width: 10, height: 10 })).toBe(0);
    expect(clipBox({ x: -20, y: 10, width: 50, height: 100 }, 100, 60)).toEqual({ x: 0, y: 10, width: 30, height: 50 });
    expect(clipBox({ x: 120, y: 0, width: 10, height: 10 }, 100, 60)).toBeUndefined();
  });

  test('a window is usable when it holds 80 % of the box and the box spans 40-100 % of its side', () => {
    const box = { x: 100, y: 100, width: 40, height: 80 }; // long side 80
    // A 100 px window around it: holds all of it, 80 % of the side.
    expect(windowCoverage(box, [{ x: 80, y: 90, size: 100 }])).toEqual({ bestIoU: (40 * 80) / (100 * 100), usable: true });
    // Too large a window: the box is 80 / 300 = 27 % of its side.
    expect(windowCoverage(box, [{ x: 0, y: 0, size: 300 }]).usable).toBe(false);
    // Too small: the box does not fit (long side 80 > 70).
    expect(windowCoverage(box, [{ x: 90, y: 100, size: 70 }]).usable).toBe(false);
    // Right size but shifted so that only 75 % of the box is inside.
    expect(windowCoverage(box, [{ x: 100, y: 120, size: 100 }]).usable).toBe(false);
    // Either window of a set will do; the best IoU is over all of them.
    const r = windowCoverage(box, [{ x: 0, y: 0, size: 300 }, { x: 80, y: 90, size: 100 }]);
    expect(r.usable).toBe(true);
    expect(r.bestIoU).toBeCloseTo(0.32, 10);
  });
});

describe('diagnose (hand-built observations)', () => {
  const box = { x: 0, y: 0, width: 10, height: 10 };
  const kp = (inliers: number, verified = true) => ({ score: 0.5, inliers, referenceId: 'r', mirrored: false, box, ...(verified ? {} : { verified: false }) });
  const emb = (score: number) => ({ score, cosine: 0.9, referenceId: 'r' });
  const at = (characterId: string, frameIndex: number, o: Partial<FrameObservation>): FrameObservation => ({ frameIndex, timeSec: frameIndex / 2, characterId, ...o });
  const obs = (...list: FrameObservation[]) => {
    const m = new Map<string, FrameObservation[]>();
    for (const o of list) m.set(o.characterId, [...(m.get(o.characterId) ?? []), o]);
    return m;
  };

  test('verified keypoints on any frame make it a copy, whatever the likeness says', () => {
    const d = diagnose(obs(at('a', 0, { keypoints: kp(9, false) }), at('a', 1, { keypoints: kp(12), embedding: emb(0.2) }), at('b', 1, { embedding: emb(0.9) })), 'a');
    expect(d).toEqual({ cause: 'copy', verifiedInliers: 12, unverifiedInliers: 9, likeness: 0.2, rivalLikeness: 0.9, rival: 'b' });
    expect(describeDiagnosis(d)).toBe('copy, 12 inliers verified');
  });

  test('keypoints that never verified', () => {
    const d = diagnose(obs(at('a', 0, { keypoints: kp(8, false), embedding: emb(0.4) }), at('b', 0, { embedding: emb(0.3) })), 'a');
    expect(d.cause).toBe('unverified');
    expect(describeDiagnosis(d)).toBe('8 inliers, outline not verified; likeness 0.40 vs 0.30 b');
  });

  test('likeness alone: outranked by another key, or not', () => {
    expect(diagnose(obs(at('a', 0, { embedding: emb(0.5) }), at('b', 3, { embedding: emb(0.6) }), at('c', 1, { embedding: emb(0.55) })), 'a')).toMatchObject({ cause: 'likeness-outranked', rival: 'b', rivalLikeness: 0.6 });
    // A tie is not outranked.
    expect(diagnose(obs(at('a', 0, { embedding: emb(0.6) }), at('b', 3, { embedding: emb(0.6) })), 'a').cause).toBe('likeness-only');
    expect(diagnose(obs(at('a', 0, { embedding: emb(0.6) })), 'a')).toEqual({ cause: 'likeness-only', verifiedInliers: 0, unverifiedInliers: 0, likeness: 0.6, rivalLikeness: 0 });
  });

  test('not observed at all', () => {
    const d = diagnose(obs(at('b', 0, { embedding: emb(0.7) })), 'a');
    expect(d.cause).toBe('unseen');
    expect(describeDiagnosis(d)).toBe('seen by neither tier');
  });
});

describe('verdictFigures (hand-built results)', () => {
  const result = (kind: string, truth: string | undefined, flagged: Record<string, 'match' | 'review' | 'clear'>): ClipResult =>
    ({
      clip: { kind, truthCharacter: truth },
      kagami: Object.fromEntries(Object.entries(flagged).map(([k, verdict]) => [k, { score: 0.5, segments: [], verdict, kind: 'likeness' }])),
    }) as unknown as ClipResult;

  test('precision of what the verdicts flag, positives found by kind, false clips; unregistered keys ignored', () => {
    const v = verdictFigures(
      [
        result('near-copy', 'a', { a: 'match', b: 'clear' }),
        result('near-copy', 'b', { b: 'clear' }),
        result('new-rendition', 'a', { a: 'review', b: 'review' }),
        result('lookalike', undefined, { b: 'review', '~neg~a': 'review' }),
        result('lookalike', undefined, {}),
        result('empty', undefined, { a: 'clear' }),
      ],
      ['a', 'b'],
    );
    expect(v).toEqual({
      flagged: 4,
      correct: 2,
      found: { 'near-copy': { flagged: 1, of: 2 }, 'new-rendition': { flagged: 1, of: 1 } },
      lookalikeClips: { flagged: 1, of: 2 },
      emptyClips: { flagged: 0, of: 1 },
    });
    expect(describeVerdicts(v)).toBe('P 0.500 (2 wrong), near 1/2, new 1/1, look-alike clips 1/2, empty 0/1');
    expect(describeVerdicts(undefined)).toBe('n/a');
  });
});

import { readEnv } from '../../src/config';
import { KagamiError } from '../../src/errors';
import { scanOptionsFromEnv } from '../../src/scan/options';
import { DEFAULT_SCAN_OPTIONS } from '../../src/scan/scanner';

/** The configuration error reading `env` raises (undefined when it reads fine). */
function configError(env: Record<string, string>): KagamiError | undefined {
  try {
    readEnv(env as NodeJS.ProcessEnv);
  } catch (e) {
    return e as KagamiError;
  }
  return undefined;
}

describe('KAGAMI_WINDOWS', () => {
  test('unset: the scanner default (small windows on every fourth frame included)', () => {
    const o = scanOptionsFromEnv(readEnv({} as NodeJS.ProcessEnv));
    expect(o.windows).toEqual(DEFAULT_SCAN_OPTIONS.windows);
    expect(o.windows).toContainEqual({ size: 0.25, frameStep: 4 });
  });

  test('size/frameStep pairs replace the default', () => {
    const o = scanOptionsFromEnv(readEnv({ KAGAMI_WINDOWS: '0.35/2, 0.6 / 2,0.9/3' } as NodeJS.ProcessEnv));
    expect(o.windows).toEqual([
      { size: 0.35, frameStep: 2 },
      { size: 0.6, frameStep: 2 },
      { size: 0.9, frameStep: 3 },
    ]);
  });

  test.each(['0.35', '0/2', '1.5/2', '0.35/0', '0.35/2,,0.6/2', 'big/2'])('%p is refused with invalid_config naming the variable', (spec) => {
    const err = configError({ KAGAMI_WINDOWS: spec });
    expect(err).toBeInstanceOf(KagamiError);
    expect(err?.code).toBe('invalid_config');
    expect(err?.message).toMatch(/KAGAMI_WINDOWS: .* is not size\/frameStep/);
  });
});

describe('verdict thresholds', () => {
  test('set together, they reach the scan options (and the likeness review follows the review threshold)', () => {
    const o = scanOptionsFromEnv(readEnv({ KAGAMI_MATCH_THRESHOLD: '0.7', KAGAMI_REVIEW_THRESHOLD: '0.4' } as NodeJS.ProcessEnv));
    expect(o.aggregate.thresholds).toEqual({ match: 0.7, review: 0.4 });
  });

  test.each([
    [{ KAGAMI_REVIEW_THRESHOLD: '0.6' }],
    [{ KAGAMI_MATCH_THRESHOLD: '0.3' }],
    [{ KAGAMI_MATCH_THRESHOLD: '0.5', KAGAMI_REVIEW_THRESHOLD: '0.8' }],
  ])('a review threshold at or above the match threshold is refused (%p)', (env) => {
    const err = configError(env);
    expect(err?.code).toBe('invalid_config');
    expect(err?.message).toMatch(/KAGAMI_REVIEW_THRESHOLD \([0-9.]+\) must be below KAGAMI_MATCH_THRESHOLD/);
  });
});

describe('KAGAMI_KEYPOINT_BETWEEN', () => {
  test('unset (or empty): only where a verified copy starts or ends (edges); hits: next to every verified hit', () => {
    expect(scanOptionsFromEnv(readEnv({} as NodeJS.ProcessEnv)).keypointBetween).toBe('edges');
    expect(scanOptionsFromEnv(readEnv({ KAGAMI_KEYPOINT_BETWEEN: '' } as NodeJS.ProcessEnv)).keypointBetween).toBe('edges');
    expect(scanOptionsFromEnv(readEnv({ KAGAMI_KEYPOINT_BETWEEN: 'hits' } as NodeJS.ProcessEnv)).keypointBetween).toBe('hits');
  });

  test.each(['all', 'EDGES', '2'])('%p is refused with invalid_config naming the variable', (v) => {
    const err = configError({ KAGAMI_KEYPOINT_BETWEEN: v });
    expect(err?.code).toBe('invalid_config');
    expect(err?.message).toMatch(/KAGAMI_KEYPOINT_BETWEEN/);
  });
});

describe('KAGAMI_KEYPOINT_FRAME_STEP', () => {
  test('unset: every other frame (2); 1: every frame', () => {
    expect(scanOptionsFromEnv(readEnv({} as NodeJS.ProcessEnv)).keypointFrameStep).toBe(2);
    expect(scanOptionsFromEnv(readEnv({ KAGAMI_KEYPOINT_FRAME_STEP: '1' } as NodeJS.ProcessEnv)).keypointFrameStep).toBe(1);
  });

  test.each(['0', '3', '1.5', 'odd'])('%p is refused with invalid_config naming the variable', (v) => {
    const err = configError({ KAGAMI_KEYPOINT_FRAME_STEP: v });
    expect(err).toBeInstanceOf(KagamiError);
    expect(err?.code).toBe('invalid_config');
    expect(err?.message).toMatch(/KAGAMI_KEYPOINT_FRAME_STEP/);
  });
});

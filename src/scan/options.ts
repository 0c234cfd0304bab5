import type { Env } from '../config';
import { DEFAULT_SCAN_OPTIONS, type ScanOptions } from './scanner';

/** Scan options from the validated environment (flags may override the sampling rate). */
export function scanOptionsFromEnv(env: Env, fps?: number): ScanOptions {
  return {
    ...DEFAULT_SCAN_OPTIONS,
    sampling: {
      ...DEFAULT_SCAN_OPTIONS.sampling,
      fps: fps ?? env.KAGAMI_SAMPLE_FPS,
      sceneThreshold: env.KAGAMI_SCENE_THRESHOLD,
      maxFrames: env.KAGAMI_MAX_FRAMES,
      maxDurationSec: env.KAGAMI_MAX_DURATION_SEC,
    },
    maxKeypoints: env.KAGAMI_FRAME_KEYPOINTS,
    scanThreads: env.KAGAMI_SCAN_THREADS,
    keypointFrameStep: env.KAGAMI_KEYPOINT_FRAME_STEP === 1 ? 1 : 2,
    keypointBetween: env.KAGAMI_KEYPOINT_BETWEEN,
    windows: env.KAGAMI_WINDOWS ?? DEFAULT_SCAN_OPTIONS.windows,
    denseUpTo: env.KAGAMI_DENSE_UP_TO,
    objectnessFloor: env.KAGAMI_OBJECTNESS_FLOOR,
    aggregate: { ...DEFAULT_SCAN_OPTIONS.aggregate, thresholds: { match: env.KAGAMI_MATCH_THRESHOLD, review: env.KAGAMI_REVIEW_THRESHOLD } },
  };
}

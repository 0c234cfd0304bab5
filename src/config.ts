/**
 * Configuration: the only module that reads process.env. Every knob has a default; the environment
 * overrides it; command-line flags override that. Validated once, all problems reported together.
 */
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { KagamiError } from './errors';

const num = (def: number, min: number, max: number) => z.coerce.number().min(min).max(max).default(def);

/**
 * The likeness tier's windows, `size/frameStep,…`: each window side as a fraction of the frame
 * height, slid over every frameStep-th sampled frame (e.g. `0.35/2,0.6/2,0.9/2`, the default
 * without its small windows: about a third less time a clip, less recall of small characters).
 */
const windowsSpec = z
  .string()
  .transform((spec, ctx) => {
    const out: Array<{ size: number; frameStep: number }> = [];
    for (const part of spec.split(',')) {
      const m = /^\s*(\d*\.?\d+)\s*\/\s*(\d+)\s*$/.exec(part);
      const size = m ? Number(m[1]) : NaN;
      const frameStep = m ? Number(m[2]) : NaN;
      if (!(size >= 0.05 && size <= 1) || !(frameStep >= 1 && frameStep <= 64)) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: `'${part.trim()}' is not size/frameStep (size 0.05-1 of the frame height, frameStep 1-64), e.g. 0.35/2` });
        return z.NEVER;
      }
      out.push({ size, frameStep });
    }
    return out;
  })
  .optional();

const EnvSchema = z.object({
  KAGAMI_LIBRARY: z.string().min(1).default('reference-library'),
  // Embedding model; unset: the one the library already holds, or DEFAULT_MODEL for a new library (modelFor)
  KAGAMI_MODEL: z.string().min(1).optional(),
  // Where model files (*.onnx) and trust-on-first-use locks (<id>.lock.json) live; default: models/
  KAGAMI_MODELS_DIR: z.string().min(1).optional(),
  KAGAMI_FFMPEG: z.string().min(1).optional(),
  KAGAMI_FFPROBE: z.string().min(1).optional(),
  KAGAMI_SAMPLE_FPS: num(2, 0.05, 30),
  KAGAMI_SCENE_THRESHOLD: num(0.3, 0, 1),
  KAGAMI_FRAME_KEYPOINTS: num(4000, 100, 20_000),
  // The keypoint tier on every sampled frame (1) or every other one plus the frames between that KAGAMI_KEYPOINT_BETWEEN names (2)
  KAGAMI_KEYPOINT_FRAME_STEP: z.coerce.number().int().min(1).max(2).default(2),
  // With step 2, the even frames also looked at: next to any verified hit (hits) or only where a verified copy starts or ends (edges)
  KAGAMI_KEYPOINT_BETWEEN: z.enum(['hits', 'edges']).default('edges'),
  KAGAMI_MAX_FRAMES: num(1200, 1, 1_000_000),
  KAGAMI_MAX_DURATION_SEC: num(3600, 1, 1_000_000),
  KAGAMI_MATCH_THRESHOLD: num(0.6, 0, 1),
  KAGAMI_REVIEW_THRESHOLD: num(0.35, 0, 1),
  // Weights of int8 models whose manifest has a `weights8` variant: 8 (full 8-bit) on CPUs with int8 dot products (x86-64 VNNI/AMX, arm64), else 7; auto: by the CPU
  KAGAMI_INT8_WEIGHTS: z.enum(['auto', '7', '8']).default('auto'),
  // onnxruntime intra-op threads of the likeness model
  KAGAMI_THREADS: num(1, 1, 64),
  // Worker threads for the frames' keypoints (ORB) during a scan; 1 = in the scanning thread
  KAGAMI_SCAN_THREADS: num(availableParallelism(), 1, 64),
  // Sliding windows of the likeness tier (default: the scanner's, DEFAULT_SCAN_OPTIONS.windows)
  KAGAMI_WINDOWS: windowsSpec,
  // Windows up to this fraction of the frame height go through a crop model's dense form (one pass a window size over the frame) instead of one inference a crop; 0 none, 1 all; unset: the model's own (manifest dense.upTo, else 0)
  KAGAMI_DENSE_UP_TO: z.coerce.number().min(0).max(1).optional(),
  // A crop model's windows scoring under this on its objectness probe show scenery and give no likeness evidence; 0 every window counts; unset: the model's own (manifest objectness.floor)
  KAGAMI_OBJECTNESS_FLOOR: z.coerce.number().min(0).max(1).optional(),
  KAGAMI_MAX_IMAGE_PIXELS: num(40_000_000, 1, 1e9),
  // The service (kagami api / kagami worker)
  PORT: num(8080, 0, 65535),
  REDIS_URL: z.string().url().default('redis://127.0.0.1:6379'),
  DATABASE_URL: z.string().url().optional(),
  KAGAMI_DATA_DIR: z.string().min(1).optional(),
  KAGAMI_MEDIA_ROOT: z.string().min(1).optional(),
  KAGAMI_QUEUE_PREFIX: z.string().regex(/^[A-Za-z0-9_-]+$/).default('kagami'),
  KAGAMI_MAX_UPLOAD_MB: num(1024, 1, 1_000_000),
  KAGAMI_MAX_REFERENCE_MB: num(25, 1, 10_000),
  KAGAMI_MAX_WAIT_SEC: num(300, 0, 3600),
  KAGAMI_WORKER_CONCURRENCY: num(1, 1, 64),
  KAGAMI_LOCK_MS: num(30_000, 500, 3_600_000),
  KAGAMI_STALLED_INTERVAL_MS: num(30_000, 200, 3_600_000),
  KAGAMI_REFRESH_MS: num(1000, 50, 600_000),
  KAGAMI_RECONCILE_MS: num(10_000, 200, 3_600_000),
  KAGAMI_WEBHOOK_ATTEMPTS: num(8, 1, 50),
  KAGAMI_WEBHOOK_BACKOFF_MS: num(2000, 10, 3_600_000),
  KAGAMI_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Env = z.infer<typeof EnvSchema>;

/**
 * The model a library gets when KAGAMI_MODEL is unset and it has none yet: the trained descriptor
 * (kagami-descriptor-v11: v6 fine-tuned to see past its windows' edges into v8, then again on fresh
 * views into v9, then with Crossfire's monsters added into v10, then with Unknown Horizons' and Bos
 * Wars' units, renders seen from several sides, into v11) in its int8 form (7-bit weights, or
 * full 8-bit ones on CPUs with int8 dot products: signals/embedding/int8-weights.ts),
 * whose manifest sends every window through its dense form (models/README.md); for v2 the int8
 * form was 1.3x faster per clip than the float one with the same accuracy on the accuracy bench.
 */
export const DEFAULT_MODEL = 'kagami-descriptor-v11-int8';

/**
 * The model to run: KAGAMI_MODEL when set; else the model the library already holds, so upgrading
 * Kagami never strands a library built with an earlier default (`kagami library reembed` moves it);
 * else DEFAULT_MODEL.
 */
export function modelFor(env: Pick<Env, 'KAGAMI_MODEL'>, libraryModel?: string): string {
  return env.KAGAMI_MODEL ?? libraryModel ?? DEFAULT_MODEL;
}

export function readEnv(env: NodeJS.ProcessEnv = process.env): Env {
  const known = new Set(Object.keys(EnvSchema.shape));
  const picked = Object.fromEntries(Object.entries(env).filter(([k, v]) => known.has(k) && v !== ''));
  const r = EnvSchema.safeParse(picked);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new KagamiError('invalid_config', `invalid environment:\n  ${lines.join('\n  ')}`);
  }
  // Verdicts are ordered: a review threshold at or above the match threshold would leave no review cases.
  if (!(r.data.KAGAMI_REVIEW_THRESHOLD < r.data.KAGAMI_MATCH_THRESHOLD)) {
    throw new KagamiError(
      'invalid_config',
      `invalid environment:\n  KAGAMI_REVIEW_THRESHOLD (${r.data.KAGAMI_REVIEW_THRESHOLD}) must be below KAGAMI_MATCH_THRESHOLD (${r.data.KAGAMI_MATCH_THRESHOLD})`,
    );
  }
  return Object.freeze(r.data);
}

/** Root of the installed package (where models/ lives), from the compiled or the ts-jest file. */
export const PACKAGE_ROOT = path.resolve(__dirname, '..');
export const MODELS_DIR = path.join(PACKAGE_ROOT, 'models');

export function modelManifestPath(modelId: string): string {
  return path.join(MODELS_DIR, `${modelId}.json`);
}

/** Folder of the model files and lock files: KAGAMI_MODELS_DIR, else the manifests' folder models/. */
export function modelFilesDir(env: Pick<Env, 'KAGAMI_MODELS_DIR'>): string {
  return env.KAGAMI_MODELS_DIR ? path.resolve(env.KAGAMI_MODELS_DIR) : MODELS_DIR;
}

/**
 * Model manifests (models/*.json): where an embedding model comes from and how to feed it.
 *
 * Two kinds:
 *  - built: `source` + `trunk` + `head` + `sha256`. The ONNX file is generated locally from an npm
 *    package (src/models/build.ts) and checked against `sha256`.
 *  - downloaded: `download` (url, sha256 or an explicit trust-on-first-use `pin`, licence). The file is
 *    fetched by `kagami models pull ID` (src/models/pull.ts) and checked against `download.sha256`, or,
 *    when the publisher's hash is unknown, against the hash recorded in `<id>.lock.json` at the first pull.
 * Either way a manifest pins the exact bytes that produce the embeddings.
 *
 * Preprocessing fields (all optional, defaults = the behaviour of the first built model):
 *  input.layout NHWC | NCHW, input.channels RGB | BGR, input.range '0-255' (mean/std in pixel units)
 *  or '0-1' (pixels divided by 255 first), input.resize (how a caller should bring an image to the
 *  input size), output.pooling none | cls | mean (for token outputs [N, T, D]), output.normalized
 *  (false: the embedder L2-normalises).
 */
import * as fs from 'fs';
import * as path from 'path';
import { z } from 'zod';
import { int8WeightBits, type WeightBits } from './int8-weights';

const rgbTriple = z.tuple([z.number(), z.number(), z.number()]);
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'lower-case hex sha256');

export const ResizeSchema = z
  .object({
    /**
     * stretch: scale to width x height ignoring the aspect ratio. letterbox: fit inside, pad with grey.
     * centre-crop: scale so the shorter side is `shorterSide` (default: the smaller of width/height),
     * then cut the centre width x height.
     */
    mode: z.enum(['stretch', 'letterbox', 'centre-crop']),
    shorterSide: z.number().int().positive().optional(),
    /** sharp interpolation kernel (PIL bicubic ~ cubic, PIL bilinear ~ linear). Default lanczos3. */
    kernel: z.enum(['nearest', 'linear', 'cubic', 'mitchell', 'lanczos2', 'lanczos3']).optional(),
  })
  .strict();

export const DownloadSchema = z
  .object({
    url: z.string().url().refine((u) => /^https?:\/\//.test(u), 'http(s) URL'),
    /** The publisher's sha256 of the file, or null when it is not known (then `pin` is required). */
    sha256: sha256Hex.nullable(),
    /** `on-first-pull`: trust on first use; the first pull records the hash in `<id>.lock.json`. */
    pin: z.literal('on-first-pull').optional(),
    bytes: z.number().int().positive().optional(),
    licence: z.string().min(1),
    homepage: z.string().url().optional(),
  })
  .strict()
  .refine((d) => (d.sha256 === null) === (d.pin === 'on-first-pull'), {
    message: 'download.sha256 null requires "pin": "on-first-pull" (and a known sha256 takes no pin)',
    path: ['pin'],
  });

export const ModelManifestSchema = z
  .object({
    id: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, 'lower-case id: letters, digits, . _ -'),
    description: z.string(),
    /** Built models: the npm package the model is converted from. */
    source: z
      .object({
        package: z.string().min(1),
        version: z.string().min(1),
        /** Paths relative to the package root: the layers-model module and its weight shards. */
        files: z.array(z.string().min(1)).min(2),
        licence: z.string().min(1),
      })
      .optional(),
    /** Downloaded models: where the ONNX file comes from. */
    download: DownloadSchema.optional(),
    /** Trained models: our own artefact, committed beside the manifest; `recipe` reproduces it. */
    training: z
      .object({
        recipe: z.string().min(1),
        files: z.array(z.string().min(1)).min(1),
        data: z.string().min(1),
        licence: z.string().min(1),
      })
      .optional(),
    /**
     * Quantised models: the float model this one was derived from (its id and sha256) and how. The
     * vectors are not interchangeable with the float model's (their id differs), only close to them.
     */
    quantised: z
      .object({
        /** id of the float model (a manifest in the same folder) and the sha256 of the file quantised. */
        from: z.string().min(1),
        fromSha256: sha256Hex,
        /** qdq-static: QuantizeLinear/DequantizeLinear pairs with calibrated activation ranges. */
        scheme: z.enum(['qdq-static', 'dynamic']),
        /** e.g. 'int8, symmetric, per output channel'. */
        weights: z.string().min(1),
        /** e.g. 'uint8, asymmetric, per tensor, 99.99th percentile of 400 calibration crops'. */
        activations: z.string().min(1),
        /** What stays in float (e.g. the pooling head). */
        float: z.string().optional(),
      })
      .strict()
      .optional(),
    trunk: z
      .object({
        architecture: z.string().min(1),
        /** Built models: the layer the network is cut after. */
        cutAfter: z.string().min(1).optional(),
      })
      .optional(),
    head: z
      .object({
        type: z.enum(['gem-grid', 'gem-projection']),
        grid: z.number().int().min(1),
        p: z.number().positive(),
        eps: z.number().positive().optional(),
        /** gem-projection: 1x1 conv width before pooling, and the projected dimension. */
        conv1x1: z.number().int().positive().optional(),
        projection: z.number().int().positive().optional(),
      })
      .optional(),
    /** What the model expects to see: a whole frame (default) or a crop around one character. */
    usage: z.enum(['frame', 'crop']).optional(),
    /**
     * Crop models: the same network cut into a fully convolutional form (committed beside it), so a
     * frame's windows of one size share one pass of the trunk: input `input` (1 × H × W × 3, any H and
     * W, fed as `input` says), `rois` (R × 4 boxes x1, y1, x2, y2 in input pixels) and
     * `batch_indices` (R, int64 zeros); output `output.name` (R × dimension). The frame is scaled so
     * that a window measures `input.width` pixels; each box is pooled from the feature map of stride
     * `stride` (RoiAlign, its sampling points on the cells' centres).
     */
    dense: z
      .object({
        file: z.string().regex(/^[^/\\]+\.onnx$/, 'a plain *.onnx file name'),
        sha256: sha256Hex,
        stride: z.number().int().positive(),
        /** How it was derived from `file` (e.g. the script). */
        recipe: z.string().min(1),
        /**
         * Windows up to this fraction of the frame height go through the dense form unless the scan
         * says otherwise (KAGAMI_DENSE_UP_TO): 1 for a model trained to see past its window's edges,
         * absent (0) for one trained on crops alone.
         */
        upTo: z.number().min(0).max(1).optional(),
      })
      .strict()
      .optional(),
    /**
     * Quantised models: the same quantisation with full 8-bit weights (the manifest's own file holds
     * 7-bit ones), run on CPUs whose int8 kernels cannot saturate (int8-weights.ts). The same model
     * id: its vectors and the 7-bit file's are two approximations of one float model.
     */
    weights8: z
      .object({
        file: z.string().regex(/^[^/\\]+\.onnx$/, 'a plain *.onnx file name'),
        sha256: sha256Hex,
        /** Its dense form, when the manifest has one. */
        dense: z.object({ file: z.string().regex(/^[^/\\]+\.onnx$/, 'a plain *.onnx file name'), sha256: sha256Hex }).strict().optional(),
      })
      .strict()
      .optional(),
    /** Cosine of unrelated images (score 0) and of the same character (score 1), measured for this model. */
    calibration: z
      .object({
        floor: z.number().min(-1).max(1),
        ceil: z.number().min(-1).max(1),
        /**
         * Crop models: the margin over the background bank (background-bank.ts) that scores 0 and 1.
         * When present, the likeness tier scores margins instead of raw cosines.
         */
        background: z.object({ floor: z.number().min(-2).max(2), ceil: z.number().min(-2).max(2) }).optional(),
        /**
         * The cosine (the margin, with `background`) from which the likeness tier alone is precise
         * enough for a `review` verdict, measured for this model on the accuracy bench (models/README.md).
         * Absent: likeness alone never reaches review.
         */
        review: z.number().min(-2).max(2).optional(),
      })
      .refine((c) => c.review === undefined || c.review > (c.background ?? c).floor, 'calibration.review must lie above the floor it is measured against')
      .optional(),
    /**
     * Crop models: a class-agnostic objectness probe on a window's vector (training/objectness.js): a
     * window whose logistic score σ(weights·v + bias) is under `floor` shows scenery, not a character,
     * and gives the likeness tier no evidence. Absent: every window counts.
     */
    objectness: z
      .object({
        weights: z.array(z.number()).min(1),
        bias: z.number(),
        floor: z.number().min(0).max(1),
        trainedOn: z.string().min(1),
      })
      .strict()
      .optional(),
    /** ONNX file name, in the models folder (KAGAMI_MODELS_DIR, default: the manifest's folder). */
    file: z.string().regex(/^[^/\\]+\.onnx$/, 'a plain *.onnx file name'),
    /** Built models: sha256 of the built file. Downloaded models use download.sha256. */
    sha256: sha256Hex.optional(),
    input: z.object({
      name: z.string().min(1),
      width: z.number().int().positive(),
      height: z.number().int().positive(),
      layout: z.enum(['NHWC', 'NCHW']),
      channels: z.enum(['RGB', 'BGR']),
      /** Scale of mean/std: '0-255' (default) feeds (pixel - mean) / std, '0-1' (pixel / 255 - mean) / std. */
      range: z.enum(['0-255', '0-1']).optional(),
      mean: rgbTriple,
      std: rgbTriple.refine((s) => s.every((v) => v > 0), 'std must be positive'),
      resize: ResizeSchema.optional(),
    }),
    output: z.object({
      name: z.string().min(1),
      dimension: z.number().int().positive(),
      /** true: the model's vectors are already L2-normalised; false: the embedder normalises them. */
      normalized: z.boolean(),
      /** none (default): output is [N, D]. cls: [N, T, D], token 0. mean: [N, T, D], mean over tokens. */
      pooling: z.enum(['none', 'cls', 'mean']).optional(),
    }),
    licence: z.string().min(1),
  })
  .superRefine((m, ctx) => {
    const issue = (p: string[], message: string) => ctx.addIssue({ code: 'custom', path: p, message });
    if ([m.source, m.download, m.training].filter(Boolean).length !== 1) {
      issue(['source'], 'a manifest needs exactly one of `source` (built locally), `download` (fetched) or `training` (committed)');
      return;
    }
    if (m.dense && (m.usage !== 'crop' || !m.training || m.input.layout !== 'NHWC' || m.input.width !== m.input.height)) {
      issue(['dense'], 'a dense form is for committed crop models with a square NHWC input');
    }
    if (m.objectness && (m.usage !== 'crop' || m.objectness.weights.length !== m.output.dimension)) {
      issue(['objectness'], 'an objectness probe is for crop models and has one weight per output dimension');
    }
    if (m.weights8 && !m.quantised) issue(['weights8'], 'an 8-bit weights variant is for quantised models');
    if (m.weights8 && !!m.weights8.dense !== !!m.dense) issue(['weights8', 'dense'], 'the 8-bit weights variant has a dense form exactly when the model has one');
    if (m.training) {
      if (!m.sha256) issue(['sha256'], 'trained models need sha256');
    } else if (m.source) {
      if (!m.trunk?.cutAfter) issue(['trunk', 'cutAfter'], 'built models need trunk.cutAfter');
      if (!m.head) issue(['head'], 'built models need a head');
      if (!m.sha256) issue(['sha256'], 'built models need sha256');
      if (m.head?.type === 'gem-grid' && m.output.dimension % (m.head.grid * m.head.grid) !== 0) {
        issue(['output', 'dimension'], 'output.dimension must be grid*grid*channels');
      }
    } else {
      if (m.sha256) issue(['sha256'], 'downloaded models keep their hash in download.sha256');
      if (m.head) issue(['head'], 'a head is only for built models');
    }
  });

export type ModelManifest = z.infer<typeof ModelManifestSchema>;
export type ResizePolicy = z.infer<typeof ResizeSchema>;

/** A validated manifest plus where it was read from. */
export interface LoadedManifest extends ModelManifest {
  /** Absolute path of the manifest file. */
  manifestPath: string;
  /** Absolute path of the ONNX file (models folder + `file`). */
  modelPath: string;
  /** Absolute path of the trust-on-first-use lock file (models folder + `<id>.lock.json`). */
  lockPath: string;
  /** Absolute path of the dense form's ONNX file, when the manifest has one. */
  densePath?: string;
  /** Quantised models with a `weights8` variant: the weights this load runs with (file, sha256 and dense are that variant's). */
  weightBits?: WeightBits;
}

export interface ManifestOptions {
  /** Folder of the model files and lock files (default: the manifest's folder). */
  modelsDir?: string;
  /** Which weights a manifest with a `weights8` variant loads (default: int8WeightBits(), by the CPU). */
  int8Weights?: WeightBits;
}

export function parseManifest(json: unknown, manifestPath: string, opts: ManifestOptions = {}): LoadedManifest {
  const r = ModelManifestSchema.safeParse(json);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new Error(`invalid model manifest ${manifestPath}: ${issues}`);
  }
  const abs = path.resolve(manifestPath);
  // A trained model is committed beside its manifest; built and downloaded files go to modelsDir.
  const dir = path.resolve(r.data.training ? path.dirname(abs) : (opts.modelsDir ?? path.dirname(abs)));
  const m: ModelManifest & { weightBits?: WeightBits } = { ...r.data };
  if (m.weights8) {
    m.weightBits = opts.int8Weights ?? int8WeightBits();
    if (m.weightBits === 8) {
      const w = m.weights8;
      m.file = w.file;
      m.sha256 = w.sha256;
      if (m.dense && w.dense) m.dense = { ...m.dense, file: w.dense.file, sha256: w.dense.sha256 };
    }
  }
  return {
    ...m,
    manifestPath: abs,
    lockPath: path.join(dir, `${r.data.id}.lock.json`),
    modelPath: path.join(dir, m.file),
    ...(m.dense ? { densePath: path.join(dir, m.dense.file) } : {}),
  };
}

export function loadManifest(manifestPath: string, opts: ManifestOptions = {}): LoadedManifest {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(manifestPath, 'utf8'));
  } catch (e) {
    throw new Error(`cannot read model manifest ${manifestPath}: ${(e as Error).message}`);
  }
  return parseManifest(json, manifestPath, opts);
}

/** The manifest files in a folder (*.json, not the *.lock.json files that pulls write), sorted. */
export function listManifestFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json') && !f.endsWith('.lock.json'))
    .sort()
    .map((f) => path.join(dir, f));
}

export function isDownloaded(m: ModelManifest): boolean {
  return !!m.download;
}

/** What a trust-on-first-use pull records. */
export interface ModelLock {
  id: string;
  file: string;
  sha256: string;
  bytes: number;
  url: string;
  pinnedAt: string;
}

const LockSchema = z.object({
  id: z.string(),
  file: z.string(),
  sha256: sha256Hex,
  bytes: z.number().int().nonnegative(),
  url: z.string(),
  pinnedAt: z.string(),
});

/** The lock of a manifest, or undefined when there is none. Throws on an unreadable/invalid lock. */
export function readLock(m: LoadedManifest): ModelLock | undefined {
  let text: string;
  try {
    text = fs.readFileSync(m.lockPath, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`invalid lock file ${m.lockPath}: ${(e as Error).message}`);
  }
  const r = LockSchema.safeParse(json);
  if (!r.success || r.data.id !== m.id) throw new Error(`invalid lock file ${m.lockPath} (delete it to pin again)`);
  return r.data;
}

export type ExpectedHash =
  | { sha256: string; from: 'manifest' | 'lock' }
  | { sha256: null; from: 'unpinned' };

/**
 * The sha256 a model file must have: the manifest's (built models, or downloads with a published
 * hash), else the lock's (trust on first use, after the first pull), else none yet ('unpinned').
 */
export function expectedSha256(m: LoadedManifest): ExpectedHash {
  if (m.sha256) return { sha256: m.sha256, from: 'manifest' };
  if (m.download?.sha256) return { sha256: m.download.sha256, from: 'manifest' };
  const lock = readLock(m);
  if (lock) return { sha256: lock.sha256, from: 'lock' };
  return { sha256: null, from: 'unpinned' };
}

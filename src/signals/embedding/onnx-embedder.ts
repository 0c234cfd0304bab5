/**
 * Runs a manifest-described ONNX embedding model with onnxruntime-node.
 *
 * Images must already be at the model's input size (see prepare / resizeForManifest / resizeForModel).
 * RGBA drops the alpha channel. The manifest's input says how pixels are fed: layout (NHWC or NCHW),
 * channel order, range ('0-255': (v - mean) / std; '0-1': (v / 255 - mean) / std). Its output says
 * which tensor is the embedding, how a token output [N, T, D] is pooled (cls token or mean), and
 * whether the model already L2-normalises (if not, the embedder does). Output vectors are copies
 * (one Float32Array per image).
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { KagamiError } from '../../errors';
import type { RawImage } from '../../media/types';
import type { Region } from '../embedder';
import { buildModel } from '../../models/build';
import { BackgroundBank, bankCacheFile } from './background-bank';
import { InferenceThread } from './inference-thread';
import type { WeightBits } from './int8-weights';
import { expectedSha256, LoadedManifest, loadManifest, type ModelManifest } from './manifest';
import type { ObjectnessProbe } from './objectness';

export interface OnnxEmbedderOptions {
  /** onnxruntime intra-op threads (default 1). */
  threads?: number;
  /** Folder of the model files and lock files (KAGAMI_MODELS_DIR); default: the manifest's folder. */
  modelsDir?: string;
  /** Int8 models with a `weights8` variant: which weights to run (default: by the CPU, int8-weights.ts). */
  int8Weights?: WeightBits;
}

/**
 * Check that a loaded model has the manifest's input and output: names, float32, and the fixed
 * dimensions it declares (dynamic ones, e.g. the batch, are not compared). Throws listing every problem.
 */
export function checkModelSignature(session: ort.InferenceSession, m: ModelManifest): void {
  const problems: string[] = [];
  const { input, output } = m;
  const fixed = (d: number | string | undefined): d is number => typeof d === 'number' && d > 0;
  if (!session.inputNames.includes(input.name)) {
    problems.push(`no input '${input.name}' (inputs: ${session.inputNames.join(', ') || 'none'})`);
  } else {
    const meta = session.inputMetadata?.find((v) => v.name === input.name);
    if (meta?.isTensor) {
      if (meta.type !== 'float32') problems.push(`input '${input.name}' is ${meta.type}, expected float32`);
      const want = input.layout === 'NCHW' ? [0, 3, input.height, input.width] : [0, input.height, input.width, 3];
      if (meta.shape.length && meta.shape.length !== 4) {
        problems.push(`input '${input.name}' has shape [${meta.shape.join(', ')}], expected 4 dimensions (${input.layout})`);
      } else if (meta.shape.length) {
        for (let i = 1; i < 4; i++) {
          const d = meta.shape[i];
          if (fixed(d) && d !== want[i]) {
            problems.push(`input '${input.name}' has shape [${meta.shape.join(', ')}], manifest says ${input.layout} ${input.height}x${input.width}x3`);
            break;
          }
        }
      }
    }
  }
  if (!session.outputNames.includes(output.name)) {
    problems.push(`no output '${output.name}' (outputs: ${session.outputNames.join(', ') || 'none'})`);
  } else {
    const meta = session.outputMetadata?.find((v) => v.name === output.name);
    if (meta?.isTensor) {
      if (meta.type !== 'float32') problems.push(`output '${output.name}' is ${meta.type}, expected float32`);
      const rank = (output.pooling ?? 'none') === 'none' ? 2 : 3;
      const last = meta.shape[meta.shape.length - 1];
      if (meta.shape.length && meta.shape.length !== rank) {
        problems.push(`output '${output.name}' has shape [${meta.shape.join(', ')}], expected ${rank} dimensions (pooling ${output.pooling ?? 'none'})`);
      } else if (fixed(last) && last !== output.dimension) {
        problems.push(`output '${output.name}' has ${last} dimensions, manifest says ${output.dimension}`);
      }
    }
  }
  if (problems.length) throw new Error(`model ${m.id} does not match its manifest: ${problems.join('; ')}`);
}

export class OnnxEmbedder {
  readonly modelId: string;
  readonly dimension: number;
  readonly weightBits?: 7 | 8;
  readonly inputWidth: number;
  readonly usage: 'frame' | 'crop';
  readonly calibration?: { floor: number; ceil: number; background?: { floor: number; ceil: number }; review?: number };
  readonly inputHeight: number;
  readonly objectness?: ObjectnessProbe;
  private bank?: Promise<BackgroundBank>;

  private constructor(
    /** The session, in a worker thread (inference would otherwise block the caller's event loop). */
    private readonly runner: InferenceThread,
    readonly manifest: LoadedManifest,
    /** sha256 of the model file (checked against the manifest on load). */
    readonly sha256: string,
    /** The dense form's session (manifest `dense`), in its own worker thread. */
    private readonly denseRunner?: InferenceThread,
  ) {
    this.modelId = manifest.id;
    this.dimension = manifest.output.dimension;
    if (manifest.weightBits) this.weightBits = manifest.weightBits;
    this.inputWidth = manifest.input.width;
    this.usage = manifest.usage ?? 'frame';
    this.calibration = manifest.calibration;
    this.inputHeight = manifest.input.height;
    if (manifest.objectness && this.usage === 'crop') {
      const { weights, bias, floor } = manifest.objectness;
      this.objectness = { weights: Float32Array.from(weights), bias, floor };
    }
    if (this.calibration?.background && this.usage === 'crop') {
      this.backgroundBank = () => (this.bank ??= BackgroundBank.forEmbedder(this, bankCacheFile(manifest.modelPath, this.sha256)));
    }
    if (denseRunner && manifest.dense) {
      const runner = denseRunner;
      const stride = manifest.dense.stride;
      this.embedRegions = (frame, regions) => this.denseVectors(runner, stride, frame, regions);
      this.denseUpTo = manifest.dense.upTo;
    }
  }

  /** See Embedder.embedRegions (only for models whose manifest has a dense form). */
  readonly embedRegions?: (frame: RawImage, regions: readonly Region[]) => Promise<Float32Array[]>;
  readonly denseUpTo?: number;

  /** See Embedder.backgroundBank (only for crop models calibrated against the bank). */
  readonly backgroundBank?: () => Promise<BackgroundBank>;

  /**
   * Load the manifest's model. A missing built model is built first; a missing downloaded model is an
   * error (`kagami models pull ID`: no network access at scan time). Throws if the file's sha256
   * differs from the manifest's (or, for trust-on-first-use downloads, from the lock file's), and
   * refuses a downloaded file whose hash was never pinned.
   */
  static async create(manifestPath: string, opts: OnnxEmbedderOptions = {}): Promise<OnnxEmbedder> {
    const manifest = loadManifest(manifestPath, { modelsDir: opts.modelsDir, int8Weights: opts.int8Weights });
    if (!fs.existsSync(manifest.modelPath)) {
      if (manifest.download) {
        throw new KagamiError('model_missing', `model ${manifest.id} is not downloaded (${manifest.modelPath}): run \`kagami models pull ${manifest.id}\``, 500);
      }
      await buildModel(manifest.manifestPath, opts.modelsDir);
    }
    const bytes = fs.readFileSync(manifest.modelPath);
    const sha = createHash('sha256').update(bytes).digest('hex');
    const expected = expectedSha256(manifest);
    if (expected.sha256 === null) {
      throw new KagamiError(
        'model_unpinned',
        `model file ${manifest.modelPath} has no pinned sha256 (the manifest publishes none and there is no lock file ${manifest.lockPath}); ` +
          `refusing to use it: run \`kagami models pull ${manifest.id} --force\` to download and pin it`,
        500,
      );
    }
    if (sha !== expected.sha256) {
      const where = expected.from === 'lock' ? `the lock file ${manifest.lockPath}` : `manifest ${manifest.manifestPath}`;
      const fix = manifest.download ? `delete it and run \`kagami models pull ${manifest.id}\`` : 'delete the file to rebuild it';
      throw new KagamiError(
        'model_checksum',
        `model file ${manifest.modelPath} has sha256 ${sha}, ${where} expects ${expected.sha256}; refusing to use it (${fix})`,
        500,
      );
    }
    const threads = opts.threads ?? 1;
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`threads must be a positive integer, got ${threads}`);
    // A plain Uint8Array view of this module's realm (not a Buffer): onnxruntime checks
    // `instanceof Uint8Array`, which a Buffer from another realm (jest's sandbox) fails.
    const session = await ort.InferenceSession.create(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      // No busy-waiting worker threads: the scanner runs other stages (decoding, matching) beside
      // the embedder, and spinning threads then steal their cores (measured: 2 spinning threads on
      // a busy 2-core machine were ~45% slower than 1 thread; without spinning they are on par).
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    });
    try {
      checkModelSignature(session, manifest);
    } finally {
      // This session only checks the model; inference runs in a worker thread's own session.
      await session.release();
    }
    const runner = new InferenceThread(new Uint8Array(bytes), threads, manifest.input.name, manifest.output.name);
    let dense: InferenceThread | undefined;
    if (manifest.dense && manifest.densePath) {
      const denseBytes = readPinned(manifest.densePath, manifest.dense.sha256, manifest.manifestPath);
      dense = new InferenceThread(denseBytes, threads, manifest.input.name, manifest.output.name);
    }
    return new OnnxEmbedder(runner, manifest, sha, dense);
  }

  /** Bring an image to the model's input size with the manifest's resize policy (default: stretch). */
  prepare(image: RawImage): Promise<RawImage> {
    return resizeForManifest(image, this.manifest.input);
  }

  /** Embed a batch (one inference call); returns one vector per image, in order. */
  async embed(images: RawImage[]): Promise<Float32Array[]> {
    if (images.length === 0) return [];
    const w = this.inputWidth;
    const h = this.inputHeight;
    const pixels = w * h;
    const data = new Float32Array(images.length * pixels * 3);
    images.forEach((img, n) => {
      if (img.width !== w || img.height !== h) {
        throw new Error(`image ${n} is ${img.width}x${img.height}, model ${this.modelId} needs ${w}x${h} (use prepare or resizeForModel)`);
      }
      this.feedPixels(img, data, n * pixels * 3, `image ${n}`);
    });
    const dims = this.manifest.input.layout === 'NCHW' ? [images.length, 3, h, w] : [images.length, h, w, 3];
    const out = await this.runner.run(data, dims);
    return this.vectors(out.data, out.dims, images.length);
  }

  /** Writes `img`'s pixels into `data` from `offset` as the manifest's input wants them (layout, order, mean/std). */
  private feedPixels(img: RawImage, data: Float32Array, offset: number, what: string): void {
    const { mean, std, layout, channels, range } = this.manifest.input;
    const pre = range === '0-1' ? 1 / 255 : 1;
    const scale = std.map((s) => 1 / s);
    const [c0, c1, c2] = channels === 'BGR' ? [2, 1, 0] : [0, 1, 2];
    const [m0, m1, m2] = [mean[c0], mean[c1], mean[c2]];
    const [k0, k1, k2] = [scale[c0], scale[c1], scale[c2]];
    const pixels = img.width * img.height;
    const ch = img.channels;
    if ((ch !== 3 && ch !== 4) || img.data.length < pixels * ch) throw new Error(`${what}: bad pixel data`);
    const src = img.data;
    if (layout === 'NCHW') {
      const p0 = offset;
      const p1 = p0 + pixels;
      const p2 = p1 + pixels;
      for (let i = 0, s = 0; i < pixels; i++, s += ch) {
        data[p0 + i] = (src[s + c0] * pre - m0) * k0;
        data[p1 + i] = (src[s + c1] * pre - m1) * k1;
        data[p2 + i] = (src[s + c2] * pre - m2) * k2;
      }
    } else {
      let o = offset;
      for (let i = 0, s = 0; i < pixels; i++, s += ch) {
        data[o++] = (src[s + c0] * pre - m0) * k0;
        data[o++] = (src[s + c1] * pre - m1) * k1;
        data[o++] = (src[s + c2] * pre - m2) * k2;
      }
    }
  }

  /**
   * The dense form's vectors of `regions`: per region size, the frame scaled (sharp, the references'
   * lanczos3) so that the region measures the input's side, one run over it, and one box per region
   * on the feature map. Boxes are moved up and left by half a cell: RoiAlign samples at box start +
   * (i + 0.5) cells, and a cell's value sits at its integer index, so this puts every sample of a
   * cell-aligned box on a cell (the crop's own pooling, exactly, up to the surroundings in view).
   */
  private async denseVectors(runner: InferenceThread, stride: number, frame: RawImage, regions: readonly Region[]): Promise<Float32Array[]> {
    const side = this.inputWidth;
    const bySize = new Map<number, number[]>();
    regions.forEach((r, i) => {
      if (!(r.size > 0)) throw new Error(`region ${i} has size ${r.size}`);
      const list = bySize.get(r.size) ?? [];
      list.push(i);
      bySize.set(r.size, list);
    });
    const out: Float32Array[] = new Array(regions.length);
    const half = stride / 2;
    await Promise.all(
      [...bySize].map(async ([size, idx]) => {
        const f = side / size;
        const w = Math.max(side, Math.round(frame.width * f));
        const h = Math.max(side, Math.round(frame.height * f));
        const scaled = await resizeRaw(frame, w, h);
        const data = new Float32Array(w * h * 3);
        this.feedPixels(scaled, data, 0, 'frame');
        const fx = w / frame.width;
        const fy = h / frame.height;
        const rois = new Float32Array(idx.length * 4);
        idx.forEach((i, n) => {
          const r = regions[i];
          rois[n * 4] = r.x * fx - half;
          rois[n * 4 + 1] = r.y * fy - half;
          rois[n * 4 + 2] = (r.x + r.size) * fx - half;
          rois[n * 4 + 3] = (r.y + r.size) * fy - half;
        });
        const res = await runner.runFeeds({
          [this.manifest.input.name]: { data, dims: [1, h, w, 3] },
          rois: { data: rois, dims: [idx.length, 4] },
          batch_indices: { data: new BigInt64Array(idx.length), dims: [idx.length] },
        });
        const vectors = this.vectors(res.data, res.dims, idx.length);
        idx.forEach((i, n) => (out[i] = vectors[n]));
      }),
    );
    return out;
  }

  /** Pick (pool) one vector per image out of the output tensor, L2-normalising when the model does not. */
  private vectors(values: Float32Array, dims: readonly number[], count: number): Float32Array[] {
    const d = this.dimension;
    const pooling = this.manifest.output.pooling ?? 'none';
    const vectors: Float32Array[] = [];
    if (pooling === 'none') {
      if (values.length !== count * d) throw new Error(`model ${this.modelId} returned ${values.length} values for ${count} images`);
      for (let n = 0; n < count; n++) vectors.push(Float32Array.from(values.subarray(n * d, (n + 1) * d)));
    } else {
      if (dims.length !== 3 || dims[0] !== count || dims[2] !== d || dims[1] < 1) {
        throw new Error(`model ${this.modelId} returned shape [${dims.join(', ')}], expected [${count}, tokens, ${d}]`);
      }
      const t = dims[1];
      for (let n = 0; n < count; n++) {
        const base = n * t * d;
        if (pooling === 'cls') {
          vectors.push(Float32Array.from(values.subarray(base, base + d)));
        } else {
          const sum = new Float64Array(d);
          for (let k = 0; k < t; k++) for (let i = 0, o = base + k * d; i < d; i++, o++) sum[i] += values[o];
          vectors.push(Float32Array.from(sum, (v) => v / t));
        }
      }
    }
    if (!this.manifest.output.normalized) {
      for (const v of vectors) {
        let norm = 0;
        for (let i = 0; i < v.length; i++) norm += v[i] * v[i];
        norm = Math.sqrt(norm);
        if (norm > 0) for (let i = 0; i < v.length; i++) v[i] /= norm;
      }
    }
    return vectors;
  }

  async dispose(): Promise<void> {
    await Promise.all([this.runner.close(), this.denseRunner?.close()]);
  }
}

export type ResizeFit = 'fill' | 'contain' | 'cover';

/**
 * Resize an image to the manifest input's width x height RGB with its resize policy (default
 * stretch, lanczos3). centre-crop scales the shorter side to `shorterSide` (the image's long side
 * scaled and truncated, as Hugging Face image processors do) and cuts the centre; letterbox pads with
 * grey 128.
 */
export async function resizeForManifest(image: RawImage, input: Pick<ModelManifest['input'], 'width' | 'height' | 'resize'>): Promise<RawImage> {
  const { width: w, height: h } = input;
  const policy = input.resize ?? { mode: 'stretch' as const };
  const kernel = policy.kernel ?? 'lanczos3';
  let img = sharp(image.data, { raw: { width: image.width, height: image.height, channels: image.channels } }).removeAlpha();
  if (policy.mode === 'stretch') {
    img = img.resize(w, h, { fit: 'fill', kernel });
  } else if (policy.mode === 'letterbox') {
    img = img.resize(w, h, { fit: 'contain', kernel, background: { r: 128, g: 128, b: 128 } });
  } else {
    const side = policy.shorterSide ?? Math.min(w, h);
    // As Hugging Face's shortest_edge resize: the shorter side becomes `side`, the other is truncated.
    const portrait = image.width <= image.height;
    const short = portrait ? image.width : image.height;
    const rw = Math.max(w, portrait ? side : Math.floor((side * image.width) / short));
    const rh = Math.max(h, portrait ? Math.floor((side * image.height) / short) : side);
    img = img
      .resize(rw, rh, { fit: 'fill', kernel })
      .extract({ left: Math.floor((rw - w) / 2), top: Math.floor((rh - h) / 2), width: w, height: h });
  }
  const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || info.width !== w || info.height !== h) throw new Error('unexpected resize result');
  return { width: w, height: h, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

/**
 * Resize an image to w x h RGB with sharp. 'fill' (default) stretches, 'cover' crops the centre,
 * 'contain' letterboxes on `background` (default neutral grey 128).
 */
export async function resizeForModel(
  image: RawImage,
  w: number,
  h: number,
  opts: { fit?: ResizeFit; background?: [number, number, number] } = {},
): Promise<RawImage> {
  const [r, g, b] = opts.background ?? [128, 128, 128];
  const { data, info } = await sharp(image.data, { raw: { width: image.width, height: image.height, channels: image.channels } })
    .removeAlpha()
    .resize(w, h, { fit: opts.fit ?? 'fill', background: { r, g, b } })
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || info.width !== w || info.height !== h) throw new Error('unexpected resize result');
  return { width: w, height: h, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

/** An RGB(A) image stretched to w x h RGB (sharp, lanczos3: the filter that prepares the references). */
async function resizeRaw(image: RawImage, w: number, h: number): Promise<RawImage> {
  if (image.width === w && image.height === h && image.channels === 3) return image;
  const { data, info } = await sharp(image.data, { raw: { width: image.width, height: image.height, channels: image.channels } })
    .removeAlpha()
    .resize(w, h, { fit: 'fill' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || info.width !== w || info.height !== h) throw new Error('unexpected resize result');
  return { width: w, height: h, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

/** A committed file's bytes, refused when its sha256 is not the manifest's. */
function readPinned(file: string, sha256: string, manifestPath: string): Uint8Array {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new KagamiError('model_missing', `model file ${file} (named by ${manifestPath}) cannot be read: ${(e as Error).message}`, 500);
  }
  const sha = createHash('sha256').update(bytes).digest('hex');
  if (sha !== sha256) {
    throw new KagamiError('model_checksum', `model file ${file} has sha256 ${sha}, manifest ${manifestPath} expects ${sha256}; refusing to use it`, 500);
  }
  return new Uint8Array(bytes);
}

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
import { buildModel } from '../../models/build';
import { BackgroundBank, bankCacheFile } from './background-bank';
import { InferenceThread } from './inference-thread';
import { expectedSha256, LoadedManifest, loadManifest, type ModelManifest } from './manifest';

export interface OnnxEmbedderOptions {
  /** onnxruntime intra-op threads (default 1). */
  threads?: number;
  /** Folder of the model files and lock files (KAGAMI_MODELS_DIR); default: the manifest's folder. */
  modelsDir?: string;
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
  readonly inputWidth: number;
  readonly usage: 'frame' | 'crop';
  readonly calibration?: { floor: number; ceil: number; background?: { floor: number; ceil: number } };
  readonly inputHeight: number;
  private bank?: Promise<BackgroundBank>;

  private constructor(
    /** The session, in a worker thread (inference would otherwise block the caller's event loop). */
    private readonly runner: InferenceThread,
    readonly manifest: LoadedManifest,
    /** sha256 of the model file (checked against the manifest on load). */
    readonly sha256: string,
  ) {
    this.modelId = manifest.id;
    this.dimension = manifest.output.dimension;
    this.inputWidth = manifest.input.width;
    this.usage = manifest.usage ?? 'frame';
    this.calibration = manifest.calibration;
    this.inputHeight = manifest.input.height;
    if (this.calibration?.background && this.usage === 'crop') {
      this.backgroundBank = () => (this.bank ??= BackgroundBank.forEmbedder(this, bankCacheFile(manifest.modelPath, this.sha256)));
    }
  }

  /** See Embedder.backgroundBank (only for crop models calibrated against the bank). */
  readonly backgroundBank?: () => Promise<BackgroundBank>;

  /**
   * Load the manifest's model. A missing built model is built first; a missing downloaded model is an
   * error (`kagami models pull ID`: no network access at scan time). Throws if the file's sha256
   * differs from the manifest's (or, for trust-on-first-use downloads, from the lock file's), and
   * refuses a downloaded file whose hash was never pinned.
   */
  static async create(manifestPath: string, opts: OnnxEmbedderOptions = {}): Promise<OnnxEmbedder> {
    const manifest = loadManifest(manifestPath, { modelsDir: opts.modelsDir });
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
    return new OnnxEmbedder(runner, manifest, sha);
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
    const { mean, std, layout, channels, range } = this.manifest.input;
    const pre = range === '0-1' ? 1 / 255 : 1;
    const scale = std.map((s) => 1 / s);
    const [c0, c1, c2] = channels === 'BGR' ? [2, 1, 0] : [0, 1, 2];
    const [m0, m1, m2] = [mean[c0], mean[c1], mean[c2]];
    const [k0, k1, k2] = [scale[c0], scale[c1], scale[c2]];
    const pixels = w * h;
    const data = new Float32Array(images.length * pixels * 3);
    images.forEach((img, n) => {
      if (img.width !== w || img.height !== h) {
        throw new Error(`image ${n} is ${img.width}x${img.height}, model ${this.modelId} needs ${w}x${h} (use prepare or resizeForModel)`);
      }
      const ch = img.channels;
      if ((ch !== 3 && ch !== 4) || img.data.length < pixels * ch) throw new Error(`image ${n}: bad pixel data`);
      const src = img.data;
      if (layout === 'NCHW') {
        const p0 = n * pixels * 3;
        const p1 = p0 + pixels;
        const p2 = p1 + pixels;
        for (let i = 0, s = 0; i < pixels; i++, s += ch) {
          data[p0 + i] = (src[s + c0] * pre - m0) * k0;
          data[p1 + i] = (src[s + c1] * pre - m1) * k1;
          data[p2 + i] = (src[s + c2] * pre - m2) * k2;
        }
      } else {
        let o = n * pixels * 3;
        for (let i = 0, s = 0; i < pixels; i++, s += ch) {
          data[o++] = (src[s + c0] * pre - m0) * k0;
          data[o++] = (src[s + c1] * pre - m1) * k1;
          data[o++] = (src[s + c2] * pre - m2) * k2;
        }
      }
    });
    const dims = layout === 'NCHW' ? [images.length, 3, h, w] : [images.length, h, w, 3];
    const out = await this.runner.run(data, dims);
    return this.vectors(out.data, out.dims, images.length);
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
    await this.runner.close();
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

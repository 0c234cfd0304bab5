/**
 * Runs a manifest-described ONNX embedding model with onnxruntime-node.
 *
 * Images must already be at the model's input size (see resizeForModel). RGBA drops the alpha
 * channel. Per-channel (v - mean) / std comes from the manifest. Output vectors are copies (one
 * Float32Array per image), L2-normalised when the manifest says `output.normalized`.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import type { RawImage } from '../../media/types';
import { buildModel } from '../../models/build';
import { LoadedManifest, loadManifest } from './manifest';

export interface OnnxEmbedderOptions {
  /** onnxruntime intra-op threads (default 1). */
  threads?: number;
}

export class OnnxEmbedder {
  readonly modelId: string;
  readonly dimension: number;
  readonly inputWidth: number;
  readonly inputHeight: number;

  private constructor(
    private readonly session: ort.InferenceSession,
    readonly manifest: LoadedManifest,
  ) {
    this.modelId = manifest.id;
    this.dimension = manifest.output.dimension;
    this.inputWidth = manifest.input.width;
    this.inputHeight = manifest.input.height;
  }

  /**
   * Load the manifest's model, building the .onnx file first if it is missing. Throws if the file's
   * sha256 differs from the manifest (a stale or tampered file: delete it to rebuild).
   */
  static async create(manifestPath: string, opts: OnnxEmbedderOptions = {}): Promise<OnnxEmbedder> {
    const manifest = loadManifest(manifestPath);
    if (!fs.existsSync(manifest.modelPath)) await buildModel(manifest.manifestPath);
    const bytes = fs.readFileSync(manifest.modelPath);
    const sha = createHash('sha256').update(bytes).digest('hex');
    if (sha !== manifest.sha256) {
      throw new Error(
        `model file ${manifest.modelPath} has sha256 ${sha}, manifest ${manifest.manifestPath} expects ${manifest.sha256}; ` +
          'refusing to use it (delete the file to rebuild it)',
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
    if (!session.inputNames.includes(manifest.input.name) || !session.outputNames.includes(manifest.output.name)) {
      throw new Error(`model ${manifest.id}: expected input '${manifest.input.name}' and output '${manifest.output.name}'`);
    }
    return new OnnxEmbedder(session, manifest);
  }

  /** Embed a batch of images (one inference call); returns one vector per image, in order. */
  async embed(images: RawImage[]): Promise<Float32Array[]> {
    if (images.length === 0) return [];
    const w = this.inputWidth;
    const h = this.inputHeight;
    const { mean, std } = this.manifest.input;
    const scale = std.map((s) => 1 / s);
    const pixels = w * h;
    const data = new Float32Array(images.length * pixels * 3);
    images.forEach((img, n) => {
      if (img.width !== w || img.height !== h) {
        throw new Error(`image ${n} is ${img.width}x${img.height}, model ${this.modelId} needs ${w}x${h} (use resizeForModel)`);
      }
      const ch = img.channels;
      if ((ch !== 3 && ch !== 4) || img.data.length < pixels * ch) throw new Error(`image ${n}: bad pixel data`);
      const src = img.data;
      let o = n * pixels * 3;
      for (let i = 0, s = 0; i < pixels; i++, s += ch) {
        data[o++] = (src[s] - mean[0]) * scale[0];
        data[o++] = (src[s + 1] - mean[1]) * scale[1];
        data[o++] = (src[s + 2] - mean[2]) * scale[2];
      }
    });
    const input = new ort.Tensor('float32', data, [images.length, h, w, 3]);
    const result = await this.session.run({ [this.manifest.input.name]: input });
    const out = result[this.manifest.output.name];
    const values = out.data as Float32Array;
    const d = this.dimension;
    if (values.length !== images.length * d) throw new Error(`model ${this.modelId} returned ${values.length} values for ${images.length} images`);
    const vectors: Float32Array[] = [];
    for (let n = 0; n < images.length; n++) vectors.push(Float32Array.from(values.subarray(n * d, (n + 1) * d)));
    out.dispose?.();
    return vectors;
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}

export type ResizeFit = 'fill' | 'contain' | 'cover';

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

/**
 * End-to-end check of the embedding tier: build the ONNX model from the nsfwjs MobileNetV2 layers
 * model with our converter, run it with onnxruntime-node through OnnxEmbedder, and compare with an
 * independent computation in pure-JS TensorFlow.js (CPU backend): tfjs loads the same layers model
 * itself (its own weight dequantisation, its own layer implementations), we cut it at
 * block_10_project_BN and compute the GeM-3x3 + L2 head with tfjs ops.
 */
import * as tf from '@tensorflow/tfjs';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { RawImage } from '../../src/media/types';
import { buildModel } from '../../src/models/build';
import { loadManifest } from '../../src/signals/embedding/manifest';
import { OnnxEmbedder, resizeForModel } from '../../src/signals/embedding/onnx-embedder';
import { gridBounds } from '../../src/signals/embedding/tfjs-to-onnx';

const REPO = path.resolve(__dirname, '../..');
const MANIFEST = path.join(REPO, 'models/mobilenetv2-block10-gem3x3.json');
const NSFWJS_MODEL_DIR = path.join(REPO, 'node_modules/nsfwjs/dist/models/mobilenet_v2');
const SIZE = 224;

/** Deterministic synthetic test images (no files, no randomness). */
function syntheticImages(): RawImage[] {
  const make = (f: (x: number, y: number) => [number, number, number]): RawImage => {
    const data = new Uint8Array(SIZE * SIZE * 3);
    for (let y = 0; y < SIZE; y++)
      for (let x = 0; x < SIZE; x++) data.set(f(x, y).map((v) => Math.max(0, Math.min(255, Math.round(v)))), (y * SIZE + x) * 3);
    return { width: SIZE, height: SIZE, channels: 3, data };
  };
  let seed = 12345;
  const lcg = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  return [
    make((x, y) => [x * 1.14, y * 1.14, 255 - (x + y) * 0.57]), // colour gradients
    make((x, y) => ((Math.floor(x / 28) + Math.floor(y / 28)) % 2 ? [230, 40, 40] : [20, 20, 120])), // checkerboard
    make((x, y) => {
      const r = Math.hypot(x - 100, y - 120);
      return r < 60 ? [250, 220, 30] : r < 70 ? [0, 0, 0] : [90 + 60 * Math.sin(y / 9), 160, 200]; // cartoon-ish disc
    }),
    make(() => [lcg(), lcg(), lcg()]), // noise
  ];
}

/** Independent reference: tfjs layers model cut at block_10_project_BN, GeM 3x3 + L2 in tfjs ops. */
async function tfjsReference(images: RawImage[]): Promise<Float32Array[]> {
  tf.env().set('IS_TEST', true); // silences the "install tfjs-node" console warning
  await tf.setBackend('cpu');
  /* eslint-disable @typescript-eslint/no-require-imports */
  const json = require(path.join(NSFWJS_MODEL_DIR, 'model.min.js'));
  const shard: string = require(path.join(NSFWJS_MODEL_DIR, 'group1-shard1of1.min.js'));
  /* eslint-enable @typescript-eslint/no-require-imports */
  const bytes = Buffer.from(shard, 'base64');
  const weightData = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  const full = await tf.loadLayersModel(
    tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs: json.weightsManifest[0].weights, weightData }),
  );
  const trunk = tf.model({ inputs: full.inputs, outputs: full.getLayer('block_10_project_BN').output as tf.SymbolicTensor });
  // Cell boundaries written out by hand: floor(i*14/3) -> [0,4), [4,9), [9,14).
  const cells: Array<[number, number]> = [
    [0, 4],
    [4, 9],
    [9, 14],
  ];
  return tf.tidy(() => {
    const pixels = new Float32Array(images.length * SIZE * SIZE * 3);
    images.forEach((img, n) => img.data.forEach((v, i) => (pixels[n * SIZE * SIZE * 3 + i] = v / 127.5 - 1)));
    const feat = trunk.predict(tf.tensor4d(pixels, [images.length, SIZE, SIZE, 3])) as tf.Tensor4D;
    expect(feat.shape).toEqual([images.length, 14, 14, 96]);
    const powered = tf.pow(tf.maximum(feat, 1e-6), 3) as tf.Tensor4D;
    const parts: tf.Tensor[] = [];
    for (const [y0, y1] of cells)
      for (const [x0, x1] of cells) parts.push(tf.mean(tf.slice(powered, [0, y0, x0, 0], [-1, y1 - y0, x1 - x0, -1]), [1, 2]));
    const gem = tf.pow(tf.concat(parts, 1), 1 / 3);
    const emb = tf.div(gem, tf.norm(gem, 2, 1, true));
    const flat = emb.dataSync() as Float32Array;
    return images.map((_, n) => Float32Array.from(flat.subarray(n * 864, (n + 1) * 864)));
  });
}

describe('mobilenetv2-block10-gem3x3 embedding model', () => {
  let tmp: string;
  let manifestCopy: string;
  let embedder: OnnxEmbedder;
  const images = syntheticImages();

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kagami-emb-'));
    // A manifest copy in an empty folder: the embedder must build the missing .onnx itself.
    manifestCopy = path.join(tmp, path.basename(MANIFEST));
    fs.copyFileSync(MANIFEST, manifestCopy);
    embedder = await OnnxEmbedder.create(manifestCopy, { threads: 1 });
  });

  afterAll(async () => {
    await embedder?.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('lazily built file matches the manifest sha256; builds are deterministic', async () => {
    const manifest = loadManifest(manifestCopy);
    const built = fs.readFileSync(manifest.modelPath);
    expect(createHash('sha256').update(built).digest('hex')).toBe(manifest.sha256);
    const again = await buildModel(MANIFEST, path.join(tmp, 'second'));
    expect(again.sha256).toBe(manifest.sha256);
    expect(fs.readFileSync(again.path).equals(built)).toBe(true);
  });

  test('embedder metadata', () => {
    expect(embedder.modelId).toBe('mobilenetv2-block10-gem3x3');
    expect(embedder.dimension).toBe(864);
    expect([embedder.inputWidth, embedder.inputHeight]).toEqual([224, 224]);
    expect(gridBounds(14, 3)).toEqual([
      [0, 4],
      [4, 9],
      [9, 14],
    ]);
  });

  test('ONNX embeddings match the independent tfjs computation', async () => {
    const onnx = await embedder.embed(images);
    const ref = await tfjsReference(images);
    expect(onnx).toHaveLength(images.length);
    let maxErr = 0;
    onnx.forEach((v, n) => {
      expect(v).toHaveLength(864);
      let norm = 0;
      for (let i = 0; i < v.length; i++) {
        norm += v[i] * v[i];
        maxErr = Math.max(maxErr, Math.abs(v[i] - ref[n][i]));
      }
      expect(Math.sqrt(norm)).toBeCloseTo(1, 5);
    });
    expect(maxErr).toBeLessThan(1e-3); // measured: ~3e-7
    // Different images must give clearly different vectors (the head is not degenerate).
    const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + x * b[i], 0);
    expect(dot(onnx[0], onnx[1])).toBeLessThan(0.99);
  });

  test('batching, RGBA input and single images agree', async () => {
    const batch = await embedder.embed(images);
    const single = await embedder.embed([images[2]]);
    const rgba: RawImage = { width: SIZE, height: SIZE, channels: 4, data: new Uint8Array(SIZE * SIZE * 4) };
    for (let i = 0; i < SIZE * SIZE; i++) {
      rgba.data.set(images[2].data.subarray(i * 3, i * 3 + 3), i * 4);
      rgba.data[i * 4 + 3] = 77;
    }
    const [fromRgba] = await embedder.embed([rgba]);
    for (let i = 0; i < 864; i++) {
      expect(Math.abs(single[0][i] - batch[2][i])).toBeLessThan(1e-5);
      expect(fromRgba[i]).toBe(single[0][i]);
    }
  });

  test('rejects wrong input sizes; resizeForModel produces the model size', async () => {
    const small: RawImage = { width: 100, height: 60, channels: 3, data: new Uint8Array(100 * 60 * 3).fill(200) };
    await expect(embedder.embed([small])).rejects.toThrow(/224x224/);
    const resized = await resizeForModel(small, 224, 224, { fit: 'contain' });
    expect([resized.width, resized.height, resized.channels, resized.data.length]).toEqual([224, 224, 3, 224 * 224 * 3]);
    const [v] = await embedder.embed([resized]);
    expect(v).toHaveLength(864);
  });

  test('refuses a model file whose sha256 differs from the manifest', async () => {
    const dir = path.join(tmp, 'tampered');
    fs.mkdirSync(dir);
    const m = path.join(dir, path.basename(MANIFEST));
    fs.copyFileSync(MANIFEST, m);
    const good = fs.readFileSync(loadManifest(manifestCopy).modelPath);
    const bad = Buffer.from(good);
    bad[bad.length - 1] ^= 1;
    fs.writeFileSync(loadManifest(m).modelPath, bad);
    await expect(OnnxEmbedder.create(m)).rejects.toThrow(/sha256/);
  });
});

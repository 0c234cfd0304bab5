/**
 * The peer the benchmark compares Kagami with: a 64-bit DCT perceptual hash (pHash).
 *
 * hash(image) = greyscale 32×32 (area resampling) → 2-D DCT-II → the 8×8 lowest frequencies →
 * bit = coefficient > median of those 64 (the DC term included in the median, as in the
 * classic pHash). A frame is hashed whole and as 3×3 non-overlapping tiles; a reference is hashed
 * trimmed to the character (Kagami's own decodeReference) flattened on grey, and mirrored.
 * Score of a frame for a character = 1 − (min Hamming distance over tiles × references) / 64.
 */
import sharp from 'sharp';
import { decodeReference } from '../../media/image';
import type { RawImage } from '../../media/types';

const N = 32;
const K = 8;
const COS: Float64Array = (() => {
  const t = new Float64Array(K * N);
  for (let u = 0; u < K; u++) for (let x = 0; x < N; x++) t[u * N + x] = Math.cos(((2 * x + 1) * u * Math.PI) / (2 * N));
  return t;
})();

/** pHash of a 32×32 greyscale image (row-major, any scale). */
export function dctHash(grey: ArrayLike<number>): bigint {
  if (grey.length !== N * N) throw new Error(`dctHash needs ${N}×${N} pixels`);
  // Rows first (only K frequencies needed), then columns.
  const rows = new Float64Array(N * K);
  for (let y = 0; y < N; y++) {
    for (let u = 0; u < K; u++) {
      let s = 0;
      for (let x = 0; x < N; x++) s += grey[y * N + x] * COS[u * N + x];
      rows[y * K + u] = s;
    }
  }
  const coeffs = new Float64Array(K * K);
  for (let v = 0; v < K; v++) {
    for (let u = 0; u < K; u++) {
      let s = 0;
      for (let y = 0; y < N; y++) s += rows[y * K + u] * COS[v * N + y];
      coeffs[v * K + u] = s;
    }
  }
  const sorted = Float64Array.from(coeffs).sort();
  const median = (sorted[31] + sorted[32]) / 2;
  let h = 0n;
  for (let i = 0; i < 64; i++) if (coeffs[i] > median) h |= 1n << BigInt(i);
  return h;
}

export function hamming(a: bigint, b: bigint): number {
  let x = a ^ b;
  let n = 0;
  while (x) {
    x &= x - 1n;
    n++;
  }
  return n;
}

async function hashRaw(img: RawImage, region?: { left: number; top: number; width: number; height: number }, flop = false): Promise<bigint> {
  let s = sharp(img.data, { raw: { width: img.width, height: img.height, channels: img.channels } });
  if (img.channels === 4) s = s.flatten({ background: { r: 128, g: 128, b: 128 } });
  if (region) s = s.extract(region);
  if (flop) s = s.flop();
  const grey = await s.greyscale().resize(N, N, { fit: 'fill', kernel: 'cubic' }).raw().toBuffer();
  // sharp may keep 1 channel or 3 after greyscale(); take the first channel of each pixel.
  const ch = grey.length / (N * N);
  const px = new Float64Array(N * N);
  for (let i = 0; i < N * N; i++) px[i] = grey[i * ch];
  return dctHash(px);
}

/** The frame whole, then its 3×3 tiles. */
export async function frameHashes(frame: RawImage): Promise<bigint[]> {
  const out = [await hashRaw(frame)];
  const tw = Math.floor(frame.width / 3);
  const th = Math.floor(frame.height / 3);
  for (let j = 0; j < 3; j++) for (let i = 0; i < 3; i++) out.push(await hashRaw(frame, { left: i * tw, top: j * th, width: tw, height: th }));
  return out;
}

/** A reference file trimmed to the character, as is and mirrored. */
export async function referenceHashes(name: string, bytes: Buffer): Promise<bigint[]> {
  const { image } = await decodeReference(name, bytes);
  return [await hashRaw(image), await hashRaw(image, undefined, true)];
}

/** 1 − min Hamming / 64 between any frame hash and any reference hash. */
export function phashScore(frame: readonly bigint[], refs: readonly bigint[]): number {
  let best = 64;
  for (const a of frame) for (const b of refs) best = Math.min(best, hamming(a, b));
  return 1 - best / 64;
}

/**
 * Decoding reference art with sharp, under pixel limits, and isolating the character from its
 * canvas: transparent or uniform borders are trimmed so that features describe the character.
 * Also cuts a region out of a stored frame (a match's evidence) as a new reference image.
 */
import sharp, { type Metadata } from 'sharp';
import { InvalidMediaError } from '../errors';
import type { RawImage } from './types';

export interface DecodedReference {
  /** The trimmed character, RGBA: alpha 0 marks the canvas (transparent pixels). */
  image: RawImage;
  /** Size of the file as stored, before trimming. */
  originalWidth: number;
  originalHeight: number;
  format: string;
}

export interface DecodeLimits {
  /** Largest accepted width × height; larger files (decompression bombs) are refused before decoding. */
  maxPixels: number;
  /** Smallest accepted side after trimming, in pixels. */
  minSide: number;
}

export const DEFAULT_DECODE_LIMITS: DecodeLimits = { maxPixels: 40_000_000, minSide: 16 };

/** Reads an image file's header and pixels; throws InvalidMediaError naming the file on anything unusable. */
export async function decodeReference(
  name: string,
  bytes: Buffer,
  limits: DecodeLimits = DEFAULT_DECODE_LIMITS,
): Promise<DecodedReference> {
  if (bytes.length === 0) throw new InvalidMediaError(name, 'file is empty (0 bytes)');
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw new InvalidMediaError(name, 'not a supported image (PNG, JPEG, WebP, GIF, TIFF, AVIF, SVG)', { cause: e });
  }
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  if (!w || !h) throw new InvalidMediaError(name, 'image has no size');
  if (w * h > limits.maxPixels) {
    throw new InvalidMediaError(name, `image is ${w}×${h} = ${w * h} pixels, over the limit of ${limits.maxPixels}`);
  }
  try {
    const base = sharp(bytes, { limitInputPixels: limits.maxPixels, failOn: 'error' }).rotate();
    const rgba = await base.ensureAlpha().raw().toBuffer({ resolveWithObject: true });
    const image = trimCanvas({ width: rgba.info.width, height: rgba.info.height, channels: 4, data: rgba.data });
    if (Math.min(image.width, image.height) < limits.minSide) {
      throw new InvalidMediaError(name, `the character is only ${image.width}×${image.height} pixels after trimming the background; need at least ${limits.minSide}`);
    }
    return { image, originalWidth: w, originalHeight: h, format: meta.format ?? 'unknown' };
  } catch (e) {
    if (e instanceof InvalidMediaError) throw e;
    throw new InvalidMediaError(name, `image could not be decoded (${(e as Error).message})`, { cause: e });
  }
}

function colourDistance(d: Uint8Array, i: number, r: number, g: number, b: number): number {
  return Math.max(Math.abs(d[i] - r), Math.abs(d[i + 1] - g), Math.abs(d[i + 2] - b));
}

/**
 * Marks the canvas as transparent and crops to the character. The canvas is what is connected to
 * the image border and is either transparent already, or within a small colour distance of the
 * dominant border colour (a white or flat backdrop). Art that fills the whole picture is kept whole.
 */
export function trimCanvas(img: RawImage, tolerance = 24): RawImage {
  const { width: w, height: h } = img;
  const src = img.data;
  const data = new Uint8Array(src); // copy: we rewrite alpha
  // Dominant border colour among opaque border pixels (quantised to 16 levels a channel).
  const counts = new Map<number, number>();
  let opaqueBorder = 0;
  const borderIdx: number[] = [];
  for (let x = 0; x < w; x++) borderIdx.push(x, (h - 1) * w + x);
  for (let y = 1; y < h - 1; y++) borderIdx.push(y * w, y * w + w - 1);
  for (const p of borderIdx) {
    const i = p * 4;
    if (data[i + 3] < 128) continue;
    opaqueBorder++;
    const key = ((data[i] >> 4) << 8) | ((data[i + 1] >> 4) << 4) | (data[i + 2] >> 4);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  let bg: [number, number, number] | undefined;
  let best = 0;
  for (const [k, c] of counts) if (c > best) (best = c), (bg = [((k >> 8) & 15) * 16 + 8, ((k >> 4) & 15) * 16 + 8, (k & 15) * 16 + 8]);
  // A backdrop is uniform: most of the opaque border shares one colour.
  const uniform = bg !== undefined && best >= 0.6 * opaqueBorder;
  const isCanvas = (p: number) => {
    const i = p * 4;
    if (data[i + 3] < 128) return true;
    return uniform && colourDistance(data, i, bg![0], bg![1], bg![2]) <= tolerance + 8;
  };
  // Flood fill from the border through canvas pixels.
  const seen = new Uint8Array(w * h);
  const stack: number[] = [];
  for (const p of borderIdx) if (!seen[p] && isCanvas(p)) (seen[p] = 1), stack.push(p);
  while (stack.length) {
    const p = stack.pop()!;
    const x = p % w;
    const y = (p - x) / w;
    const nb = [x > 0 ? p - 1 : -1, x < w - 1 ? p + 1 : -1, y > 0 ? p - w : -1, y < h - 1 ? p + w : -1];
    for (const q of nb) if (q >= 0 && !seen[q] && isCanvas(q)) (seen[q] = 1), stack.push(q);
  }
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = y * w + x;
      if (seen[p]) {
        data[p * 4 + 3] = 0;
      } else {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  if (x1 < 0) return { width: w, height: h, channels: 4, data: new Uint8Array(src) }; // nothing but canvas: keep as is
  const cw = x1 - x0 + 1;
  const ch = y1 - y0 + 1;
  const out = new Uint8Array(cw * ch * 4);
  for (let y = 0; y < ch; y++) out.set(data.subarray(((y + y0) * w + x0) * 4, ((y + y0) * w + x1 + 1) * 4), y * cw * 4);
  return { width: cw, height: ch, channels: 4, data: out };
}

/**
 * A picture fitted (aspect kept, cubic) into `scale`·w × `scale`·h and centred on a w×h canvas of
 * `background` (RGBA flattened onto it first). Scale 1 is resizeRaw(…, 'contain').
 */
export async function resizeCentred(img: RawImage, w: number, h: number, scale: number, background = { r: 128, g: 128, b: 128 }): Promise<RawImage> {
  const sw = Math.max(1, Math.round(w * scale));
  const sh = Math.max(1, Math.round(h * scale));
  if (sw >= w && sh >= h) return resizeRaw(img, w, h, 'contain', background);
  const [px, py] = [w - sw, h - sh];
  let s = sharp(img.data, { raw: { width: img.width, height: img.height, channels: img.channels } });
  if (img.channels === 4) s = s.flatten({ background });
  const out = await s
    .resize(sw, sh, { fit: 'contain', background, kernel: 'cubic' })
    .extend({ top: py >> 1, bottom: py - (py >> 1), left: px >> 1, right: px - (px >> 1), background })
    .removeAlpha()
    .raw()
    .toBuffer();
  return { width: w, height: h, channels: 3, data: out };
}

/** Resizes raw pixels (RGB or RGBA) to exactly w×h; RGBA is flattened onto `background` first. */
export async function resizeRaw(
  img: RawImage,
  w: number,
  h: number,
  fit: 'fill' | 'contain' = 'fill',
  background = { r: 128, g: 128, b: 128 },
): Promise<RawImage> {
  let s = sharp(img.data, { raw: { width: img.width, height: img.height, channels: img.channels } });
  if (img.channels === 4) s = s.flatten({ background });
  const out = await s.resize(w, h, { fit, background, kernel: 'cubic' }).removeAlpha().raw().toBuffer();
  return { width: w, height: h, channels: 3, data: out };
}

export interface Region {
  x: number;
  y: number;
  width: number;
  height: number;
}

/**
 * The pixel region of a `width`×`height` image to cut around `box` (in image pixels): the box grown by
 * `margin` of its size on every side, rounded outwards and clamped to the image. The whole image
 * when there is no box or the box lies outside it.
 */
export function regionAround(width: number, height: number, box: Region | undefined, margin: number): Region {
  const whole = { x: 0, y: 0, width, height };
  if (!box || ![box.x, box.y, box.width, box.height].every(Number.isFinite) || box.width <= 0 || box.height <= 0) return whole;
  const x0 = Math.max(0, Math.floor(box.x - margin * box.width));
  const y0 = Math.max(0, Math.floor(box.y - margin * box.height));
  const x1 = Math.min(width, Math.ceil(box.x + box.width + margin * box.width));
  const y1 = Math.min(height, Math.ceil(box.y + box.height + margin * box.height));
  return x1 > x0 && y1 > y0 ? { x: x0, y: y0, width: x1 - x0, height: y1 - y0 } : whole;
}

/**
 * Cuts `regionAround(box)` out of an encoded image and encodes it as PNG (lossless, so the cut does
 * not degrade further; and the same input always gives the same bytes, hence the same blob key).
 */
export async function cropToPng(bytes: Buffer, box: Region | undefined, margin: number): Promise<{ png: Buffer; region: Region }> {
  const meta = await sharp(bytes).metadata();
  const region = regionAround(meta.width ?? 0, meta.height ?? 0, box, margin);
  const png = await sharp(bytes).extract({ left: region.x, top: region.y, width: region.width, height: region.height }).png().toBuffer();
  return { png, region };
}

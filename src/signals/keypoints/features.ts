/**
 * ORB local features for frames and for reference pictures of characters.
 *
 * Coordinates: keypoints are always expressed in the pixel coordinates of the image that was
 * passed in (references that are internally rescaled are mapped back), so a transform fitted
 * between a reference and a frame maps original reference pixels to original frame pixels.
 * `size` is the ORB patch diameter in those same pixels, `angle` the ORB orientation in
 * degrees [0, 360) measured in image coordinates (y down), as OpenCV reports it.
 */
import type { RawImage } from '../../media/types';
import { getCv, withMats, type Cv } from './opencv';
import { buildTemplate, mirrorTemplate, type AppearanceTemplate, type GrayImage } from './appearance';

export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface KeypointSet {
  /** Size of the image the coordinates refer to. */
  width: number;
  height: number;
  count: number;
  /** x0, y0, x1, y1, ... (2 * count). */
  xy: Float32Array;
  /** ORB keypoint diameter in image pixels (count). */
  size: Float32Array;
  /** ORB orientation in degrees, [0, 360) (count). */
  angle: Float32Array;
  /** ORB descriptors, 32 bytes each (32 * count). */
  descriptors: Uint8Array;
  /**
   * References only: bounding box of the foreground mask (the character's silhouette) in image
   * pixels. Absent for frames (the whole image).
   */
  bbox?: Box;
  /**
   * References only: a small grayscale template of the silhouette (see appearance.ts), used to
   * verify a fitted transform by appearance. Absent in sets read from format version 1.
   */
  template?: AppearanceTemplate;
  /**
   * Frames only: the luma image the keypoints were detected in, for the appearance check. Kept in
   * memory, never serialised. Without it the appearance check is skipped.
   */
  gray?: GrayImage;
}

export const DESCRIPTOR_BYTES = 32;

export interface OrbParams {
  scaleFactor: number;
  nLevels: number;
  /** FAST threshold; OpenCV's default is 20, flat cartoon art does better lower. */
  fastThreshold: number;
  /** Border (and patch) size in pixels; ORB drops keypoints closer than this to the border. */
  edgeThreshold: number;
  patchSize: number;
  /** Pyramid level the source image is placed at; levels above it are upscaled copies (finds smaller objects, costs time). */
  firstLevel: number;
}

export interface FrameFeatureOptions extends Partial<OrbParams> {
  /** Maximum keypoints per frame (default 2000). */
  maxKeypoints?: number;
}

export interface ReferenceFeatureOptions extends Partial<OrbParams> {
  /** Cap on keypoints per appearance (normal / mirrored each; default 500), strongest kept. */
  maxKeypoints?: number;
  /** References whose character (mask bbox) long side is below this are upscaled to it (default 320). */
  minLongSide?: number;
  /** References whose character long side is above this are downscaled to it (default 640). */
  maxLongSide?: number;
  /** Erode the foreground mask by this many pixels (at extraction scale) before detecting (default 2). */
  maskErode?: number;
  /** RGB distance to the estimated canvas colour below which a border-connected pixel is background (default 40). */
  backgroundTolerance?: number;
  /** Grey level painted over background pixels before extraction (default 128). */
  backgroundFill?: number;
}

/** ORB defaults for video frames. */
export const FRAME_ORB_DEFAULTS: OrbParams = {
  scaleFactor: 1.2,
  nLevels: 10,
  fastThreshold: 12,
  edgeThreshold: 19,
  patchSize: 31,
  // Two upscaled levels (x1.44, x1.2) above the source: small on-screen characters (< ~150 px)
  // get keypoints at a scale comparable to the reference; ~2x the extraction time.
  firstLevel: 2,
};

/** ORB defaults for reference pictures: more pyramid levels so small on-screen sizes are covered. */
export const REFERENCE_ORB_DEFAULTS: OrbParams = {
  scaleFactor: 1.2,
  nLevels: 10,
  fastThreshold: 12,
  edgeThreshold: 19,
  patchSize: 31,
  firstLevel: 0,
};

export const DEFAULT_FRAME_KEYPOINTS = 2000;
export const DEFAULT_REFERENCE_KEYPOINTS = 500;

// ----------------------------------------------------------------------------- helpers

/** Luma (BT.601) of an RGB(A) image; if `alpha`, transparent pixels are returned via `alphaOut`. */
function toGray(img: RawImage, out: Uint8Array): void {
  const { data, channels } = img;
  const n = img.width * img.height;
  for (let i = 0, p = 0; i < n; i++, p += channels) {
    out[i] = (data[p] * 77 + data[p + 1] * 150 + data[p + 2] * 29 + 128) >> 8;
  }
}

function checkImage(img: RawImage): void {
  if (!img || img.width <= 0 || img.height <= 0) throw new Error('keypoints: empty image');
  if (img.channels !== 3 && img.channels !== 4) throw new Error(`keypoints: unsupported channel count ${img.channels}`);
  if (img.data.length < img.width * img.height * img.channels) throw new Error('keypoints: image data too short');
}

interface RawKeypoints {
  xy: number[];
  size: number[];
  angle: number[];
  response: number[];
  desc: Uint8Array;
  count: number;
}

/** Run ORB on a CV_8UC1 image with an optional CV_8UC1 mask. */
function runOrb(cv: Cv, gray: any, mask: any | null, nFeatures: number, p: OrbParams): RawKeypoints {
  return withMats((track) => {
    const c = cv as any;
    const orb = track(
      new c.ORB(nFeatures, p.scaleFactor, p.nLevels, p.edgeThreshold, p.firstLevel, 2, c.ORB_HARRIS_SCORE ?? 0, p.patchSize, p.fastThreshold),
    );
    const kps = track(new c.KeyPointVector());
    const desc = track(new c.Mat());
    const m = mask ?? track(new c.Mat());
    orb.detectAndCompute(gray, m, kps, desc, false);
    const count = kps.size();
    const xy: number[] = new Array(count * 2);
    const size: number[] = new Array(count);
    const angle: number[] = new Array(count);
    const response: number[] = new Array(count);
    for (let i = 0; i < count; i++) {
      const k = kps.get(i);
      xy[2 * i] = k.pt.x;
      xy[2 * i + 1] = k.pt.y;
      size[i] = k.size;
      angle[i] = k.angle < 0 ? 0 : k.angle;
      response[i] = k.response;
    }
    const d = new Uint8Array(count * DESCRIPTOR_BYTES);
    if (count > 0) {
      if (desc.rows !== count || desc.cols !== DESCRIPTOR_BYTES) {
        throw new Error(`keypoints: unexpected descriptor matrix ${desc.rows}x${desc.cols} for ${count} keypoints`);
      }
      d.set(desc.data.subarray(0, count * DESCRIPTOR_BYTES));
    }
    return { xy, size, angle, response, desc: d, count };
  });
}

/** Keep the `max` strongest keypoints; rescale coordinates by 1/scale; package as a KeypointSet. */
function toKeypointSet(raw: RawKeypoints, max: number, invScale: number, width: number, height: number, bbox?: Box): KeypointSet {
  let order = Array.from({ length: raw.count }, (_, i) => i);
  if (raw.count > max) {
    order.sort((a, b) => raw.response[b] - raw.response[a]);
    order = order.slice(0, max);
    order.sort((a, b) => a - b);
  }
  const n = order.length;
  const xy = new Float32Array(2 * n);
  const size = new Float32Array(n);
  const angle = new Float32Array(n);
  const descriptors = new Uint8Array(n * DESCRIPTOR_BYTES);
  for (let j = 0; j < n; j++) {
    const i = order[j];
    xy[2 * j] = raw.xy[2 * i] * invScale;
    xy[2 * j + 1] = raw.xy[2 * i + 1] * invScale;
    size[j] = raw.size[i] * invScale;
    angle[j] = raw.angle[i];
    descriptors.set(raw.desc.subarray(i * DESCRIPTOR_BYTES, (i + 1) * DESCRIPTOR_BYTES), j * DESCRIPTOR_BYTES);
  }
  const set: KeypointSet = { width, height, count: n, xy, size, angle, descriptors };
  if (bbox) set.bbox = bbox;
  return set;
}

// ----------------------------------------------------------------------------- frames

/** The luma image ORB runs on for a frame (a fresh buffer, so it can be transferred to a worker). */
export function frameLuma(frame: RawImage): GrayImage {
  checkImage(frame);
  const data = new Uint8Array(frame.width * frame.height);
  toGray(frame, data);
  return { width: frame.width, height: frame.height, data };
}

/** ORB features of a video frame (grayscale, whole image). */
export async function extractFrameFeatures(frame: RawImage, opts: FrameFeatureOptions = {}): Promise<KeypointSet> {
  return extractGrayFeatures(frameLuma(frame), opts);
}

/** ORB features of a frame's luma image (see frameLuma); the set keeps `gray` for the appearance check. */
export async function extractGrayFeatures(gray: GrayImage, opts: FrameFeatureOptions = {}): Promise<KeypointSet> {
  const { width, height, data } = gray;
  if (!(width > 0 && height > 0) || !data || data.length !== width * height) {
    throw new Error(`keypoints: gray image of ${width}x${height} needs ${width * height} bytes, got ${data?.length}`);
  }
  const cv = await getCv();
  const p: OrbParams = { ...FRAME_ORB_DEFAULTS, ...stripUndefined(opts) };
  const max = opts.maxKeypoints ?? DEFAULT_FRAME_KEYPOINTS;
  const raw = withMats((track) => {
    const c = cv as any;
    const m = track(new c.Mat(height, width, c.CV_8UC1));
    (m.data as Uint8Array).set(data);
    return runOrb(cv, m, null, max, p);
  });
  const set = toKeypointSet(raw, max, 1, width, height);
  set.gray = gray;
  return set;
}

// ----------------------------------------------------------------------------- references

/**
 * Foreground mask of a reference picture (1 = character, 0 = background).
 *  - With an alpha channel that is actually used (some pixels < 128): alpha >= 128.
 *  - Otherwise: estimate the canvas colour as the per-channel median of the border pixels; if
 *    the border is mostly that colour (>= 60 % within tolerance), flood-fill from the border
 *    through pixels within tolerance of it, and call the filled region background.
 *  - Otherwise (a full scene, no canvas): everything is foreground.
 */
export function referenceMask(img: RawImage, tolerance = 40): Uint8Array {
  checkImage(img);
  const { width: w, height: h, data, channels: ch } = img;
  const n = w * h;
  const mask = new Uint8Array(n).fill(1);
  if (ch === 4) {
    let transparent = 0;
    for (let i = 0; i < n; i++) if (data[i * 4 + 3] < 128) transparent++;
    if (transparent > 0) {
      for (let i = 0; i < n; i++) mask[i] = data[i * 4 + 3] >= 128 ? 1 : 0;
      return mask;
    }
  }
  // Border pixels.
  const border: number[] = [];
  for (let x = 0; x < w; x++) border.push(x, (h - 1) * w + x);
  for (let y = 1; y < h - 1; y++) border.push(y * w, y * w + w - 1);
  const med = [0, 1, 2].map((c) => {
    const vals = border.map((i) => data[i * ch + c]).sort((a, b) => a - b);
    return vals[vals.length >> 1];
  });
  const tol2 = tolerance * tolerance;
  const near = (i: number): boolean => {
    const p = i * ch;
    const dr = data[p] - med[0];
    const dg = data[p + 1] - med[1];
    const db = data[p + 2] - med[2];
    return dr * dr + dg * dg + db * db <= tol2;
  };
  let nearCount = 0;
  for (const i of border) if (near(i)) nearCount++;
  if (nearCount < 0.6 * border.length) return mask;
  // Flood fill (4-connected) from border pixels near the canvas colour.
  const stack = new Int32Array(n);
  let sp = 0;
  for (const i of border) {
    if (mask[i] && near(i)) {
      mask[i] = 0;
      stack[sp++] = i;
    }
  }
  while (sp > 0) {
    const i = stack[--sp];
    const x = i % w;
    if (x > 0 && mask[i - 1] && near(i - 1)) (mask[i - 1] = 0), (stack[sp++] = i - 1);
    if (x < w - 1 && mask[i + 1] && near(i + 1)) (mask[i + 1] = 0), (stack[sp++] = i + 1);
    if (i >= w && mask[i - w] && near(i - w)) (mask[i - w] = 0), (stack[sp++] = i - w);
    if (i < n - w && mask[i + w] && near(i + w)) (mask[i + w] = 0), (stack[sp++] = i + w);
  }
  // A "canvas" that swallowed almost everything means the guess was wrong: use the whole image.
  let fg = 0;
  for (let i = 0; i < n; i++) fg += mask[i];
  if (fg < 0.01 * n) mask.fill(1);
  return mask;
}

function maskBox(mask: Uint8Array, w: number, h: number): Box | null {
  let x0 = w;
  let y0 = h;
  let x1 = -1;
  let y1 = -1;
  for (let y = 0; y < h; y++) {
    const row = y * w;
    for (let x = 0; x < w; x++) {
      if (mask[row + x]) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  return x1 < 0 ? null : { x: x0, y: y0, width: x1 - x0 + 1, height: y1 - y0 + 1 };
}

/**
 * ORB features of a reference picture, for its normal and its horizontally mirrored appearance.
 * Keypoints are detected inside the (slightly eroded) foreground mask only; the background is
 * painted a neutral grey first so descriptors near the silhouette do not see the canvas colour.
 * The picture is rescaled internally so the character's long side lies in
 * [minLongSide, maxLongSide]; coordinates are mapped back to the input's pixels.
 */
export async function extractReferenceFeatures(
  img: RawImage,
  opts: ReferenceFeatureOptions = {},
): Promise<{ normal: KeypointSet; mirrored: KeypointSet }> {
  checkImage(img);
  const cv = await getCv();
  const c = cv as any;
  const p: OrbParams = { ...REFERENCE_ORB_DEFAULTS, ...stripUndefined(opts) };
  const max = opts.maxKeypoints ?? DEFAULT_REFERENCE_KEYPOINTS;
  const minLong = opts.minLongSide ?? 320;
  const maxLong = Math.max(minLong, opts.maxLongSide ?? 640);
  const erode = opts.maskErode ?? 2;
  const fill = opts.backgroundFill ?? 128;
  const { width: w, height: h } = img;

  const mask = referenceMask(img, opts.backgroundTolerance ?? 40);
  const box = maskBox(mask, w, h);
  if (!box) {
    const empty = toKeypointSet({ xy: [], size: [], angle: [], response: [], desc: new Uint8Array(0), count: 0 }, 0, 1, w, h);
    return { normal: empty, mirrored: { ...empty } };
  }
  const mirroredBox: Box = { x: w - box.x - box.width, y: box.y, width: box.width, height: box.height };
  const longSide = Math.max(box.width, box.height);
  const scale = longSide < minLong ? minLong / longSide : longSide > maxLong ? maxLong / longSide : 1;

  const filled = new Uint8Array(w * h);
  toGray(img, filled);
  for (let i = 0; i < w * h; i++) if (!mask[i]) filled[i] = fill;
  const template = buildTemplate(img.channels === 4 ? blendOverFill(filled, img, mask, fill) : filled, mask, w, h, box);

  const [rawN, rawM] = withMats((track) => {
    const gray0 = track(new c.Mat(h, w, c.CV_8UC1));
    (gray0.data as Uint8Array).set(filled);
    const mask0 = track(new c.Mat(h, w, c.CV_8UC1));
    const md = mask0.data as Uint8Array;
    for (let i = 0; i < w * h; i++) md[i] = mask[i] ? 255 : 0;
    let gray = gray0;
    let m = mask0;
    if (scale !== 1) {
      const sw = Math.max(1, Math.round(w * scale));
      const sh = Math.max(1, Math.round(h * scale));
      gray = track(new c.Mat());
      m = track(new c.Mat());
      c.resize(gray0, gray, new c.Size(sw, sh), 0, 0, scale > 1 ? c.INTER_CUBIC : c.INTER_AREA);
      c.resize(mask0, m, new c.Size(sw, sh), 0, 0, c.INTER_NEAREST);
    }
    if (erode > 0) {
      const k = track(c.getStructuringElement(c.MORPH_ELLIPSE, new c.Size(2 * erode + 1, 2 * erode + 1)));
      const er = track(new c.Mat());
      c.erode(m, er, k);
      m = er;
    }
    const grayF = track(new c.Mat());
    const maskF = track(new c.Mat());
    c.flip(gray, grayF, 1);
    c.flip(m, maskF, 1);
    const nFeat = Math.ceil(max * 1.25); // ORB's per-level quotas undershoot; trim to `max` by response afterwards
    return [runOrb(cv, gray, m, nFeat, p), runOrb(cv, grayF, maskF, nFeat, p)];
  });

  // Map coordinates back: the extraction image is round(w*scale) wide; use the exact ratio.
  const sx = scale === 1 ? 1 : Math.round(w * scale) / w;
  const sy = scale === 1 ? 1 : Math.round(h * scale) / h;
  const inv = 1 / ((sx + sy) / 2);
  const normal = toKeypointSet(rawN, max, inv, w, h, box);
  const mirrored = toKeypointSet(rawM, max, inv, w, h, mirroredBox);
  normal.template = template;
  mirrored.template = mirrorTemplate(template, w);
  return { normal, mirrored };
}

/**
 * The appearance template's luma: the silhouette's semi-transparent pixels (a sprite's drop shadow,
 * anti-aliased edges; alpha 128-254 is inside the mask) blended over the fill grey by their alpha, as
 * they show when the sprite is drawn over a background, instead of at full strength.
 */
function blendOverFill(gray: Uint8Array, img: RawImage, mask: Uint8Array, fill: number): Uint8Array {
  const out = new Uint8Array(gray);
  for (let i = 0; i < out.length; i++) {
    if (!mask[i]) continue;
    const a = img.data[i * 4 + 3];
    if (a < 255) out[i] = Math.round((gray[i] * a + fill * (255 - a)) / 255);
  }
  return out;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as any)[k] = v;
  return out;
}

// ----------------------------------------------------------------------------- serialisation

const MAGIC = 0x3153504b; // 'KPS1' little-endian
/** Version 1: keypoints (+ bbox). Version 2 adds the optional appearance template (flag bit 1). */
const FORMAT_VERSION_V1 = 1;
const FORMAT_VERSION = 2;
const HEADER_BYTES = 20;
const FLAG_BBOX = 1;
const FLAG_TEMPLATE = 2;
const TEMPLATE_HEADER_BYTES = 16;

/**
 * Compact little-endian binary form:
 *   u32 magic 'KPS1' | u16 version | u16 flags (bit0: bbox, bit1: template) | u32 width | u32 height | u32 count
 *   [f32 x4 bbox] | f32 xy[2n] | f32 size[n] | f32 angle[n] | u8 descriptors[32n]
 *   [template: u16 tw | u16 th | f32 k | f32 x0 | f32 y0 | u8 gray[tw*th] | u8 mask[tw*th]]   (version 2)
 * A set without a template is written as version 1 (byte-identical to what version-1 writers
 * produced); with one, as version 2. Both versions are read.
 */
export function serializeKeypointSet(s: KeypointSet): Buffer {
  const n = s.count;
  const hasBox = !!s.bbox;
  const t = s.template;
  const tBytes = t ? TEMPLATE_HEADER_BYTES + 2 * t.width * t.height : 0;
  const total = HEADER_BYTES + (hasBox ? 16 : 0) + n * 16 + n * DESCRIPTOR_BYTES + tBytes;
  const buf = Buffer.alloc(total);
  let o = 0;
  o = buf.writeUInt32LE(MAGIC, o);
  o = buf.writeUInt16LE(t ? FORMAT_VERSION : FORMAT_VERSION_V1, o);
  o = buf.writeUInt16LE((hasBox ? FLAG_BBOX : 0) | (t ? FLAG_TEMPLATE : 0), o);
  o = buf.writeUInt32LE(s.width, o);
  o = buf.writeUInt32LE(s.height, o);
  o = buf.writeUInt32LE(n, o);
  if (s.bbox) {
    o = buf.writeFloatLE(s.bbox.x, o);
    o = buf.writeFloatLE(s.bbox.y, o);
    o = buf.writeFloatLE(s.bbox.width, o);
    o = buf.writeFloatLE(s.bbox.height, o);
  }
  for (let i = 0; i < 2 * n; i++) o = buf.writeFloatLE(s.xy[i], o);
  for (let i = 0; i < n; i++) o = buf.writeFloatLE(s.size[i], o);
  for (let i = 0; i < n; i++) o = buf.writeFloatLE(s.angle[i], o);
  buf.set(s.descriptors.subarray(0, n * DESCRIPTOR_BYTES), o);
  o += n * DESCRIPTOR_BYTES;
  if (t) {
    if (t.width > 0xffff || t.height > 0xffff) throw new Error('keypoints: appearance template too large');
    o = buf.writeUInt16LE(t.width, o);
    o = buf.writeUInt16LE(t.height, o);
    o = buf.writeFloatLE(t.k, o);
    o = buf.writeFloatLE(t.x0, o);
    o = buf.writeFloatLE(t.y0, o);
    const m = t.width * t.height;
    buf.set(t.gray.subarray(0, m), o);
    buf.set(t.mask.subarray(0, m), o + m);
  }
  return buf;
}

export function deserializeKeypointSet(b: Uint8Array): KeypointSet {
  const buf = Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (buf.length < HEADER_BYTES || buf.readUInt32LE(0) !== MAGIC) throw new Error('keypoints: not a serialized KeypointSet');
  const version = buf.readUInt16LE(4);
  if (version !== FORMAT_VERSION && version !== FORMAT_VERSION_V1) throw new Error(`keypoints: unsupported KeypointSet format version ${version}`);
  const flags = buf.readUInt16LE(6);
  const width = buf.readUInt32LE(8);
  const height = buf.readUInt32LE(12);
  const n = buf.readUInt32LE(16);
  let o = HEADER_BYTES;
  const hasBox = (flags & FLAG_BBOX) !== 0;
  const hasTemplate = version >= 2 && (flags & FLAG_TEMPLATE) !== 0;
  const core = HEADER_BYTES + (hasBox ? 16 : 0) + n * 16 + n * DESCRIPTOR_BYTES;
  let tw = 0;
  let th = 0;
  if (hasTemplate) {
    if (buf.length < core + TEMPLATE_HEADER_BYTES) throw new Error(`keypoints: serialized KeypointSet has ${buf.length} bytes, expected more than ${core + TEMPLATE_HEADER_BYTES}`);
    tw = buf.readUInt16LE(core);
    th = buf.readUInt16LE(core + 2);
  }
  const expected = core + (hasTemplate ? TEMPLATE_HEADER_BYTES + 2 * tw * th : 0);
  if (buf.length !== expected) throw new Error(`keypoints: serialized KeypointSet has ${buf.length} bytes, expected ${expected}`);
  let bbox: Box | undefined;
  if (hasBox) {
    bbox = { x: buf.readFloatLE(o), y: buf.readFloatLE(o + 4), width: buf.readFloatLE(o + 8), height: buf.readFloatLE(o + 12) };
    o += 16;
  }
  const xy = new Float32Array(2 * n);
  for (let i = 0; i < 2 * n; i++, o += 4) xy[i] = buf.readFloatLE(o);
  const size = new Float32Array(n);
  for (let i = 0; i < n; i++, o += 4) size[i] = buf.readFloatLE(o);
  const angle = new Float32Array(n);
  for (let i = 0; i < n; i++, o += 4) angle[i] = buf.readFloatLE(o);
  const descriptors = new Uint8Array(n * DESCRIPTOR_BYTES);
  descriptors.set(buf.subarray(o, o + n * DESCRIPTOR_BYTES));
  o += n * DESCRIPTOR_BYTES;
  const s: KeypointSet = { width, height, count: n, xy, size, angle, descriptors };
  if (bbox) s.bbox = bbox;
  if (hasTemplate) {
    const k = buf.readFloatLE(o + 4);
    const x0 = buf.readFloatLE(o + 8);
    const y0 = buf.readFloatLE(o + 12);
    o += TEMPLATE_HEADER_BYTES;
    const m = tw * th;
    if (!(k > 0) || !Number.isFinite(x0) || !Number.isFinite(y0)) throw new Error('keypoints: corrupt appearance template');
    s.template = { width: tw, height: th, k, x0, y0, gray: Uint8Array.from(buf.subarray(o, o + m)), mask: Uint8Array.from(buf.subarray(o + m, o + 2 * m)) };
  }
  return s;
}

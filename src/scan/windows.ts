/**
 * Where the likeness tier looks in a frame when its model describes one character at a time
 * (manifest `usage: "crop"`): square windows at a few sizes relative to the frame height, sliding
 * with half-window steps, so a character between ~15 % and ~90 % of the frame height (at the default
 * sizes) falls mostly inside some window of a size the descriptor was trained for. Pure functions; the crops are resampled in JS (bilinear), no sharp round trip.
 */
import type { RawImage } from '../media/types';

export interface Window {
  x: number;
  y: number;
  size: number;
}

/** A window size (side as a fraction of the frame height) and the sampled frames it is slid over: every `frameStep`-th. */
export interface WindowScale {
  size: number;
  frameStep: number;
}

/** The windows of sampled frame `index`: those of the scales whose frameStep divides it. */
export function frameWindows(width: number, height: number, scales: readonly WindowScale[], index: number): Window[] {
  return slidingWindows(width, height, scales.filter((s) => index % s.frameStep === 0).map((s) => s.size));
}

/** Windows per sampled frame on average (each scale's windows over its frameStep). */
export function meanWindowsPerFrame(width: number, height: number, scales: readonly WindowScale[]): number {
  return scales.reduce((n, s) => n + slidingWindows(width, height, [s.size]).length / s.frameStep, 0);
}

/** Square windows of side `f`·height for each f in `sizes`, stepping half a window, covering the frame. */
export function slidingWindows(width: number, height: number, sizes: number[]): Window[] {
  const out: Window[] = [];
  for (const f of sizes) {
    const size = Math.max(8, Math.round(Math.min(width, height, f * height)));
    const step = Math.max(1, Math.round(size / 2));
    const xs = positions(width, size, step);
    const ys = positions(height, size, step);
    for (const y of ys) for (const x of xs) out.push({ x, y, size });
  }
  return out;
}

/** Start positions of a window of `size` along `length`, `step` apart, the last one flush with the end. */
function positions(length: number, size: number, step: number): number[] {
  if (size >= length) return [0];
  const out: number[] = [];
  for (let p = 0; p + size < length; p += step) out.push(p);
  out.push(length - size);
  return out;
}

/**
 * The window of an RGB image, resampled (bilinear) to `w`×`h`. Fixed point (8-bit weights): the
 * source columns and weights of each output column are computed once per crop, so the inner loop
 * is integer loads, multiplies and shifts (about 4x less time than per-pixel float sampling; a
 * window scan resamples ~30 crops a frame). Matches float bilinear sampling to within 1 level.
 */
export function cropResize(img: RawImage, win: Window, w: number, h: number): RawImage {
  const c = img.channels;
  const src = img.data;
  const out = new Uint8Array(w * h * 3);
  const sx = win.size / w;
  const sy = win.size / h;
  const left = new Int32Array(w);
  const right = new Int32Array(w);
  const wx = new Int32Array(w);
  for (let i = 0; i < w; i++) {
    const fx = Math.min(img.width - 1, Math.max(0, win.x + (i + 0.5) * sx - 0.5));
    const x0 = Math.floor(fx);
    left[i] = x0 * c;
    right[i] = Math.min(img.width - 1, x0 + 1) * c;
    wx[i] = Math.round((fx - x0) * 256);
  }
  const stride = img.width * c;
  let o = 0;
  for (let j = 0; j < h; j++) {
    const fy = Math.min(img.height - 1, Math.max(0, win.y + (j + 0.5) * sy - 0.5));
    const y0 = Math.floor(fy);
    const top = y0 * stride;
    const bottom = Math.min(img.height - 1, y0 + 1) * stride;
    const ty = Math.round((fy - y0) * 256);
    for (let i = 0; i < w; i++) {
      const tx = wx[i];
      const a = top + left[i];
      const b = top + right[i];
      const d = bottom + left[i];
      const e = bottom + right[i];
      // 8.8 fixed point along x, then along y: at most 255·2^16, well inside int32. Unrolled over RGB.
      let t = (src[a] << 8) + (src[b] - src[a]) * tx;
      let u = (src[d] << 8) + (src[e] - src[d]) * tx;
      out[o] = ((t << 8) + (u - t) * ty + 32768) >> 16;
      t = (src[a + 1] << 8) + (src[b + 1] - src[a + 1]) * tx;
      u = (src[d + 1] << 8) + (src[e + 1] - src[d + 1]) * tx;
      out[o + 1] = ((t << 8) + (u - t) * ty + 32768) >> 16;
      t = (src[a + 2] << 8) + (src[b + 2] - src[a + 2]) * tx;
      u = (src[d + 2] << 8) + (src[e + 2] - src[d + 2]) * tx;
      out[o + 2] = ((t << 8) + (u - t) * ty + 32768) >> 16;
      o += 3;
    }
  }
  return { width: w, height: h, channels: 3, data: out };
}

import { ANTIALIAS_FROM, cropResize, cropWindows, frameWindows, halve, meanWindowsPerFrame, slidingWindows, type Window } from '../../src/scan/windows';
import { mulberry32 } from '../../src/synthetic/art';

const iou = (a: { x: number; y: number; w: number; h: number }, b: Window) => {
  const ix = Math.max(0, Math.min(a.x + a.w, b.x + b.size) - Math.max(a.x, b.x));
  const iy = Math.max(0, Math.min(a.y + a.h, b.y + b.size) - Math.max(a.y, b.y));
  const inter = ix * iy;
  return inter / (a.w * a.h + b.size * b.size - inter);
};

describe('slidingWindows', () => {
  test.each([
    [960, 540, [0.35], 10 * 5], // 189 px windows every 95 px, plus the ones flush with the right and bottom edges
    [960, 540, [0.35, 0.6], 10 * 5 + 5 * 3],
    [100, 100, [2], 1], // a window larger than the frame is the whole frame
  ])('%p×%p at %p gives %p windows, all inside the frame', (w, h, sizes, n) => {
    const ws = slidingWindows(w, h, sizes);
    expect(ws).toHaveLength(n);
    for (const x of ws) {
      expect(x.x).toBeGreaterThanOrEqual(0);
      expect(x.y).toBeGreaterThanOrEqual(0);
      expect(x.x + x.size).toBeLessThanOrEqual(w);
      expect(x.y + x.size).toBeLessThanOrEqual(h);
    }
  });

  test('proposal recall: characters of 25-80 % of the frame height are covered by a window', () => {
    // Random character boxes (height 15-80 % of the frame, aspect 0.5-1.2 width/height, anywhere
    // inside a 960x540 frame): the share with a window at IoU >= 0.5 (a crop mostly about them).
    const rng = mulberry32(5);
    const ws = slidingWindows(960, 540, [0.35, 0.6]);
    const bands: Record<string, [number, number]> = { '15-25%': [0, 0], '25-50%': [0, 0], '50-80%': [0, 0] };
    for (let i = 0; i < 3000; i++) {
      const hf = 0.15 + rng() * 0.65;
      const h = hf * 540;
      const w = Math.min(960, h * (0.5 + rng() * 0.7));
      const box = { x: rng() * (960 - w), y: rng() * (540 - h), w, h };
      const band = hf < 0.25 ? '15-25%' : hf < 0.5 ? '25-50%' : '50-80%';
      bands[band][1]++;
      if (ws.some((x) => iou(box, x) >= 0.5)) bands[band][0]++;
    }
    const recall = Object.fromEntries(Object.entries(bands).map(([k, [hit, n]]) => [k, hit / n]));
    console.log('window proposal recall at IoU 0.5 by character height:', recall);
    expect(recall['25-50%']).toBeGreaterThan(0.6);
    expect(recall['50-80%']).toBeGreaterThan(0.6);
  });
});

describe('window scales with their own frame steps', () => {
  const scales = [
    { size: 0.25, frameStep: 4 },
    { size: 0.35, frameStep: 2 },
  ];

  test('a sampled frame gets the windows of the scales whose step divides its index', () => {
    const small = slidingWindows(960, 540, [0.25]).length;
    const mid = slidingWindows(960, 540, [0.35]).length;
    expect(small).toBe(14 * 7); // 135 px windows every 68 px, plus the ones flush with the edges
    expect(frameWindows(960, 540, scales, 0)).toEqual(slidingWindows(960, 540, [0.25, 0.35]));
    expect(frameWindows(960, 540, scales, 2)).toEqual(slidingWindows(960, 540, [0.35]));
    expect(frameWindows(960, 540, scales, 4)).toHaveLength(small + mid);
    expect(frameWindows(960, 540, scales, 1)).toEqual([]);
    expect(frameWindows(960, 540, scales, 3)).toEqual([]);
    // Over a cycle of four frames: (98 + 50, 0, 50, 0) / 4 per frame.
    expect(meanWindowsPerFrame(960, 540, scales)).toBeCloseTo(small / 4 + mid / 2, 10);
  });
});

test('cropResize samples the window bilinearly', () => {
  // A horizontal ramp: the crop of columns 10-30 resized to 4 px keeps the ramp's values.
  const out = cropResize(image(64, 8, (x) => x * 4), { x: 10, y: 0, size: 8 }, 4, 4);
  expect(out.width).toBe(4);
  expect([0, 1, 2, 3].map((i) => out.data[i * 3])).toEqual([42, 50, 58, 66]);
});

function image(w: number, h: number, value: (x: number, y: number) => number) {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.fill(value(x, y), (y * w + x) * 3, (y * w + x) * 3 + 3);
  return { width: w, height: h, channels: 3 as const, data };
}

function spread(data: Uint8Array): { mean: number; sd: number } {
  let s = 0;
  let s2 = 0;
  for (const v of data) {
    s += v;
    s2 += v * v;
  }
  const mean = s / data.length;
  return { mean, sd: Math.sqrt(Math.max(0, s2 / data.length - mean * mean)) };
}

test('halve averages 2x2 blocks and drops an odd last column and row', () => {
  const img = image(5, 3, (x, y) => x * 10 + y * 100);
  const half = halve(img);
  expect([half.width, half.height]).toEqual([2, 1]);
  // Block (0..1, 0..1): (0 + 10 + 100 + 110) / 4 = 55; block (2..3, 0..1): 75.
  expect([half.data[0], half.data[3]]).toEqual([55, 75]);
});

describe('cropWindows', () => {
  // One-pixel stripes, black and white: texture finer than a 128 px crop of a large window can hold.
  const stripes = image(960, 540, (x) => (x % 2 ? 255 : 0));

  test('a large window of fine texture comes out as its average, not as aliasing noise', () => {
    const win = { x: 100, y: 20, size: 486 };
    const [crop] = cropWindows(stripes, [win], 128, 128);
    const smooth = spread(crop.data);
    expect(Math.abs(smooth.mean - 127.5)).toBeLessThan(3);
    expect(smooth.sd).toBeLessThan(3);
    // Plain bilinear sampling of the same window reads one column in ~4 and sees the stripes' extremes.
    expect(spread(cropResize(stripes, win, 128, 128).data).sd).toBeGreaterThan(40);
  });

  test('windows below the threshold are cropped exactly as cropResize does', () => {
    const ramp = image(960, 540, (x, y) => (x + 2 * y) % 256);
    const small = { x: 37, y: 11, size: Math.floor(ANTIALIAS_FROM * 128) - 1 };
    expect(cropWindows(ramp, [small], 128, 128)[0].data).toEqual(cropResize(ramp, small, 128, 128).data);
  });

  test('a large window shows the same place of the frame as plain sampling does', () => {
    // A smooth ramp has nothing to alias: both crops agree to within rounding and the box filter's half-pixel shift.
    const ramp = image(960, 540, (x, y) => Math.round((x / 959) * 200 + (y / 539) * 50));
    for (const win of [{ x: 300, y: 40, size: 324 }, { x: 474, y: 54, size: 486 }]) {
      const a = cropWindows(ramp, [win], 128, 128)[0].data;
      const b = cropResize(ramp, win, 128, 128).data;
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
      expect(worst).toBeLessThanOrEqual(2);
    }
  });
});

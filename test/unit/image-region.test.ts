import sharp from 'sharp';
import { cropToPng, regionAround } from '../../src/media/image';

describe('regionAround: the evidence box with a margin, clamped to the frame', () => {
  test.each([
    ['inside: grown by 10 % a side', { x: 100, y: 50, width: 200, height: 100 }, { x: 80, y: 40, width: 240, height: 120 }],
    ['fractional: rounded outwards', { x: 10.5, y: 10.5, width: 10, height: 10 }, { x: 9, y: 9, width: 13, height: 13 }],
    ['at the top-left corner: clamped', { x: -30, y: -10, width: 100, height: 100 }, { x: 0, y: 0, width: 80, height: 100 }],
    ['past the bottom-right: clamped', { x: 900, y: 500, width: 100, height: 100 }, { x: 890, y: 490, width: 70, height: 50 }],
    ['larger than the frame: the frame', { x: -100, y: -100, width: 2000, height: 1000 }, { x: 0, y: 0, width: 960, height: 540 }],
    ['outside the frame: the frame', { x: 2000, y: 0, width: 50, height: 50 }, { x: 0, y: 0, width: 960, height: 540 }],
    ['empty: the frame', { x: 10, y: 10, width: 0, height: 20 }, { x: 0, y: 0, width: 960, height: 540 }],
    ['not numbers: the frame', { x: NaN, y: 10, width: 10, height: 20 }, { x: 0, y: 0, width: 960, height: 540 }],
  ])('%s', (_name, box, want) => {
    expect(regionAround(960, 540, box, 0.1)).toEqual(want);
  });

  test('no box: the frame', () => {
    expect(regionAround(960, 540, undefined, 0.1)).toEqual({ x: 0, y: 0, width: 960, height: 540 });
  });
});

describe('cropToPng', () => {
  test('cuts exactly the region, losslessly, and the same input gives the same bytes', async () => {
    const raw = Buffer.alloc(64 * 48 * 3);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 7) % 251;
    const jpeg = await sharp(raw, { raw: { width: 64, height: 48, channels: 3 } }).jpeg({ quality: 85 }).toBuffer();
    const a = await cropToPng(jpeg, { x: 10, y: 5, width: 20, height: 10 }, 0.1);
    expect(a.region).toEqual({ x: 8, y: 4, width: 24, height: 12 });
    expect((await sharp(a.png).metadata()).format).toBe('png');
    const want = await sharp(jpeg).extract({ left: 8, top: 4, width: 24, height: 12 }).raw().toBuffer();
    expect((await sharp(a.png).raw().toBuffer()).equals(want)).toBe(true);
    expect((await cropToPng(jpeg, { x: 10, y: 5, width: 20, height: 10 }, 0.1)).png.equals(a.png)).toBe(true);
  });
});

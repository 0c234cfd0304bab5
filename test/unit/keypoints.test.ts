import {
  KeypointIndex,
  QUERY_DEFAULTS,
  deserializeKeypointSet,
  extractFrameFeatures,
  extractReferenceFeatures,
  getCv,
  referenceMask,
  serializeKeypointSet,
  type KeypointHit,
  type KeypointSet,
} from '../../src/signals/keypoints';
import type { RawImage } from '../../src/media/types';
import { composite, decodeToRaw, iou, renderBackground, renderCharacter, type Placement } from '../helpers/synthetic-art';

// Character A and its look-alike B share a style (palette, body plan); C has another style.
const SEED_A = 11;
const SEED_B = 12;
const SEED_C = 13;
const STYLE_AB = 3;
const STYLE_C = 4;
const REF_SIZE = 400;

let pngA: Buffer;
let pngB: Buffer;
let busyBg: Buffer;
let index: KeypointIndex;
let featsA: { normal: KeypointSet; mirrored: KeypointSet };

async function scene(p: Omit<Placement, 'image'> & { image?: Buffer }, bg: Buffer = busyBg): Promise<{ frame: RawImage; box: { x: number; y: number; width: number; height: number } }> {
  const res = await composite(bg, [{ image: pngA, ...p }], { jpegQuality: 80 });
  return { frame: res.raw, box: res.boxes[0]! };
}

async function query(frame: RawImage, idx: KeypointIndex = index): Promise<KeypointHit[]> {
  return idx.query(await extractFrameFeatures(frame));
}

beforeAll(async () => {
  await getCv();
  pngA = await renderCharacter(SEED_A, REF_SIZE, { styleSeed: STYLE_AB });
  pngB = await renderCharacter(SEED_B, REF_SIZE, { styleSeed: STYLE_AB });
  const pngC = await renderCharacter(SEED_C, REF_SIZE, { styleSeed: STYLE_C });
  busyBg = await renderBackground(21, 1280, 720, { style: 'busy' });
  featsA = await extractReferenceFeatures(await decodeToRaw(pngA, 4));
  const featsC = await extractReferenceFeatures(await decodeToRaw(pngC, 4));
  index = new KeypointIndex();
  index.add({ referenceId: 'ref-a', characterId: 'char-a', features: featsA });
  index.add({ referenceId: 'ref-c', characterId: 'char-c', features: featsC });
});

describe('reference features', () => {
  it('extracts capped keypoints inside the silhouette, for both appearances', () => {
    for (const s of [featsA.normal, featsA.mirrored]) {
      expect(s.count).toBeGreaterThan(150);
      expect(s.count).toBeLessThanOrEqual(500);
      expect(s.descriptors.length).toBe(32 * s.count);
      expect(s.width).toBe(REF_SIZE);
      const b = s.bbox!;
      for (let i = 0; i < s.count; i++) {
        expect(s.xy[2 * i]).toBeGreaterThanOrEqual(b.x - 1);
        expect(s.xy[2 * i]).toBeLessThanOrEqual(b.x + b.width + 1);
        expect(s.xy[2 * i + 1]).toBeGreaterThanOrEqual(b.y - 1);
        expect(s.xy[2 * i + 1]).toBeLessThanOrEqual(b.y + b.height + 1);
      }
    }
    const bn = featsA.normal.bbox!;
    const bm = featsA.mirrored.bbox!;
    expect(bm.x).toBe(REF_SIZE - bn.x - bn.width);
  });

  it('finds the character on a uniform white canvas like the transparent one', async () => {
    const onWhite = await decodeToRaw(await renderCharacter(SEED_A, REF_SIZE, { styleSeed: STYLE_AB, canvas: '#ffffff' }), 3);
    const alpha = await decodeToRaw(pngA, 4);
    const mW = referenceMask(onWhite);
    const mA = referenceMask(alpha);
    let agree = 0;
    for (let i = 0; i < mW.length; i++) if (mW[i] === mA[i]) agree++;
    expect(agree / mW.length).toBeGreaterThan(0.97);
  });

  it('blends a semi-transparent drop shadow into the appearance template as it shows on screen', async () => {
    // The character over a black shadow band at alpha 160 (inside the silhouette mask: alpha >= 128).
    const art = (await decodeToRaw(pngA, 4)) as RawImage;
    const d = Uint8Array.from(art.data);
    const w = art.width;
    const box = featsA.normal.bbox!;
    const y0 = box.y + box.height;
    const band = { y0: Math.min(art.height - 24, y0), y1: Math.min(art.height, y0 + 24) };
    for (let y = band.y0; y < band.y1; y++) {
      for (let x = box.x; x < box.x + box.width; x++) {
        const o = (y * w + x) * 4;
        if (d[o + 3] > 0) continue;
        d.set([0, 0, 0, 160], o);
      }
    }
    const t = (await extractReferenceFeatures({ ...art, data: d })).normal.template!;
    // Template rows wholly inside the band, mid-width: grey 128 blended with black at 160/255.
    const ty = ((band.y0 + band.y1) / 2 - t.y0) * t.k;
    const row = Math.floor(ty);
    const values: number[] = [];
    for (let x = Math.floor(t.width * 0.3); x < Math.floor(t.width * 0.7); x++) if (t.mask[row * t.width + x]) values.push(t.gray[row * t.width + x]);
    expect(values.length).toBeGreaterThan(5);
    const expected = Math.round((128 * (255 - 160)) / 255); // 48, where the shadow used to be stored as black (0)
    // (Where the band meets the character's own pixels the template averages both.)
    expect(values.filter((v) => Math.abs(v - expected) <= 4).length / values.length).toBeGreaterThan(0.6);
    expect(Math.min(...values)).toBeGreaterThan(30);
  });

  it('upscales tiny references and maps coordinates back', async () => {
    const tiny = await decodeToRaw(await renderCharacter(SEED_A, 96, { styleSeed: STYLE_AB }), 4);
    const f = await extractReferenceFeatures(tiny);
    expect(f.normal.count).toBeGreaterThan(50);
    expect(f.normal.width).toBe(96);
    for (let i = 0; i < f.normal.count; i++) expect(f.normal.xy[2 * i]).toBeLessThan(96);
  });
});

describe('KeypointIndex.query', () => {
  it('(a) finds a half-size paste in a busy scene, with a good box', async () => {
    const { frame, box } = await scene({ cx: 760, cy: 400, scale: 0.5 });
    const hits = await query(frame);
    expect(hits.length).toBeGreaterThan(0);
    const top = hits[0];
    expect(top.characterId).toBe('char-a');
    expect(top.referenceId).toBe('ref-a');
    expect(top.mirrored).toBe(false);
    expect(top.transform.scale).toBeGreaterThan(0.42);
    expect(top.transform.scale).toBeLessThan(0.58);
    expect(iou(top.box, box)).toBeGreaterThan(0.5);
    expect(top.score).toBeGreaterThan(0.5);
    expect(top.score).toBeLessThanOrEqual(1);
  });

  it('(b) reports a mirrored appearance as mirrored', async () => {
    const { frame, box } = await scene({ cx: 400, cy: 330, scale: 0.45, mirror: true });
    const hits = await query(frame);
    expect(hits[0]?.characterId).toBe('char-a');
    expect(hits[0].mirrored).toBe(true);
    expect(iou(hits[0].box, box)).toBeGreaterThan(0.5);
  });

  it('(c) survives a 15 degree rotation', async () => {
    const { frame, box } = await scene({ cx: 900, cy: 360, scale: 0.55, rotateDeg: 15 });
    const hits = await query(frame);
    expect(hits[0]?.characterId).toBe('char-a');
    const deg = (hits[0].transform.rotation * 180) / Math.PI;
    expect(Math.abs(deg - 15)).toBeLessThan(5);
    expect(iou(hits[0].box, box)).toBeGreaterThan(0.5);
  });

  it('finds a small (~110 px tall) paste', async () => {
    const { frame } = await scene({ cx: 300, cy: 500, scale: 0.3 });
    const hits = await query(frame);
    expect(hits[0]?.characterId).toBe('char-a');
  });

  it('(d) a look-alike in the same style scores far below the real character', async () => {
    const { frame: real } = await scene({ cx: 640, cy: 360, scale: 0.5 });
    const truth = (await query(real))[0];
    expect(truth?.characterId).toBe('char-a');
    // B is drawn like a mirrored sibling of A (same palette, ears, eyes, mouth), so A's mirrored
    // head does verify a little; the evidence must still be far weaker than for A itself.
    const res = await composite(busyBg, [{ image: pngB, cx: 640, cy: 360, scale: 0.5 }], { jpegQuality: 80 });
    const hits = await query(res.raw);
    const bestA = hits.find((h) => h.characterId === 'char-a');
    expect(bestA?.inliers ?? 0).toBeLessThan(0.25 * truth.inliers);
    expect(bestA?.score ?? 0).toBeLessThan(0.6 * truth.score);
  });

  it('(e) a background without any character gives no hits', async () => {
    const plain = await renderBackground(5, 1280, 720, { style: 'plain', noise: 6 });
    expect(await query(await decodeToRaw(plain))).toEqual([]);
    const busy = await renderBackground(6, 1280, 720, { style: 'busy' });
    expect(await query(await decodeToRaw(busy))).toEqual([]);
  });

  it('checks appearance when it can, and falls back to the inlier score when it cannot', async () => {
    const { frame } = await scene({ cx: 640, cy: 360, scale: 0.5 });
    const feats = await extractFrameFeatures(frame);
    const checked = index.query(feats)[0];
    expect(checked.characterId).toBe('char-a');
    expect(checked.appearance).toBeGreaterThan(0.7);
    // No luma on the frame set, or a reference read from format version 1 (no template):
    // the same hit with the plain inlier score and no appearance figure.
    const noGray = index.query({ ...feats, gray: undefined })[0];
    const v1 = new KeypointIndex();
    v1.add({ referenceId: 'ref-a', characterId: 'char-a', features: { normal: { ...featsA.normal, template: undefined }, mirrored: { ...featsA.mirrored, template: undefined } } });
    const noTemplate = v1.query(feats)[0];
    for (const h of [noGray, noTemplate]) {
      expect(h.characterId).toBe('char-a');
      expect(h.appearance).toBeUndefined();
      expect(h.score).toBeCloseTo(1 - Math.exp(-(h.inliers - QUERY_DEFAULTS.minInliers + 1) / QUERY_DEFAULTS.scoreScale), 10);
    }
  });

  it('works with a single registered character (ratio-test fallback)', async () => {
    const solo = new KeypointIndex();
    solo.add({ referenceId: 'ref-a', characterId: 'char-a', features: featsA });
    const { frame, box } = await scene({ cx: 500, cy: 300, scale: 0.5 });
    const hits = await query(frame, solo);
    expect(hits[0]?.characterId).toBe('char-a');
    expect(iou(hits[0].box, box)).toBeGreaterThan(0.5);
  });
});

describe('serialisation and bookkeeping', () => {
  it('(f) round-trips a KeypointSet exactly', () => {
    for (const s of [featsA.normal, featsA.mirrored]) {
      const buf = serializeKeypointSet(s);
      const t = s.template!;
      expect(buf.length).toBe(20 + 16 + s.count * 48 + 16 + 2 * t.width * t.height);
      const back = deserializeKeypointSet(buf);
      const bt = back.template!;
      expect([bt.width, bt.height]).toEqual([t.width, t.height]);
      expect(Buffer.from(bt.gray).equals(Buffer.from(t.gray))).toBe(true);
      expect(Buffer.from(bt.mask).equals(Buffer.from(t.mask))).toBe(true);
      for (const key of ['k', 'x0', 'y0'] as const) expect(bt[key]).toBeCloseTo(t[key], 4); // stored as f32
      expect(back.width).toBe(s.width);
      expect(back.height).toBe(s.height);
      expect(back.count).toBe(s.count);
      expect(back.bbox).toEqual(s.bbox);
      expect(Array.from(back.xy)).toEqual(Array.from(s.xy));
      expect(Array.from(back.size)).toEqual(Array.from(s.size));
      expect(Array.from(back.angle)).toEqual(Array.from(s.angle));
      expect(Buffer.from(back.descriptors).equals(Buffer.from(s.descriptors))).toBe(true);
      // A copy at an odd offset (e.g. a slice of a larger database page) also decodes.
      const page = Buffer.alloc(buf.length + 3);
      buf.copy(page, 3);
      expect(deserializeKeypointSet(page.subarray(3)).count).toBe(s.count);
    }
    // Format version 1 (no template), as written before templates existed, still reads.
    const v1 = serializeKeypointSet({ ...featsA.normal, template: undefined });
    expect(v1.readUInt16LE(4)).toBe(1);
    expect(v1.length).toBe(20 + 16 + featsA.normal.count * 48);
    const back1 = deserializeKeypointSet(v1);
    expect(back1.template).toBeUndefined();
    expect(back1.count).toBe(featsA.normal.count);
    expect(Buffer.from(back1.descriptors).equals(Buffer.from(featsA.normal.descriptors))).toBe(true);
    const bad = serializeKeypointSet(featsA.normal);
    bad[0] ^= 0xff;
    expect(() => deserializeKeypointSet(bad)).toThrow();
  });

  it('(g) remove() drops the reference', async () => {
    const idx = new KeypointIndex();
    idx.add({ referenceId: 'ref-a', characterId: 'char-a', features: featsA });
    idx.add({ referenceId: 'ref-a2', characterId: 'char-a', features: featsA });
    expect(idx.size).toBe(2);
    expect(idx.descriptorCount).toBe(2 * (featsA.normal.count + featsA.mirrored.count));
    idx.remove('ref-a');
    expect(idx.size).toBe(1);
    const { frame } = await scene({ cx: 640, cy: 360, scale: 0.5 });
    const hits = await query(frame, idx);
    expect(hits.length).toBeGreaterThan(0);
    expect(hits.every((h) => h.referenceId === 'ref-a2')).toBe(true);
    idx.remove('ref-a2');
    expect(idx.size).toBe(0);
    expect(idx.descriptorCount).toBe(0);
    expect(await query(frame, idx)).toEqual([]);
  });
});

/**
 * Kagami's own trained descriptors (models/kagami-descriptor-v{1,2,6,8}.*, reproduced by
 * training/run.sh): each loads through the product's embedder with its hash checked, and separates
 * characters better than the frozen ImageNet model on crops it has never seen (seeds disjoint from
 * training).
 */
import path from 'node:path';
import sharp from 'sharp';
import { MODELS_DIR } from '../../src/config';
import type { RawImage } from '../../src/media/types';
import { OnnxEmbedder } from '../../src/signals/embedding/onnx-embedder';
import { renderBackground, renderCharacter } from '../helpers/synthetic-art';

async function crop(seed: number, style: number, size: number, opts: { mirror?: boolean; hue?: number; bg: number }): Promise<RawImage> {
  let art = sharp(await renderCharacter(seed, Math.round(size * 0.85), { styleSeed: style }));
  if (opts.mirror) art = art.flop();
  if (opts.hue) art = art.modulate({ hue: opts.hue });
  const { data } = await sharp(await renderBackground(opts.bg, size, size))
    .composite([{ input: await art.png().toBuffer(), gravity: 'centre' }])
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: size, height: size, channels: 3, data };
}

const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + v * b[i], 0);

/** Mean cosine of each character's two views, minus the mean cosine between different characters. */
async function separation(e: OnnxEmbedder, pairs: Array<[RawImage, RawImage]>): Promise<number> {
  const a = await e.embed(await Promise.all(pairs.map((p) => e.prepare(p[0]))));
  const b = await e.embed(await Promise.all(pairs.map((p) => e.prepare(p[1]))));
  let same = 0;
  let other = 0;
  let n = 0;
  for (let i = 0; i < pairs.length; i++) {
    same += dot(a[i], b[i]);
    for (let j = 0; j < pairs.length; j++) if (j !== i) (other += dot(a[i], b[j])), n++;
  }
  return same / pairs.length - other / n;
}

test.each(['kagami-descriptor-v1', 'kagami-descriptor-v2', 'kagami-descriptor-v6', 'kagami-descriptor-v8', 'kagami-descriptor-v9', 'kagami-descriptor-v10', 'kagami-descriptor-v11'])('%s loads, is verified, and separates unseen characters better than the frozen trunk', async (id) => {
  const trained = await OnnxEmbedder.create(path.join(MODELS_DIR, `${id}.json`));
  const frozen = await OnnxEmbedder.create(path.join(MODELS_DIR, 'mobilenetv2-block10-gem3x3.json'));
  expect([trained.dimension, trained.inputWidth, trained.inputHeight]).toEqual([256, 128, 128]);
  // Five look-alike families of two characters each (styles far from the training seeds), each
  // seen twice: as drawn, and mirrored + hue-shifted on another background.
  const pairs: Array<[RawImage, RawImage]> = [];
  for (let f = 0; f < 5; f++) {
    for (let c = 0; c < 2; c++) {
      const seed = 7100 + f * 10 + c;
      pairs.push([await crop(seed, 7000 + f, 192, { bg: 90 + f }), await crop(seed, 7000 + f, 192, { bg: 95 + f, mirror: true, hue: 8 })]);
    }
  }
  const t = await separation(trained, pairs);
  const z = await separation(frozen, pairs);
  const norms = (await trained.embed([await trained.prepare(pairs[0][0])])).map((v) => Math.sqrt(dot(v, v)));
  console.log(`separation: ${id} ${t.toFixed(3)}, frozen ${z.toFixed(3)}`);
  expect(norms[0]).toBeCloseTo(1, 4);
  expect(t).toBeGreaterThan(0.1);
  expect(t).toBeGreaterThan(2 * z);
}, 120_000);

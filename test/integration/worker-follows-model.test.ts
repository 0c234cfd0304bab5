/**
 * A running worker follows its library to another embedding model (`kagami library reembed`)
 * without a restart: scans before the move use the old model, scans after it the new one and
 * still find the character, and a reference uploaded afterwards is embedded with the new model;
 * likewise when the library is re-embedded with the same int8 model's other weights.
 * Real API, worker, BullMQ on Redis, PostgreSQL store, ffmpeg clip and ONNX models.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { DEFAULT_MODEL, modelManifestPath } from '../../src/config';
import { reembedLibrary } from '../../src/library/library';
import { createApiKey } from '../../src/service/keys';
import { hasInt8Dot, int8WeightBits, readCpuinfo } from '../../src/signals/embedding/int8-weights';
import { loadManifest } from '../../src/signals/embedding/manifest';
import { OnnxEmbedder } from '../../src/signals/embedding/onnx-embedder';
import { dropTestSchema, startTestService, type TestService } from '../helpers/service';
import { renderBackground, renderCharacter } from '../helpers/synthetic-art';
import { makeClip } from '../helpers/synthetic-video';
import { until } from '../helpers/until';

const NEXT_MODEL = 'kagami-descriptor-v11'; // the default's float original: same dimension, other model
const schema = `t_${randomBytes(6).toString('hex')}`;
let dir: string;
let svc: TestService | undefined;
const key: Record<string, string> = {};

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function call(who: string, method: string, url: string, body?: FormData): Promise<{ status: number; data: any }> {
  const res = await fetch(svc!.base + url, { method, headers: { authorization: `Bearer ${key[who]}` }, body });
  return { status: res.status, data: await res.json() };
}

const form = (field: string, name: string, bytes: Buffer, type: string) => {
  const f = new FormData();
  f.append(field, new Blob([new Uint8Array(bytes)], { type }), name);
  return f;
};

async function upload(name: string, png: Buffer): Promise<void> {
  const r = await call('studio', 'POST', '/v1/characters/hero/references', form('image', name, png, 'image/png'));
  expect(r.status).toBe(202);
  const refs = await until(`${name} processed`, async () => {
    const c = await call('studio', 'GET', '/v1/characters/hero');
    return c.data.references.every((x: { status: string }) => x.status !== 'pending') ? c.data.references : undefined;
  });
  expect(refs.map((x: { status: string; error?: string }) => x.error ?? x.status)).toEqual(refs.map(() => 'ready'));
}

async function screen(clip: string, weights?: { sha256?: string }): Promise<{ model: string; found: string[] }> {
  const r = await call('platform', 'POST', '/v1/scans?wait=120', form('video', 'clip.mp4', readFileSync(clip), 'video/mp4'));
  expect(r.status).toBe(200);
  expect(r.data.status).toBe('done');
  const rep = r.data.report as { model: string; modelSha256?: string; matches: Array<{ characterId: string; verdict: string }> };
  if (weights) expect(rep.modelSha256).toBe(weights.sha256 ?? "(a manifest without sha256)"); // which weights file ran
  return { model: rep.model, found: rep.matches.filter((m) => m.verdict === 'match').map((m) => m.characterId) };
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-follow-'));
  mkdirSync(path.join(dir, 'media'));
  svc = await startTestService(schema, { KAGAMI_LIBRARY: path.join(dir, 'lib'), KAGAMI_MEDIA_ROOT: path.join(dir, 'media') }); // KAGAMI_MODEL unset
  key.studio = (await createApiKey(svc.store, 'Studio F', 'rightsholder')).key;
  key.platform = (await createApiKey(svc.store, 'Platform F', 'platform')).key;
}, 120_000);

afterAll(async () => {
  await svc?.stop();
  await dropTestSchema(schema);
  rmSync(dir, { recursive: true, force: true });
});

test('scans and new references follow the library to the model it was moved to', async () => {
  const hero = await renderCharacter(41, 400, { styleSeed: 9 });
  const clip = path.join(dir, 'clip.mp4');
  await makeClip({
    out: clip,
    width: 960,
    height: 540,
    durationSec: 4,
    background: await renderBackground(43, 1260, 540),
    appearances: [{ png: hero, startSec: 0.5, endSec: 3.5, heightFrac: 0.5, x: 0.35, y: 0.25 }],
  });
  const created = await fetch(`${svc!.base}/v1/characters`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key.studio}`, 'content-type': 'application/json' },
    body: JSON.stringify({ id: 'hero', name: 'Hero' }),
  });
  expect(created.status).toBe(201);
  await upload('hero.png', hero);
  // The library records the int8 weights the worker embedded the reference with (by its CPU).
  const own = int8WeightBits('auto');
  expect(await svc!.store.getModel()).toEqual({ modelId: DEFAULT_MODEL, dimension: 256, weightBits: own });
  const weightsFile = (bits: 7 | 8) => loadManifest(modelManifestPath(DEFAULT_MODEL), { int8Weights: bits });
  expect(await screen(clip, weightsFile(own))).toEqual({ model: DEFAULT_MODEL, found: ['hero'] });

  // Re-embedded with the same model's other weights (`kagami library reembed` on a host of the
  // other CPU kind): at its next refresh the worker scans with those where its CPU allows (7-bit
  // ones always; 8-bit ones only with int8 dot products, else it keeps the 7-bit ones).
  const other = own === 8 ? 7 : 8;
  const otherEmbedder = await OnnxEmbedder.create(modelManifestPath(DEFAULT_MODEL), { threads: 1, int8Weights: other });
  try {
    expect(await reembedLibrary({ store: svc!.store, blobs: svc!.rt.blobs }, otherEmbedder)).toEqual({ from: DEFAULT_MODEL, to: DEFAULT_MODEL, references: 1 });
  } finally {
    await otherEmbedder.dispose();
  }
  expect((await svc!.store.getModel())?.weightBits).toBe(other);
  await new Promise((r) => setTimeout(r, 600));
  expect(await screen(clip, weightsFile(hasInt8Dot(process.arch, readCpuinfo()) ? other : 7))).toEqual({ model: DEFAULT_MODEL, found: ['hero'] });

  // What `kagami library reembed --model kagami-descriptor-v2` does, while the worker runs.
  const next = await OnnxEmbedder.create(modelManifestPath(NEXT_MODEL), { threads: 1 });
  try {
    const moved = await reembedLibrary({ store: svc!.store, blobs: svc!.rt.blobs }, next);
    expect(moved).toEqual({ from: DEFAULT_MODEL, to: NEXT_MODEL, references: 1 });
  } finally {
    await next.dispose();
  }

  // Until its next refresh (KAGAMI_REFRESH_MS, 200 ms here) a worker may still scan with the old
  // model and its own vectors, which agree; after it, with the new one.
  await new Promise((r) => setTimeout(r, 600));
  expect(await screen(clip)).toEqual({ model: NEXT_MODEL, found: ['hero'] });
  await upload('hero-mirrored.png', await sharp(hero).flop().png().toBuffer());
  expect(await svc!.store.getModel()).toEqual({ modelId: NEXT_MODEL, dimension: 256 });
  expect((await svc!.store.loadFeatures()).features).toHaveLength(2);
}, 240_000);

/**
 * A rightsholder's false_match teaches the library a negative example, end to end: the real API on
 * port 0, a real worker, BullMQ on the real Redis, the PostgreSQL store (a schema of its own), real
 * ffmpeg clips and the real model.
 *
 * The false match is a real one: another studio's character that shares the registered character's
 * head (the same drawing) on a different body is verified as a copy. The owner marks it false_match
 * with `addNegative`; the evidence region becomes a negative reference; a re-scan of that clip comes
 * out clear while the character's own clip still matches; removing the negative brings the false
 * match back (so it was the negative that did it).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { createApiKey } from '../../src/service/keys';
import { dropTestSchema, startTestService, type TestService } from '../helpers/service';
import { renderBackground, renderCharacter } from '../helpers/synthetic-art';
import { makeClip } from '../helpers/synthetic-video';
import { until } from '../helpers/until';


let dir: string;
let svc: TestService | undefined;
let base: string;
const clips = {} as Record<'lookalike' | 'hero', Buffer>;
const key: Record<string, string> = {};
const schema = `t_${randomBytes(6).toString('hex')}`;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function call(who: string, method: string, url: string, body?: unknown): Promise<{ status: number; data: any; type: string }> {
  const headers: Record<string, string> = { authorization: `Bearer ${key[who]}` };
  let payload: FormData | string | undefined;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['content-type'] = 'application/json';
  }
  const res = await fetch(base + url, { method, headers, body: payload });
  const type = res.headers.get('content-type') ?? '';
  const data = type.includes('json') ? await res.json() : type.startsWith('image/') ? Buffer.from(await res.arrayBuffer()) : await res.text();
  return { status: res.status, data, type };
}

const form = (field: string, name: string, bytes: Buffer, type: string) => {
  const f = new FormData();
  f.append(field, new Blob([new Uint8Array(bytes)], { type }), name);
  return f;
};

interface Ref {
  id: string;
  status: string;
  fileName: string;
  width: number;
  height: number;
  negative: boolean;
  warnings: string[];
}

const references = async (): Promise<Ref[]> => (await call('studioA', 'GET', '/v1/characters/hero-21')).data.references;

/** Scans a clip as the platform; the character's entry of the report (undefined when not listed). */
async function scanFor(which: keyof typeof clips) {
  const r = await call('platform', 'POST', '/v1/scans?wait=120', form('video', `${which}.mp4`, clips[which], 'video/mp4'));
  expect(r.data.status).toBe('done');
  return r.data.report.matches.find((x: { characterId: string }) => x.characterId === 'hero-21');
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-neg-decision-'));
  const art = await renderCharacter(21, 400, { styleSeed: 8 });
  // Another studio's character: the registered one's head and shoulders (the top 60 %, the same
  // drawing) on the body of a different character of the same style.
  const other = await renderCharacter(22, 400, { styleSeed: 8 });
  const cut = 240;
  const lookalike = await sharp({ create: { width: 400, height: 400, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
    .composite([
      { input: await sharp(art).extract({ left: 0, top: 0, width: 400, height: cut }).toBuffer(), left: 0, top: 0 },
      { input: await sharp(other).extract({ left: 0, top: cut, width: 400, height: 400 - cut }).toBuffer(), left: 0, top: cut },
    ])
    .png()
    .toBuffer();
  const W = 960;
  const H = 540;
  const background = await renderBackground(31, W + 300, H);
  for (const [name, png] of [['lookalike', lookalike], ['hero', art]] as const) {
    const file = path.join(dir, `${name}.mp4`);
    await makeClip({ out: file, width: W, height: H, durationSec: 6, background, appearances: [{ png, startSec: 1, endSec: 4, heightFrac: 0.55, x: 0.3, y: 0.2, drift: 30 }] });
    clips[name] = readFileSync(file);
  }

  svc = await startTestService(schema, { KAGAMI_LIBRARY: path.join(dir, 'lib') });
  const store = svc.store;
  base = svc.base;
  key.studioA = (await createApiKey(store, 'Studio A', 'rightsholder')).key;
  key.platform = (await createApiKey(store, 'Platform X', 'platform')).key;

  expect((await call('studioA', 'POST', '/v1/characters', { id: 'hero-21', name: 'Hero 21' })).status).toBe(201);
  expect((await call('studioA', 'POST', '/v1/characters/hero-21/references', form('image', 'hero21.png', art, 'image/png'))).status).toBe(202);
  await until('reference ready', async () => ((await references()).every((x) => x.status === 'ready') ? true : undefined));
}, 180_000);

afterAll(async () => {
  await svc?.stop();
  await dropTestSchema(schema);
  rmSync(dir, { recursive: true, force: true });
});

describe('a false match becomes a negative example', () => {
  let matchId: string;
  let box: { x: number; y: number; width: number; height: number };
  let negId: string;

  test('the look-alike is reported as a copy of the character, with an evidence frame and box', async () => {
    const m = await scanFor('lookalike');
    expect(m).toMatchObject({ verdict: 'match', kind: 'copy', matchId: expect.any(String), evidence: { box: expect.any(Object) } });
    matchId = m.matchId;
    box = m.evidence.box;
  }, 150_000);

  test('addNegative with a decision other than false_match, or by a platform, is refused, and nothing is stored', async () => {
    const r = await call('studioA', 'PUT', `/v1/matches/${matchId}/decision`, { decision: 'licensed', addNegative: true });
    expect(r.status).toBe(400);
    expect(r.data.error).toEqual({ code: 'invalid_request', message: expect.stringMatching(/^addNegative: .*false_match/) });
    const p = await call('platform', 'PUT', `/v1/matches/${matchId}/decision`, { decision: 'false_match', addNegative: true });
    expect(p.status).toBe(403);
    expect(p.data.error.code).toBe('forbidden');
    expect((await call('studioA', 'GET', `/v1/matches/${matchId}`)).data).not.toHaveProperty('decisions');
    expect((await references()).map((x) => x.fileName)).toEqual(['hero21.png']);
  });

  test('false_match with addNegative registers the evidence region as a negative reference', async () => {
    const r = await call('studioA', 'PUT', `/v1/matches/${matchId}/decision`, { decision: 'false_match', addNegative: true, note: "Studio B's character" });
    expect(r.status).toBe(200);
    expect(r.data).toMatchObject({
      effectiveVerdict: 'clear',
      decisions: { owner: { decision: 'false_match', by: 'Studio A', note: "Studio B's character", negativeReferenceId: expect.stringMatching(/^ref_/) } },
    });
    negId = r.data.decisions.owner.negativeReferenceId;
    expect((await call('studioA', 'GET', `/v1/matches/${matchId}`)).data.decisions.owner.negativeReferenceId).toBe(negId);

    // The evidence box grown by 10 % on each side, clamped to the frame.
    const frame = (await call('studioA', 'GET', `/v1/matches/${matchId}/frame`)).data as Buffer;
    const { width: fw, height: fh } = await sharp(frame).metadata();
    const x0 = Math.max(0, Math.floor(box.x - 0.1 * box.width));
    const y0 = Math.max(0, Math.floor(box.y - 0.1 * box.height));
    const x1 = Math.min(fw!, Math.ceil(box.x + 1.1 * box.width));
    const y1 = Math.min(fh!, Math.ceil(box.y + 1.1 * box.height));
    const neg = (await references()).find((x) => x.id === negId)!;
    expect(neg).toMatchObject({ negative: true, width: x1 - x0, height: y1 - y0, fileName: expect.stringMatching(/^false-match-lookalike-[\d.]+s\.png$/) });
    expect(neg.width).toBeGreaterThan(box.width);
    expect(neg.width).toBeLessThan(fw!);

    // Its image is exactly those pixels of the evidence frame, as PNG.
    const img = await call('studioA', 'GET', `/v1/references/${negId}/image`);
    expect(img.type).toBe('image/png');
    const got = await sharp(img.data).raw().toBuffer();
    const want = await sharp(frame).extract({ left: x0, top: y0, width: x1 - x0, height: y1 - y0 }).raw().toBuffer();
    expect(got.equals(want)).toBe(true);

    const ready = await until('negative example processed', async () => {
      const x = (await references()).find((y) => y.id === negId)!;
      return x.status !== 'pending' ? x : undefined;
    });
    expect(ready.status).toBe('ready');
    console.log(`negative example from the false match: ${ready.width}×${ready.height} for box ${box.width}×${box.height}; warnings: ${ready.warnings.join(' | ') || 'none'}`);
  }, 90_000);

  test('deciding again finds the same reference instead of adding another', async () => {
    const r = await call('studioA', 'PUT', `/v1/matches/${matchId}/decision`, { decision: 'false_match', addNegative: true });
    expect(r.status).toBe(200);
    expect(r.data.decisions.owner.negativeReferenceId).toBe(negId);
    expect((await references()).filter((x) => x.negative).map((x) => x.id)).toEqual([negId]);
  });

  test('a re-scan of the look-alike no longer reports the character; the character itself still is', async () => {
    const hidden = await scanFor('lookalike');
    expect(hidden?.verdict ?? 'clear').toBe('clear');
    expect(await scanFor('hero')).toMatchObject({ verdict: 'match', kind: 'copy' });
  }, 240_000);

  test('undoing the decision keeps the negative example; once the owner removes it, the false match is back', async () => {
    const u = await call('studioA', 'DELETE', `/v1/matches/${matchId}/decision`);
    expect(u.status).toBe(200);
    expect(u.data).not.toHaveProperty('decisions');
    expect((await references()).find((x) => x.id === negId)).toMatchObject({ negative: true, status: 'ready' });

    expect((await call('studioA', 'DELETE', `/v1/references/${negId}`)).status).toBe(204);
    expect((await references()).map((x) => x.negative)).toEqual([false]);
    expect(await scanFor('lookalike')).toMatchObject({ verdict: 'match', kind: 'copy' });
  }, 150_000);
});

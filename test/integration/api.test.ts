/**
 * The service end to end, in process: the real API on port 0, a real worker, BullMQ on the real
 * Redis, the PostgreSQL store (a schema of its own), real ffmpeg clips and the real model.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createApiKey } from '../../src/service/keys';
import { dropTestSchema, startTestService, type TestService } from '../helpers/service';
import { renderBackground, renderCharacter } from '../helpers/synthetic-art';
import { makeClip, temporalIoU } from '../helpers/synthetic-video';
import { until } from '../helpers/until';


let dir: string;
let media: string;
let svc: TestService | undefined;
let base: string;
const key: Record<string, string> = {};
const hooks: Array<{ headers: IncomingMessage['headers']; body: string }> = [];
let hookServer: Server;
let hookUrl: string;
const schema = `t_${randomBytes(6).toString('hex')}`;
const art: Record<string, Buffer> = {};

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function call(who: string | null, method: string, url: string, body?: unknown, extra: RequestInit = {}): Promise<{ status: number; data: any; type: string }> {
  const headers: Record<string, string> = who ? { authorization: `Bearer ${key[who] ?? who}` } : {};
  let payload: FormData | string | undefined;
  if (body instanceof FormData) payload = body;
  else if (typeof body === 'string') {
    payload = body;
    headers['content-type'] = 'application/json';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['content-type'] = 'application/json';
  }
  const res = await fetch(base + url, { method, headers, body: payload, ...extra });
  const type = res.headers.get('content-type') ?? '';
  const data = type.includes('json') ? await res.json() : type.startsWith('image/') ? Buffer.from(await res.arrayBuffer()) : await res.text();
  return { status: res.status, data, type };
}

const form = (field: string, files: Array<[string, Buffer, string]>) => {
  const f = new FormData();
  for (const [name, bytes, type] of files) f.append(field, new Blob([new Uint8Array(bytes)], { type }), name);
  return f;
};

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-api-'));
  media = path.join(dir, 'media');
  mkdirSync(path.join(media, 'archive'), { recursive: true });
  for (const seed of [21, 22, 23]) art[seed] = await renderCharacter(seed, 400, { styleSeed: 8 });
  art.other = await renderCharacter(24, 400, { styleSeed: 8, canvas: '#ffffff' });
  const W = 960;
  const H = 540;
  await makeClip({ out: path.join(media, 'hero.mp4'), width: W, height: H, durationSec: 6, background: await renderBackground(31, W + 300, H), appearances: [{ png: art[21], startSec: 1, endSec: 4, heightFrac: 0.55, x: 0.3, y: 0.2, drift: 30 }] });
  await makeClip({ out: path.join(media, 'archive', 'one.mp4'), width: W, height: H, durationSec: 4, background: await renderBackground(32, W + 300, H), appearances: [{ png: art[21], startSec: 0, endSec: 3, heightFrac: 0.5, x: 0.5, y: 0.3, mirror: true }] });
  await makeClip({ out: path.join(media, 'archive', 'two.mp4'), width: W, height: H, durationSec: 4, background: await renderBackground(33, W + 300, H), appearances: [] });
  writeFileSync(path.join(media, 'archive', 'broken.mp4'), 'not a video');

  hookServer = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      hooks.push({ headers: req.headers, body });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => hookServer.listen(0, '127.0.0.1', () => r()));
  hookUrl = `http://127.0.0.1:${(hookServer.address() as { port: number }).port}/hook`;

  svc = await startTestService(schema, {
    KAGAMI_LIBRARY: path.join(dir, 'lib'),
    KAGAMI_MEDIA_ROOT: media,
    KAGAMI_WEBHOOK_BACKOFF_MS: '100',
    KAGAMI_MAX_REFERENCE_MB: '2',
  });
  const store = svc.store;
  base = svc.base;
  key.studioA = (await createApiKey(store, 'Studio A', 'rightsholder')).key;
  key.studioB = (await createApiKey(store, 'Studio B', 'rightsholder')).key;
  key.platform = (await createApiKey(store, 'Platform X', 'platform')).key;
  key.platform2 = (await createApiKey(store, 'Platform Y', 'platform')).key;
  key.admin = (await createApiKey(store, 'Ops', 'admin')).key;
}, 180_000);

afterAll(async () => {
  await svc?.stop();
  await dropTestSchema(schema);
  await new Promise<void>((r) => hookServer?.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
});

describe('the main flow', () => {
  let scanId: string;

  test('a rightsholder registers a character with references; they become ready', async () => {
    let r = await call('studioA', 'POST', '/v1/characters', { id: 'hero-21', name: 'Hero 21', franchise: 'Test Saga' });
    expect(r.status).toBe(201);
    expect(r.data).toMatchObject({ id: 'hero-21', name: 'Hero 21', owner: 'Studio A', references: [] });
    const t0 = Date.now();
    r = await call('studioA', 'POST', '/v1/characters/hero-21/references', form('image', [['hero21.png', art[21], 'image/png'], ['hero21-white.png', art.other, 'image/png']]));
    expect(r.status).toBe(202);
    expect(r.data.references).toHaveLength(2);
    expect(r.data.references.every((x: { status: string }) => x.status === 'pending' || x.status === 'ready')).toBe(true);
    const done = await until('references ready', async () => {
      const c = await call('studioA', 'GET', '/v1/characters/hero-21');
      return c.data.references.every((x: { status: string }) => x.status !== 'pending') ? c.data : undefined;
    });
    expect(done.references.map((x: { status: string }) => x.status)).toEqual(['ready', 'ready']);
    console.log(`reference upload → ready: ${Date.now() - t0} ms`);
    const img = await call('studioA', 'GET', `/v1/references/${done.references[0].id}/image`);
    expect(img.status).toBe(200);
    expect(img.type).toBe('image/png');
  });

  test('a platform screens a clip with ?wait and gets the match; a signed webhook arrives', async () => {
    const hook = await call('platform', 'PUT', '/v1/webhook', { url: hookUrl });
    expect(hook.status).toBe(200);
    const secret = hook.data.secret as string;
    const hookA = await call('studioA', 'PUT', '/v1/webhook', { url: hookUrl, secret: 'studio-a-secret-0123456789' });
    expect(hookA.status).toBe(200);

    const r = await call('platform', 'POST', '/v1/scans?wait=90', form('video', [['hero.mp4', readFileSync(path.join(media, 'hero.mp4')), 'video/mp4']]));
    expect(r.status).toBe(200);
    expect(r.data.status).toBe('done');
    scanId = r.data.id;
    const rep = r.data.report;
    expect(rep).toMatchObject({ video: 'hero.mp4', verdict: 'match' });
    const m = rep.matches.find((x: { characterId: string }) => x.characterId === 'hero-21');
    expect(m).toMatchObject({ verdict: 'match', owner: 'Studio A', kind: 'copy' });
    expect(temporalIoU(m.segments[0], { startSec: 1, endSec: 4 })).toBeGreaterThan(0.7);

    const g = await call('platform', 'GET', `/v1/scans/${scanId}`);
    expect(g.data).toMatchObject({ id: scanId, status: 'done', progress: 1 });
    expect(g.data.report).toEqual(rep);
    const ev = await call('platform', 'GET', `/v1/scans/${scanId}/evidence/hero-21`);
    expect(ev.status).toBe(200);
    expect(ev.type).toBe('image/jpeg');

    const completed = await until('scan.completed webhook', async () => hooks.find((h) => h.headers['kagami-event'] === 'scan.completed'));
    const sig = String(completed.headers['kagami-signature']);
    const [, ts, v1] = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(sig) ?? [];
    expect(v1).toBe(createHmac('sha256', secret).update(`${ts}.${completed.body}`).digest('hex'));
    expect(JSON.parse(completed.body).data).toMatchObject({ scanId, status: 'done', verdict: 'match' });
    const found = await until('match.found webhook', async () => hooks.find((h) => h.headers['kagami-event'] === 'match.found'));
    const [, ts2, v2] = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(String(found.headers['kagami-signature'])) ?? [];
    expect(v2).toBe(createHmac('sha256', 'studio-a-secret-0123456789').update(`${ts2}.${found.body}`).digest('hex'));
    expect(JSON.parse(found.body).data.matches.map((x: { characterId: string }) => x.characterId)).toEqual(['hero-21']);
    const log = await until('delivery log', async () => {
      const d = await call('platform', 'GET', '/v1/webhook/deliveries');
      return d.data.deliveries.find((x: { status: string }) => x.status === 'delivered');
    });
    expect(log).toMatchObject({ event: 'scan.completed', attempts: 1, responseStatus: 204 });
  });

  test('the rightsholder sees the match with its evidence; nobody else does', async () => {
    const r = await call('studioA', 'GET', '/v1/matches');
    expect(r.status).toBe(200);
    const m = r.data.matches.find((x: { scanId: string }) => x.scanId === scanId);
    expect(m).toMatchObject({ characterId: 'hero-21', platform: 'Platform X', verdict: 'match', video: 'hero.mp4' });
    const frame = await call('studioA', 'GET', `/v1/matches/${m.id}/frame`);
    expect(frame.type).toBe('image/jpeg');
    expect((await call('studioB', 'GET', '/v1/matches')).data.matches).toEqual([]);
    expect((await call('studioB', 'GET', `/v1/matches/${m.id}/frame`)).status).toBe(404);
    expect((await call('platform', 'GET', '/v1/matches')).status).toBe(403);
  });

  test('a batch over a media directory completes with JSONL and CSV reports', async () => {
    const r = await call('platform', 'POST', '/v1/batches', { directory: 'archive' });
    expect(r.status).toBe(202);
    expect(r.data.total).toBe(3);
    const id = r.data.id;
    const done = await until('batch done', async () => {
      const b = await call('platform', 'GET', `/v1/batches/${id}`);
      return b.data.status === 'done' ? b.data : undefined;
    }, 120_000);
    expect(done.counts).toMatchObject({ done: 2, failed: 1, queued: 0, running: 0 });
    expect(done.progress).toBe(1);
    const jsonl = await call('platform', 'GET', `/v1/batches/${id}/report?format=jsonl`);
    const lines = String(jsonl.data).trim().split('\n').map((l) => JSON.parse(l));
    const byName = Object.fromEntries(lines.map((l) => [l.video, l]));
    expect(byName['archive/one.mp4'].verdict).toBe('match');
    expect(byName['archive/two.mp4'].verdict).toBe('clear');
    expect(byName['archive/broken.mp4'].error).toMatch(/not a readable video/);
    const csv = await call('platform', 'GET', `/v1/batches/${id}/report?format=csv`);
    expect(csv.type).toMatch(/text\/csv/);
    expect(String(csv.data).split('\n')[0]).toBe('video,status,clip_verdict,character_id,name,owner,verdict,score,kind,segments,evidence_time_sec,error');
    expect(String(csv.data)).toMatch(/archive\/one\.mp4,done,match,hero-21,Hero 21,Studio A,match,/);
    expect((await call('platform2', 'GET', `/v1/batches/${id}`)).status).toBe(404);
  }, 150_000);
});

describe('tenancy: nothing of another tenant is visible (404)', () => {
  let scanId: string;
  let refId: string;
  beforeAll(async () => {
    const s = await call('platform', 'GET', '/v1/scans');
    scanId = s.data.scans[0].id;
    refId = (await call('studioA', 'GET', '/v1/characters/hero-21')).data.references[0].id;
  });

  test.each([
    ['studioB', 'GET', '/v1/characters/hero-21'],
    ['studioB', 'PATCH', '/v1/characters/hero-21'],
    ['studioB', 'DELETE', '/v1/characters/hero-21'],
    ['studioB', 'POST', '/v1/characters/hero-21/references'],
    ['platform', 'GET', '/v1/characters/hero-21'],
    ['studioB', 'GET', '/v1/references/REF/image'],
    ['studioB', 'DELETE', '/v1/references/REF'],
    ['platform2', 'GET', '/v1/scans/SCAN'],
    ['platform2', 'GET', '/v1/scans/SCAN/evidence/hero-21'],
    ['studioA', 'GET', '/v1/scans/SCAN'],
  ])('%s %s %s', async (who, method, url) => {
    const u = url.replace('REF', refId).replace('SCAN', scanId);
    const body = method === 'PATCH' ? { name: 'stolen' } : method === 'POST' ? form('image', [['x.png', art[22], 'image/png']]) : undefined;
    const r = await call(who, method, u, body);
    expect(r.status).toBe(404);
    expect(r.data).toEqual({ error: { code: 'not_found', message: expect.any(String) } });
  });

  test('lists hold only your own', async () => {
    expect((await call('studioB', 'GET', '/v1/characters')).data.characters).toEqual([]);
    expect((await call('platform2', 'GET', '/v1/scans')).data.scans).toEqual([]);
    const c = await call('studioA', 'GET', '/v1/characters/hero-21');
    expect(c.data.name).toBe('Hero 21'); // the attempted rename did not happen
  });

  test('the queue dashboard is for admins', async () => {
    expect((await call('admin', 'GET', '/admin/queues')).status).toBe(200);
    expect((await call('platform', 'GET', '/admin/queues')).status).toBe(404);
    expect((await call(null, 'GET', '/admin/queues')).status).toBe(401);
  });
});

describe('malformed input: a clear 4xx, nothing stored', () => {
  test.each([
    ['no key', null, 'GET', '/v1/characters', undefined, 401, 'unauthorized'],
    ['an unknown key', 'kgm_0123456789abcdefghijklmnop', 'GET', '/v1/characters', undefined, 401, 'unauthorized'],
    ['a bad character id', 'studioA', 'POST', '/v1/characters', { id: '../etc', name: 'x' }, 400, 'invalid_request'],
    ['a missing name', 'studioA', 'POST', '/v1/characters', { id: 'ok-id' }, 400, 'invalid_request'],
    ['unknown fields', 'studioA', 'POST', '/v1/characters', { id: 'ok-id', name: 'x', evil: 1 }, 400, 'invalid_request'],
    ['broken JSON', 'studioA', 'POST', '/v1/characters', '{"id": ', 400, 'invalid_json'],
    ['a duplicate id', 'studioB', 'POST', '/v1/characters', { id: 'hero-21', name: 'x' }, 409, 'character_exists'],
    ['a platform registering characters', 'platform', 'POST', '/v1/characters', { id: 'p-1', name: 'x' }, 403, 'forbidden'],
    ['a rightsholder scanning', 'studioA', 'POST', '/v1/scans', { path: 'hero.mp4' }, 403, 'forbidden'],
    ['a path outside the media root', 'platform', 'POST', '/v1/scans', { path: '../../etc/passwd' }, 400, 'path_outside_media_root'],
    ['a missing path', 'platform', 'POST', '/v1/scans', { path: 'nope.mp4' }, 400, 'file_not_found'],
    ['a directory as a scan', 'platform', 'POST', '/v1/scans', { path: 'archive' }, 400, 'not_a_file'],
    ['a non-video by path', 'platform', 'POST', '/v1/scans', { path: 'archive/broken.mp4' }, 422, 'invalid_media'],
    ['a bad wait', 'platform', 'POST', '/v1/scans?wait=soon', { path: 'hero.mp4' }, 400, 'invalid_request'],
    ['an empty batch', 'platform', 'POST', '/v1/batches', { paths: [] }, 400, 'invalid_request'],
    ['both paths and directory', 'platform', 'POST', '/v1/batches', { paths: ['hero.mp4'], directory: 'archive' }, 400, 'invalid_request'],
    ['a bad report format', 'platform', 'GET', '/v1/batches/x/report?format=xml', undefined, 400, 'invalid_request'],
    ['a non-http webhook', 'platform', 'PUT', '/v1/webhook', { url: 'file:///etc/passwd' }, 400, 'invalid_request'],
    ['an unknown route', 'platform', 'GET', '/v1/nothing-here', undefined, 404, 'not_found'],
  ])('%s', async (_n, who, method, url, body, status, code) => {
    const before = await call('admin', 'GET', '/v1/scans');
    const r = await call(who, method, url, body);
    expect(r.status).toBe(status);
    expect(r.data.error.code).toBe(code);
    expect(typeof r.data.error.message).toBe('string');
    expect((await call('admin', 'GET', '/v1/scans')).data.scans.length).toBe(before.data.scans.length);
  });

  test('a non-video upload is refused and not stored', async () => {
    const before = (await call('platform', 'GET', '/v1/scans')).data.scans.length;
    const r = await call('platform', 'POST', '/v1/scans', form('video', [['notes.mp4', Buffer.from('hello'), 'video/mp4']]));
    expect(r.status).toBe(422);
    expect(r.data.error).toMatchObject({ code: 'invalid_media', message: expect.stringMatching(/^notes\.mp4: /) });
    expect((await call('platform', 'GET', '/v1/scans')).data.scans.length).toBe(before);
    expect(readdirSync(path.join(dir, 'lib', 'uploads'))).toEqual([]);
  });

  test('a multipart scan without the video field', async () => {
    const r = await call('platform', 'POST', '/v1/scans', form('file', [['hero.mp4', Buffer.from('x'), 'video/mp4']]));
    expect(r.status).toBe(400);
    expect(r.data.error.code).toBe('unexpected_field');
  });

  test('bad reference images are refused together, nothing stored', async () => {
    await call('studioB', 'POST', '/v1/characters', { id: 'b-1', name: 'B one' });
    const bad = await call('studioB', 'POST', '/v1/characters/b-1/references', form('image', [['ok.png', art[23], 'image/png'], ['fake.png', Buffer.from('GIF89a nope'), 'image/png']]));
    expect(bad.status).toBe(422);
    expect(bad.data.error.message).toMatch(/^fake\.png: not a supported image/);
    const big = await call('studioB', 'POST', '/v1/characters/b-1/references', form('image', [['huge.png', randomBytes(3 * 1024 * 1024), 'image/png']]));
    expect(big.status).toBe(413);
    expect(big.data.error.code).toBe('file_too_large');
    const none = await call('studioB', 'POST', '/v1/characters/b-1/references', form('other', []));
    expect(none.status).toBe(400);
    expect((await call('studioB', 'GET', '/v1/characters/b-1')).data.references).toEqual([]);
    expect(readdirSync(path.join(dir, 'lib', 'uploads'))).toEqual([]);
  });
});

describe('operations endpoints', () => {
  test('health, readiness, metrics, OpenAPI, docs', async () => {
    expect((await call(null, 'GET', '/healthz')).data).toEqual({ ok: true });
    expect((await call(null, 'GET', '/readyz')).data).toEqual({ ok: true, database: true, redis: true });
    const metrics = await call(null, 'GET', '/metrics');
    expect(metrics.data).toMatch(/kagami_http_request_duration_seconds_count\{[^}]*route="\/characters"/);
    expect(metrics.data).toMatch(/kagami_queue_jobs\{queue="scans",state="completed"\}/);
    const doc = await call(null, 'GET', '/openapi.json');
    expect(doc.data.openapi).toBe('3.0.3');
    expect(Object.keys(doc.data.paths)).toEqual(expect.arrayContaining(['/v1/characters', '/v1/scans', '/v1/batches', '/v1/matches', '/v1/webhook']));
    expect(doc.data.components.schemas.Report.properties.matches).toBeDefined();
    const docs = await call(null, 'GET', '/docs');
    expect(docs.data).toMatch(/SwaggerUIBundle/);
    expect((await fetch(`${base}/docs/assets/swagger-ui-bundle.js`)).status).toBe(200);
  });
});

describe('negative examples', () => {
  const scanHero = async () => {
    const r = await call('platform', 'POST', '/v1/scans?wait=90', form('video', [['hero.mp4', readFileSync(path.join(media, 'hero.mp4')), 'video/mp4']]));
    expect(r.data.status).toBe('done');
    return r.data.report.matches.find((x: { characterId: string }) => x.characterId === 'hero-21');
  };

  test('a negative example that looks like the character hides it, and deleting it brings it back', async () => {
    expect(await scanHero()).toMatchObject({ verdict: 'match', kind: 'copy' });
    // The character's own drawing saved again (another file, the same pixels): the extreme look-alike,
    // which the owner is warned about and which hides the character wherever it appears.
    const sharp = (await import('sharp')).default;
    const again = await sharp(art[21]).png({ compressionLevel: 1 }).toBuffer();
    expect(again.equals(art[21])).toBe(false);
    let r = await call('studioA', 'POST', '/v1/characters/hero-21/references?negative=true', form('image', [['hero21-lookalike.png', again, 'image/png']]));
    expect(r.status).toBe(202);
    const neg = r.data.references.find((x: { fileName: string }) => x.fileName === 'hero21-lookalike.png');
    expect(neg).toMatchObject({ negative: true });
    expect(r.data.references.filter((x: { negative: boolean }) => !x.negative)).toHaveLength(2);
    const ready = await until('negative example ready', async () => {
      const c = await call('studioA', 'GET', '/v1/characters/hero-21');
      const x = c.data.references.find((y: { id: string }) => y.id === neg.id);
      return x.status === 'ready' ? x : undefined;
    });
    expect(ready.warnings.join('\n')).toMatch(/^conflicts_with_reference: nearly identical to this character's own reference/m);

    const hidden = await scanHero();
    expect(hidden?.verdict ?? 'clear').toBe('clear');

    // The same file cannot be a reference and a negative example at once.
    r = await call('studioA', 'POST', '/v1/characters/hero-21/references', form('image', [['again.png', again, 'image/png']]));
    expect(r.status).toBe(409);
    expect(r.data.error.code).toBe('conflict');

    expect((await call('studioA', 'DELETE', `/v1/references/${neg.id}`)).status).toBe(204);
    expect(await scanHero()).toMatchObject({ verdict: 'match', kind: 'copy' });
  });

  test('a bad ?negative value is refused before the upload is read', async () => {
    const r = await call('studioA', 'POST', '/v1/characters/hero-21/references?negative=maybe', form('image', [['x.png', art[22], 'image/png']]));
    expect(r.status).toBe(400);
    expect(r.data.error.code).toBe('invalid_request');
    const c = await call('studioA', 'GET', '/v1/characters/hero-21');
    expect(c.data.references.map((x: { fileName: string }) => x.fileName)).not.toContain('x.png');
  });
});

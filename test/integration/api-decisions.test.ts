/**
 * Decisions on matches (licensed / false match by rightsholders, confirmed / dismissed by
 * platforms), the review queue, licensed-video exclusions and reference warnings, through the real
 * API on a SQLite library. Scans and matches are recorded through the store as a worker would, so
 * no model or worker is needed here (test/e2e/console.test.ts runs the whole flow with real scans,
 * test/integration/api-negative-from-decision.test.ts a false match that teaches a negative example).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { readEnv } from '../../src/config';
import { createApiKey } from '../../src/service/keys';
import { createRuntime, startApi, type Runtime } from '../../src/service/runtime';
import { renderCharacter } from '../../src/synthetic/art';

let dir: string;
let rt: Runtime;
let api: { port: number; close(): Promise<void> };
let base: string;
const key: Record<string, string> = {};
const ids: Record<string, string> = {};

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function call(who: string | null, method: string, url: string, body?: unknown): Promise<{ status: number; data: any; type: string }> {
  const headers: Record<string, string> = who ? { authorization: `Bearer ${key[who]}` } : {};
  let payload: string | undefined;
  if (typeof body === 'string') payload = body;
  else if (body !== undefined) payload = JSON.stringify(body);
  if (payload !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(base + url, { method, headers, body: payload });
  const type = res.headers.get('content-type') ?? '';
  const data = type.includes('json') ? await res.json() : type.startsWith('image/') ? Buffer.from(await res.arrayBuffer()) : await res.text();
  return { status: res.status, data, type };
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-decisions-'));
  const env = readEnv({ KAGAMI_LIBRARY: path.join(dir, 'lib'), REDIS_URL: process.env.KAGAMI_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379', KAGAMI_LOG_LEVEL: 'warn' } as NodeJS.ProcessEnv);
  rt = await createRuntime(env, { queuePrefix: `dec-${randomBytes(6).toString('hex')}` });
  api = await startApi(rt, 0);
  base = `http://127.0.0.1:${api.port}`;
  key.studioA = (await createApiKey(rt.store, 'Studio A', 'rightsholder')).key;
  key.studioB = (await createApiKey(rt.store, 'Studio B', 'rightsholder')).key;
  const px = await createApiKey(rt.store, 'Platform X', 'platform');
  key.platform = px.key;
  key.platform2 = (await createApiKey(rt.store, 'Platform Y', 'platform')).key;

  // A character with a reference, and a finished scan that found it twice over (match + review).
  const png = await renderCharacter(5, 200, { styleSeed: 3 });
  const { key: sha } = await rt.blobs.put(png);
  await rt.store.upsertCharacter({ id: 'hero', name: 'Hero', owner: 'Studio A' });
  await rt.store.upsertCharacter({ id: 'sidekick', name: 'Sidekick', owner: 'Studio A' });
  await rt.store.addReferences([{ ref: { id: 'ref-hero', characterId: 'hero', sha256: sha, fileName: 'hero.png', width: 200, height: 200 } }]);
  await rt.store.setReferenceWarnings('ref-hero', ['too_small: tiny']);
  const frame = (await rt.blobs.put(png)).key;
  const scan = await rt.store.createScan({ id: 'scan_1', tenantId: px.tenant.id, source: { kind: 'blob', key: 'abc123' }, fileName: 'clip.mp4' });
  const rm = (characterId: string, name: string, verdict: 'match' | 'review', score: number) => ({
    characterId, name, owner: 'Studio A', verdict, score, kind: 'copy' as const, segments: [{ startSec: 1, endSec: 2 }],
    evidence: { timeSec: 1.5, referenceImage: 'hero.png', referenceId: 'ref-hero', similarity: 0.9 }, framesMatched: 3, reason: 'x',
  });
  const matches = [rm('hero', 'Hero', 'match', 0.91), rm('sidekick', 'Sidekick', 'review', 0.5)];
  await rt.store.updateScan(scan.id, { status: 'done', progress: 1, report: { video: 'clip.mp4', durationSec: 4, framesSampled: 8, verdict: 'match', matches, model: 'm', elapsedSec: 1 } });
  await rt.store.putMatches(scan.id, matches.map((m) => ({ tenantId: px.tenant.id, characterId: m.characterId, owner: m.owner, verdict: m.verdict, score: m.score, kind: m.kind, segments: m.segments, evidence: { ...m.evidence, frameBlob: frame }, video: 'clip.mp4' })));
  for (const m of await rt.store.listMatches({ scanId: scan.id })) ids[m.characterId] = m.id;
}, 60_000);

afterAll(async () => {
  await api?.close();
  await rt?.queues.obliterate().catch(() => undefined);
  await rt?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('decisions on matches', () => {
  test('a rightsholder marks a match licensed: allowed, recorded who and when, and an exclusion for the video', async () => {
    const r = await call('studioA', 'PUT', `/v1/matches/${ids.hero}/decision`, { decision: 'licensed', note: 'trailer deal' });
    expect(r.status).toBe(200);
    expect(r.data).toMatchObject({ id: ids.hero, verdict: 'match', score: 0.91, effectiveVerdict: 'allowed', characterName: 'Hero', platform: 'Platform X' });
    expect(r.data.decisions.owner).toEqual({ decision: 'licensed', by: 'Studio A', at: expect.any(String), note: 'trailer deal' });
    expect(r.data.evidence).not.toHaveProperty('frameBlob');
    expect(await rt.store.listExclusions({ video: 'sha256:abc123' })).toEqual([expect.objectContaining({ characterId: 'hero', reason: 'licensed', matchId: ids.hero, createdBy: 'Studio A' })]);
    expect((await call('studioA', 'GET', `/v1/matches/${ids.hero}`)).data.effectiveVerdict).toBe('allowed');
    expect((await call('studioA', 'GET', '/v1/matches')).data.matches.find((m: { id: string }) => m.id === ids.hero).effectiveVerdict).toBe('allowed');

    const scan = await call('platform', 'GET', '/v1/scans/scan_1');
    const hero = scan.data.report.matches.find((m: { characterId: string }) => m.characterId === 'hero');
    expect(hero).toMatchObject({ matchId: ids.hero, verdict: 'match', effectiveVerdict: 'allowed', decisions: { owner: { decision: 'licensed', by: 'Studio A' } } });
    expect(scan.data.report).toMatchObject({ verdict: 'match', effectiveVerdict: 'review' }); // the sidekick still waits for review
  });

  test('undo removes the decision and the exclusion; false_match makes it clear', async () => {
    const u = await call('studioA', 'DELETE', `/v1/matches/${ids.hero}/decision`);
    expect(u.status).toBe(200);
    expect(u.data.effectiveVerdict).toBe('match');
    expect(u.data).not.toHaveProperty('decisions');
    expect(await rt.store.listExclusions({})).toEqual([]);
    const f = await call('studioA', 'PUT', `/v1/matches/${ids.hero}/decision`, { decision: 'false_match' });
    expect(f.data).toMatchObject({ effectiveVerdict: 'clear', decisions: { owner: { decision: 'false_match', by: 'Studio A' } } });
    expect(await rt.store.listExclusions({})).toEqual([]);
  });

  test('a platform works its review queue: dismissed is clear, confirmed is match', async () => {
    const q = await call('platform', 'GET', '/v1/reviews');
    expect(q.status).toBe(200);
    expect(q.data.reviews.map((m: { id: string }) => m.id)).toEqual([ids.sidekick]);
    expect(q.data.reviews[0]).toMatchObject({ verdict: 'review', effectiveVerdict: 'review', characterName: 'Sidekick' });
    const d = await call('platform', 'PUT', `/v1/matches/${ids.sidekick}/decision`, { decision: 'dismissed' });
    expect(d.data).toMatchObject({ effectiveVerdict: 'clear', decisions: { platform: { decision: 'dismissed', by: 'Platform X' } } });
    expect((await call('platform', 'GET', '/v1/reviews')).data.reviews).toEqual([]);
    const c = await call('platform', 'PUT', `/v1/matches/${ids.sidekick}/decision`, { decision: 'confirmed' });
    expect(c.data.effectiveVerdict).toBe('match');
    expect((await call('platform', 'GET', '/v1/scans/scan_1')).data.report.effectiveVerdict).toBe('match');
    expect((await call('platform', 'DELETE', `/v1/matches/${ids.sidekick}/decision`)).data.effectiveVerdict).toBe('review');
    // The platform's frame and the reference it matched, for reviewers.
    expect((await call('platform', 'GET', `/v1/matches/${ids.sidekick}/frame`)).status).toBe(200);
    const ref = await call('platform', 'GET', '/v1/scans/scan_1/reference/hero');
    expect(ref.status).toBe(200);
    expect(ref.type).toBe('image/png');
  });

  test('the character view carries reference warnings', async () => {
    const c = await call('studioA', 'GET', '/v1/characters/hero');
    expect(c.data.references).toEqual([expect.objectContaining({ id: 'ref-hero', warnings: ['too_small: tiny'] })]);
    expect((await call('studioA', 'GET', '/v1/characters/sidekick')).data.references).toEqual([]);
  });
});

describe('decisions: tenancy and malformed input', () => {
  test.each([
    ['studioB', 'PUT', 'hero', { decision: 'licensed' }, 404],
    ['studioB', 'DELETE', 'hero', undefined, 404],
    ['studioB', 'GET', 'hero', undefined, 404],
    ['platform2', 'PUT', 'sidekick', { decision: 'dismissed' }, 404],
    ['platform2', 'GET', 'sidekick', undefined, 404],
    ['platform', 'PUT', 'hero', { decision: 'licensed' }, 403],
    ['studioA', 'PUT', 'sidekick', { decision: 'confirmed' }, 403],
    ['studioA', 'PUT', 'hero', { decision: 'maybe' }, 400],
    ['studioA', 'PUT', 'hero', {}, 400],
    ['studioA', 'PUT', 'hero', { decision: 'licensed', extra: 1 }, 400],
    ['studioA', 'PUT', 'hero', { decision: 'licensed', note: 'x'.repeat(1001) }, 400],
    ['studioA', 'PUT', 'hero', '{"decision": ', 400],
    ['studioA', 'PUT', 'nope', { decision: 'licensed' }, 404],
  ])('%s %s %s (case %#)', async (who, method, which, body, status) => {
    const before = await rt.store.getMatch(ids[which] ?? 'nope');
    const url = method === 'GET' ? `/v1/matches/${ids[which] ?? which}` : `/v1/matches/${ids[which] ?? which}/decision`;
    const r = await call(who, method, url, body);
    expect(r.status).toBe(status);
    expect(typeof r.data.error.message).toBe('string');
    expect(await rt.store.getMatch(ids[which] ?? 'nope')).toEqual(before);
  });

  test('the review queue is for platforms; evidence of another platform is not found', async () => {
    expect((await call('studioA', 'GET', '/v1/reviews')).status).toBe(403);
    expect((await call('platform', 'GET', '/v1/reviews?limit=0')).status).toBe(400);
    expect((await call('platform2', 'GET', '/v1/reviews')).data.reviews).toEqual([]);
    expect((await call('platform2', 'GET', '/v1/scans/scan_1/reference/hero')).status).toBe(404);
    expect((await call('platform', 'GET', '/v1/scans/scan_1/reference/nobody')).status).toBe(404);
    expect((await call('platform2', 'GET', `/v1/matches/${ids.hero}/frame`)).status).toBe(404);
    expect((await call(null, 'GET', '/v1/reviews')).status).toBe(401);
  });

  test('the OpenAPI document lists the new routes', async () => {
    const doc = await call(null, 'GET', '/openapi.json');
    expect(Object.keys(doc.data.paths)).toEqual(expect.arrayContaining(['/v1/matches/{id}', '/v1/matches/{id}/decision', '/v1/reviews', '/v1/scans/{id}/reference/{characterId}']));
    expect(doc.data.components.schemas.DecideMatch.properties.decision.enum).toEqual(['licensed', 'false_match', 'confirmed', 'dismissed']);
    expect(doc.data.components.schemas.DecideMatch.properties.addNegative.type).toBe('boolean');
    expect(doc.data.components.schemas.MatchDecisions.properties.owner.properties.negativeReferenceId.type).toBe('string');
    expect(Object.keys(doc.data.paths['/v1/matches/{id}/decision'].put.responses)).toContain('409');
  });
});

// The whole flow with a worker and real scans is in api-negative-from-decision.test.ts; here, without
// a worker, what is stored and what is refused (the new reference stays pending).
describe('a false match taught as a negative example', () => {
  const negatives = async () => (await rt.store.listReferences()).filter((r) => r.negative);

  beforeAll(async () => {
    // A match whose evidence frame was never stored (as with a frame-less record).
    const px = (await rt.store.getTenantByName('Platform X'))!;
    await rt.store.createScan({ id: 'scan_2', tenantId: px.id, source: { kind: 'blob', key: 'def456' }, fileName: 'old.mp4' });
    await rt.store.putMatches('scan_2', [
      { tenantId: px.id, characterId: 'sidekick', owner: 'Studio A', verdict: 'match', score: 0.8, kind: 'copy', segments: [{ startSec: 0, endSec: 1 }], evidence: { timeSec: 0.5, referenceId: 'ref-hero' }, video: 'old.mp4' },
    ]);
    ids.noframe = (await rt.store.listMatches({ scanId: 'scan_2' }))[0].id;
  });

  test.each([
    ['studioA', 'hero', { decision: 'licensed', addNegative: true }, 400, 'invalid_request'],
    ['studioA', 'hero', { decision: 'false_match', addNegative: 'yes' }, 400, 'invalid_request'],
    ['platform', 'sidekick', { decision: 'dismissed', addNegative: true }, 400, 'invalid_request'],
    ['platform', 'hero', { decision: 'false_match', addNegative: true }, 403, 'forbidden'],
    ['studioB', 'hero', { decision: 'false_match', addNegative: true }, 404, 'not_found'],
    ['studioA', 'noframe', { decision: 'false_match', addNegative: true }, 409, 'no_evidence_frame'],
  ])('%s on %s %j: %i %s, nothing stored', async (who, which, body, status, code) => {
    const before = await rt.store.getMatch(ids[which]);
    const r = await call(who, 'PUT', `/v1/matches/${ids[which]}/decision`, body);
    expect(r.status).toBe(status);
    expect(r.data.error).toEqual({ code, message: expect.any(String) });
    expect(await rt.store.getMatch(ids[which])).toEqual(before);
    expect(await negatives()).toEqual([]);
  });

  test('without an evidence box the whole frame becomes a pending negative reference; undo keeps it', async () => {
    const r = await call('studioA', 'PUT', `/v1/matches/${ids.sidekick}/decision`, { decision: 'false_match', addNegative: true });
    expect(r.status).toBe(200);
    const refId = r.data.decisions.owner.negativeReferenceId;
    expect(r.data).toMatchObject({ effectiveVerdict: 'clear', decisions: { owner: { decision: 'false_match', by: 'Studio A', negativeReferenceId: expect.stringMatching(/^ref_/) } } });
    const refs = (await call('studioA', 'GET', '/v1/characters/sidekick')).data.references;
    expect(refs).toEqual([expect.objectContaining({ id: refId, negative: true, status: 'pending', width: 200, height: 200, fileName: 'false-match-clip-1.50s.png' })]);
    const frame = (await call('studioA', 'GET', `/v1/matches/${ids.sidekick}/frame`)).data as Buffer;
    const img = (await call('studioA', 'GET', `/v1/references/${refId}/image`)).data as Buffer;
    const sharp = (await import('sharp')).default;
    expect((await sharp(img).raw().toBuffer()).equals(await sharp(frame).raw().toBuffer())).toBe(true);

    const again = await call('studioA', 'PUT', `/v1/matches/${ids.sidekick}/decision`, { decision: 'false_match', addNegative: true });
    expect(again.data.decisions.owner.negativeReferenceId).toBe(refId);
    expect((await negatives()).map((x) => x.id)).toEqual([refId]);

    const u = await call('studioA', 'DELETE', `/v1/matches/${ids.sidekick}/decision`);
    expect(u.data).not.toHaveProperty('decisions.owner');
    expect((await call('studioA', 'GET', '/v1/characters/sidekick')).data.references.map((x: { id: string }) => x.id)).toEqual([refId]);
  });
});

/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The web console end to end, in a real browser: Debian's Chromium (/usr/bin/chromium) driven by
 * playwright-core, against the real API and worker in process (SQLite library, BullMQ on the real
 * Redis, real ffmpeg clips, the real model). Screenshots go to test-output/screenshots/ (CI artefacts).
 *
 * A rightsholder registers a character by uploading art, a platform screens a clip and sees the
 * match with its evidence, the rightsholder marks it licensed and the verdict changes (a re-scan of
 * the same clip comes out clear), a platform works its review queue, the rightsholder calls a match
 * false and adds its region as a negative example, and other tenants see none of it.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import sharp from 'sharp';
import { readEnv } from '../../src/config';
import { createApiKey } from '../../src/service/keys';
import { createRuntime, startApi, startWorker, type Runtime } from '../../src/service/runtime';
import { renderBackground, renderCharacter } from '../../src/synthetic/art';
import { makeClip } from '../../src/synthetic/video';

const CHROMIUM = process.env.KAGAMI_CHROMIUM ?? '/usr/bin/chromium';
const REDIS = process.env.KAGAMI_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const SHOTS = path.resolve(__dirname, '..', '..', 'test-output', 'screenshots');

let dir: string;
let rt: Runtime;
let api: { port: number; close(): Promise<void> };
let worker: { close(): Promise<void> };
let base: string;
let ctx: BrowserContext;
let page: Page;
const key: Record<string, string> = {};
const files: Record<string, string> = {};

async function shot(name: string, p: Page = page): Promise<void> {
  await p.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function signIn(who: string, heading: string): Promise<void> {
  await page.goto(`${base}/`);
  await page.evaluate(() => {
    sessionStorage.clear();
    document.cookie = 'kagami_key=; path=/; max-age=0';
  });
  await page.goto(`${base}/#/`);
  await page.reload();
  await page.getByLabel('API key').fill(key[who]);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: heading }).waitFor();
}

/** True once every <img> inside `sel` has loaded with real pixels. */
async function imagesLoaded(sel: string): Promise<boolean> {
  return page.locator(sel).evaluate((el) => {
    const imgs = [...el.querySelectorAll('img')];
    return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
  });
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: the console end-to-end tests need it. Install it with \`apt-get update && apt-get install -y chromium\` (.ci/run does), or set KAGAMI_CHROMIUM.`);
  }
  mkdirSync(SHOTS, { recursive: true });
  dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-e2e-'));
  const art = await renderCharacter(21, 400, { styleSeed: 8 });
  files.art = path.join(dir, 'hero-21.png');
  writeFileSync(files.art, art);
  // The same art far away on a big white canvas: usable, but mostly background (a quality warning).
  files.padded = path.join(dir, 'hero-21-wide-shot.png');
  await sharp({ create: { width: 1400, height: 1400, channels: 3, background: '#ffffff' } })
    .composite([{ input: art, left: 500, top: 500 }])
    .png()
    .toFile(files.padded);
  // A look-alike in the same style: the owner's negative example.
  files.lookalike = path.join(dir, 'not-hero-21.png');
  writeFileSync(files.lookalike, await renderCharacter(22, 400, { styleSeed: 8 }));
  files.clip = path.join(dir, 'trailer.mp4');
  const W = 960;
  const H = 540;
  await makeClip({ out: files.clip, width: W, height: H, durationSec: 6, background: await renderBackground(31, W + 300, H), appearances: [{ png: art, startSec: 1, endSec: 4, heightFrac: 0.55, x: 0.3, y: 0.2, drift: 30 }] });

  const env = readEnv({ KAGAMI_LIBRARY: path.join(dir, 'lib'), REDIS_URL: REDIS, KAGAMI_LOG_LEVEL: 'warn', KAGAMI_REFRESH_MS: '200' } as NodeJS.ProcessEnv);
  rt = await createRuntime(env, { queuePrefix: `e2e-${randomBytes(6).toString('hex')}` });
  api = await startApi(rt, 0);
  worker = startWorker(rt);
  base = `http://127.0.0.1:${api.port}`;
  key.studioA = (await createApiKey(rt.store, 'Studio A', 'rightsholder')).key;
  key.studioB = (await createApiKey(rt.store, 'Studio B', 'rightsholder')).key;
  key.platform = (await createApiKey(rt.store, 'Platform X', 'platform')).key;
  key.platform2 = (await createApiKey(rt.store, 'Platform Y', 'platform')).key;

  const index = await fetch(`${base}/`);
  if (index.status !== 200 || !(await index.text()).includes('app.js')) throw new Error('the console is not built: run `npm run build` (dist/console/ is missing)');

  ctx = await chromium.launchPersistentContext(path.join(dir, 'chromium-profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
  });
  page = ctx.pages()[0] ?? (await ctx.newPage());
  page.setDefaultTimeout(30_000);
  page.on('dialog', (d) => void d.accept());
}, 240_000);

afterAll(async () => {
  await ctx?.close().catch(() => undefined);
  await worker?.close();
  await api?.close();
  await rt?.queues.obliterate().catch(() => undefined);
  await rt?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the web console', () => {
  let scanUrl: string;

  test('a rightsholder signs in and registers a character by uploading reference art', async () => {
    await page.goto(`${base}/`);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await shot('01-sign-in');
    await page.getByLabel('API key').fill('kgm_not-a-real-key-0123456789');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That key was not accepted').waitFor();

    await signIn('studioA', 'Characters');
    await page.getByText('No characters yet').waitFor();
    await page.getByLabel('Name', { exact: true }).fill('Hero 21');
    expect(await page.getByLabel('ID').inputValue()).toBe('hero-21');
    await page.getByLabel('Franchise (optional)').fill('Test Saga');
    await page.getByRole('button', { name: 'Register' }).click();
    await page.getByRole('heading', { level: 1, name: 'Hero 21' }).waitFor();

    // Drag and drop the art onto the drop zone, like a person would.
    const bytes = readFileSync(files.art).toString('base64');
    const dt = await page.evaluateHandle((b64) => {
      const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const t = new DataTransfer();
      t.items.add(new File([bin], 'hero-21.png', { type: 'image/png' }));
      return t;
    }, bytes);
    await page.locator('.drop').dispatchEvent('dragover', { dataTransfer: dt });
    await page.locator('.drop').dispatchEvent('drop', { dataTransfer: dt });
    // And the wide shot through the file chooser.
    await page.locator('#ref-files').setInputFiles(files.padded);
    await page.locator('[data-ref]').nth(1).waitFor();
    await page.getByText('All references processed.').waitFor({ timeout: 90_000 });
    expect(await page.locator('[data-ref] .chip.ready').count()).toBe(2);
    await page.getByText(/Mostly background: the character fills only \d+% of the image/).waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll('[data-ref] img')].every((i) => (i as HTMLImageElement).naturalWidth > 0));
    await shot('02-character-references');

    // A negative example: ticked, uploaded, labelled as such; then removed again.
    await page.getByLabel(/Upload as negative examples/).check();
    await page.locator('#ref-files').setInputFiles(files.lookalike);
    const neg = page.locator('[data-ref]', { has: page.getByRole('heading', { name: 'not-hero-21.png' }) });
    await neg.locator('.chip.negative', { hasText: 'Negative example' }).waitFor();
    await page.getByText('All references processed.').waitFor({ timeout: 90_000 });
    expect(await page.locator('[data-ref] .chip.negative').count()).toBe(1);
    await page.getByRole('button', { name: 'Remove reference not-hero-21.png' }).click();
    await page.getByText('Removed not-hero-21.png.').waitFor();
    expect(await page.locator('[data-ref]').count()).toBe(2);
    await page.getByLabel(/Upload as negative examples/).uncheck();

    await page.getByRole('link', { name: '← Characters' }).click();
    await page.getByRole('link', { name: 'Hero 21' }).waitFor();
    await shot('03-characters');
  }, 150_000);

  test('a platform screens a clip and sees the match with its evidence', async () => {
    await signIn('platform', 'Scans');
    await page.locator('#clip-file').setInputFiles(files.clip);
    await page.waitForURL(/#\/scans\/scan_/);
    scanUrl = page.url();
    await page.getByText('Clip verdict: match').waitFor({ timeout: 120_000 });
    const card = page.locator('article.match', { has: page.getByRole('heading', { name: 'Hero 21' }) });
    await card.waitFor();
    await card.getByText('Match', { exact: true }).waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll('article.match img')].every((i) => (i as HTMLImageElement).complete && (i as HTMLImageElement).naturalWidth > 0));
    expect(await imagesLoaded('article.match .pair')).toBe(true);
    expect(await card.locator('.timeline .seg').count()).toBeGreaterThan(0);
    expect(await card.locator('.frame .box').count()).toBe(1);
    await shot('04-platform-report');
    await page.getByRole('link', { name: 'Scans', exact: true }).click();
    await page.getByRole('link', { name: 'trailer.mp4' }).waitFor();
    await shot('05-platform-scans');
  }, 180_000);

  test('the rightsholder sees the match, marks it licensed, and the verdict changes', async () => {
    await signIn('studioA', 'Characters');
    await page.getByRole('link', { name: 'Match log' }).click();
    await page.getByRole('heading', { level: 1, name: 'Match log' }).waitFor();
    const card = page.locator('article.match').first();
    await card.getByRole('heading', { name: 'Hero 21' }).waitFor();
    await card.getByText('screened by Platform X').waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll('article.match img')].every((i) => (i as HTMLImageElement).complete && (i as HTMLImageElement).naturalWidth > 0));
    await shot('06-match-log');
    await card.getByLabel('Note (optional)').fill('Licensed for the 2024 trailer');
    await card.getByRole('button', { name: 'Mark licensed' }).click();
    const after = page.locator('article.match').first();
    await after.getByText('Allowed (licensed)').waitFor();
    await after.getByText(/by Studio A on/).waitFor();
    await after.getByText('scan said match').waitFor();
    await after.getByRole('button', { name: 'Undo my decision' }).waitFor();
    await shot('07-match-licensed');

    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload();
    await page.locator('article.match').first().getByText('Allowed (licensed)').waitFor();
    await shot('08-match-log-phone');
    await page.setViewportSize({ width: 1280, height: 900 });
  }, 120_000);

  test('the platform sees the licensed verdict, and a re-scan of the same clip comes out clear', async () => {
    await signIn('platform', 'Scans');
    await page.goto(scanUrl);
    await page.getByText('Clip verdict: clear').waitFor();
    await page.getByText('Allowed (licensed)').waitFor();
    await shot('09-platform-report-licensed');

    await page.getByRole('link', { name: 'Scans', exact: true }).click();
    await page.locator('#clip-file').setInputFiles(files.clip);
    await page.waitForURL((u) => /#\/scans\/scan_/.test(u.hash) && u.href !== scanUrl);
    await page.getByText('Clip verdict: clear').waitFor({ timeout: 120_000 });
    await page.getByText('licensed', { exact: true }).waitFor();
  }, 180_000);

  test('a platform reviewer works the review queue', async () => {
    // A borderline match (verdict review) recorded as a scan would: the real evidence, a lower score.
    const platform = (await rt.store.getTenantByName('Platform X'))!;
    const real = (await rt.store.listMatches({ tenantId: platform.id, characterId: 'hero-21' })).at(-1)!;
    const s = await rt.store.createScan({ id: `scan_review_${randomBytes(4).toString('hex')}`, tenantId: platform.id, source: { kind: 'path', path: '/media/fan-edit.mp4' }, fileName: 'fan-edit.mp4' });
    const m = { characterId: 'hero-21', name: 'Hero 21', owner: 'Studio A', verdict: 'review' as const, score: 0.58, kind: 'likeness' as const, segments: [{ startSec: 2, endSec: 3.5 }], framesMatched: 3, reason: 'similar look, few matching details' };
    const { frameBlob, ...evidence } = real.evidence;
    await rt.store.updateScan(s.id, { status: 'done', progress: 1, finishedAt: new Date().toISOString(), report: { video: 'fan-edit.mp4', durationSec: 6, framesSampled: 12, verdict: 'review', matches: [{ ...m, evidence: { ...evidence, timeSec: 2.5 } }], model: 'test', elapsedSec: 1 } });
    await rt.store.putMatches(s.id, [{ tenantId: platform.id, characterId: m.characterId, owner: m.owner, verdict: 'review', score: m.score, kind: m.kind, segments: m.segments, evidence: { ...evidence, timeSec: 2.5, durationSec: 6, reason: m.reason, frameBlob }, video: 'fan-edit.mp4' }]);

    await signIn('platform', 'Scans');
    await page.getByRole('link', { name: 'Review queue' }).click();
    await page.getByText('1 waiting').waitFor();
    const card = page.locator('article.match').first();
    await card.getByText('Needs review').waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll('article.match img')].every((i) => (i as HTMLImageElement).complete && (i as HTMLImageElement).naturalWidth > 0));
    await shot('10-review-queue');
    await card.getByRole('button', { name: 'Dismiss' }).click();
    await page.locator('article.match').first().getByText(/Dismissed by Platform X on/).waitFor();
    await page.locator('article.match').first().getByText('Clear', { exact: true }).waitFor();
    await shot('11-review-dismissed');
    await page.reload();
    await page.getByText('Nothing to review').waitFor();
  }, 120_000);

  test('the rightsholder calls a match false and adds its region as a negative example', async () => {
    await signIn('studioA', 'Characters');
    await page.getByRole('link', { name: 'Match log' }).click();
    const card = page.locator('article.match', { hasText: 'fan-edit.mp4' });
    await card.getByLabel('Also add as a negative example').check();
    await card.getByRole('button', { name: 'Not my character (false match)' }).click();
    const after = page.locator('article.match', { hasText: 'fan-edit.mp4' });
    await after.getByText('Added as a negative example').waitFor();
    await after.getByRole('button', { name: 'Undo my decision' }).waitFor();
    await shot('12-false-match-negative');
    // It is a reference of the character like an uploaded negative: listed, labelled, removable.
    await after.getByRole('link', { name: 'see it among the references' }).click();
    await page.getByRole('heading', { level: 1, name: 'Hero 21' }).waitFor();
    const neg = page.locator('[data-ref]', { has: page.getByRole('heading', { name: /^false-match-fan-edit-[\d.]+s\.png$/ }) });
    await neg.locator('.chip.negative', { hasText: 'Negative example' }).waitFor();
    await neg.getByRole('button', { name: /^Remove reference false-match-fan-edit/ }).click();
    await page.getByText(/^Removed false-match-fan-edit/).waitFor();
    expect(await page.locator('[data-ref] .chip.negative').count()).toBe(0);
  }, 60_000);

  test('other tenants see none of it', async () => {
    await signIn('studioB', 'Characters');
    await page.getByText('No characters yet').waitFor();
    await page.getByRole('link', { name: 'Match log' }).click();
    await page.getByText('No matches yet').waitFor();
    await shot('13-other-rightsholder');

    await signIn('platform2', 'Scans');
    await page.getByText('No scans yet').waitFor();
    await page.goto(scanUrl);
    await page.getByRole('heading', { level: 1, name: 'Not found' }).waitFor();
    await page.getByRole('link', { name: 'Review queue' }).click();
    await page.getByText('Nothing to review').waitFor();
    await shot('14-other-platform');
    const res = await page.request.get(`${base}/v1/scans/${scanUrl.split('/').pop()}/evidence/hero-21`); // with Platform Y's cookie
    expect(res.status()).toBe(404);
  }, 60_000);
});

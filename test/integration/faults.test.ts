/**
 * Failures the service must survive, on real processes: a worker killed with SIGKILL in the middle
 * of a scan, and Redis restarted (losing every queue, as it runs without persistence) while a batch
 * runs. A private redis-server on a free port keeps the shared one undisturbed; the store is
 * SQLite in a temp library, shared by the in-process API and the worker processes.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createTcpServer } from 'node:net';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { readEnv } from '../../src/config';
import { createApiKey } from '../../src/service/keys';
import { createRuntime, startApi, startWorker, type Runtime } from '../../src/service/runtime';
import { renderBackground, renderCharacter } from '../helpers/synthetic-art';
import { makeClip } from '../helpers/synthetic-video';

const CLI = path.resolve(__dirname, '../../dist/cli/main.js');

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createTcpServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, ms = 90_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v as T;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

class PrivateRedis {
  proc?: ChildProcess;
  constructor(readonly port: number) {}
  async start(): Promise<void> {
    this.proc = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    await waitFor('redis up', () => spawnSync('redis-cli', ['-p', String(this.port), 'ping']).stdout?.toString().trim() === 'PONG' || undefined, 10_000);
  }
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((r) => {
      p.once('exit', () => r());
      p.kill('SIGKILL');
    });
  }
}

let dir: string;
let lib: string;
let media: string;
let redis: PrivateRedis;
let rt: Runtime;
let api: { port: number; close(): Promise<void> };
let platformKey: string;
let hookServer: Server;
const deliveries: Array<{ event: string; id: string; body: string }> = [];
const workers: ChildProcess[] = [];

function workerEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    KAGAMI_LIBRARY: lib,
    KAGAMI_MEDIA_ROOT: media,
    REDIS_URL: `redis://127.0.0.1:${redis.port}`,
    KAGAMI_LOCK_MS: '1500',
    KAGAMI_STALLED_INTERVAL_MS: '500',
    KAGAMI_RECONCILE_MS: '500',
    KAGAMI_SAMPLE_FPS: '4',
    KAGAMI_LOG_LEVEL: 'warn',
  };
}

function startWorkerProcess(): ChildProcess {
  const p = spawn(process.execPath, [CLI, 'worker'], { env: workerEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
  p.stderr?.on('data', () => undefined);
  workers.push(p);
  return p;
}

async function call(method: string, url: string, body?: unknown) {
  const res = await fetch(`http://127.0.0.1:${api.port}${url}`, {
    method,
    headers: { authorization: `Bearer ${platformKey}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, data: (await res.json()) as any }; // eslint-disable-line @typescript-eslint/no-explicit-any
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-faults-'));
  lib = path.join(dir, 'lib');
  media = path.join(dir, 'media');
  mkdirSync(path.join(media, 'batch'), { recursive: true });
  redis = new PrivateRedis(await freePort());
  await redis.start();

  const hero = await renderCharacter(41, 400, { styleSeed: 9 });
  writeFileSync(path.join(dir, 'hero.png'), hero);
  const add = spawnSync(process.execPath, [CLI, 'library', 'add', '--library', lib, '--character', 'hero-41', '--name', 'Hero 41', '--owner', 'Studio F', path.join(dir, 'hero.png')], { encoding: 'utf8' });
  expect(add.stderr).toBe('');
  const W = 960;
  const H = 540;
  await makeClip({ out: path.join(media, 'long.mp4'), width: W, height: H, durationSec: 24, background: await renderBackground(51, W + 300, H), appearances: [{ png: hero, startSec: 6, endSec: 16, heightFrac: 0.5, x: 0.3, y: 0.2, drift: 10 }] });
  for (let i = 0; i < 4; i++) {
    await makeClip({ out: path.join(media, 'batch', `clip${i}.mp4`), width: W, height: H, durationSec: 8, background: await renderBackground(60 + i, W + 300, H), appearances: i % 2 ? [] : [{ png: hero, startSec: 1, endSec: 6, heightFrac: 0.45, x: 0.4, y: 0.3 }] });
  }

  hookServer = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      deliveries.push({ event: String(req.headers['kagami-event']), id: String(req.headers['kagami-delivery']), body });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => hookServer.listen(0, '127.0.0.1', () => r()));

  rt = await createRuntime(readEnv(workerEnv()));
  api = await startApi(rt, 0);
  platformKey = (await createApiKey(rt.store, 'Platform F', 'platform')).key;
  const hookUrl = `http://127.0.0.1:${(hookServer.address() as { port: number }).port}/`;
  expect((await call('PUT', '/v1/webhook', { url: hookUrl })).status).toBe(200);
}, 240_000);

afterAll(async () => {
  for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
  await api?.close();
  await rt?.close();
  await redis?.stop();
  await new Promise<void>((r) => hookServer?.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
});

test('a worker killed with SIGKILL mid-scan: the scan is retried and completes exactly once', async () => {
  const first = startWorkerProcess();
  const created = await call('POST', '/v1/scans', { path: 'long.mp4' });
  expect(created.status).toBe(202);
  const id = created.data.id as string;
  await waitFor('scan running with progress', async () => {
    const s = await call('GET', `/v1/scans/${id}`);
    return s.data.status === 'running' && s.data.progress > 0.1 ? true : undefined;
  });
  first.kill('SIGKILL');
  await new Promise((r) => first.once('exit', r));
  expect((await call('GET', `/v1/scans/${id}`)).data.status).toBe('running');

  const second = startWorkerProcess();
  const done = await waitFor('scan done', async () => {
    const s = await call('GET', `/v1/scans/${id}`);
    return s.data.status === 'done' ? s.data : undefined;
  }, 120_000);
  expect(done.report.verdict).toBe('match');
  expect(done.report.matches.map((m: { characterId: string }) => m.characterId)).toEqual(['hero-41']);
  // Recorded once: one set of matches, one completion webhook.
  const matches = await rt.store.listMatches({ scanId: id });
  expect(matches).toHaveLength(1);
  await waitFor('webhook', () => deliveries.find((d) => d.event === 'scan.completed' && JSON.parse(d.body).data.scanId === id));
  await new Promise((r) => setTimeout(r, 1500)); // a duplicate would arrive within this
  expect(deliveries.filter((d) => d.event === 'scan.completed' && JSON.parse(d.body).data.scanId === id)).toHaveLength(1);
  second.kill('SIGTERM');
  await new Promise((r) => second.once('exit', r));
}, 240_000);

test('Redis restarted (all queues lost) while a batch runs: the batch completes', async () => {
  const worker = startWorker(rt); // in-process, so it must ride through the reconnect
  try {
    const created = await call('POST', '/v1/batches', { directory: 'batch' });
    expect(created.status).toBe(202);
    const id = created.data.id as string;
    await waitFor('first scan of the batch done', async () => {
      const b = await call('GET', `/v1/batches/${id}`);
      return b.data.counts.done >= 1 && b.data.status === 'running' ? true : undefined;
    });
    await redis.stop();
    await new Promise((r) => setTimeout(r, 500));
    await redis.start();
    const done = await waitFor('batch done', async () => {
      const b = await call('GET', `/v1/batches/${id}`);
      return b.data.status === 'done' ? b.data : undefined;
    }, 180_000);
    expect(done.counts).toMatchObject({ done: 4, failed: 0 });
    const report = await fetch(`http://127.0.0.1:${api.port}/v1/batches/${id}/report?format=jsonl`, { headers: { authorization: `Bearer ${platformKey}` } });
    const lines = (await report.text()).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.verdict).sort()).toEqual(['clear', 'clear', 'match', 'match']);
  } finally {
    await worker.close();
  }
}, 300_000);

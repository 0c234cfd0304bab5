/**
 * `kagami models pull` / `models list` against a local HTTP server (no internet): a tiny ONNX model
 * generated here (NCHW [N,3,32,32] -> Flatten -> MatMul -> embedding [N,8], plus a Reshape to
 * tokens [N,2,4]) is served with Range support, cut off mid-way, served with Range ignored, swapped
 * for other bytes, or missing. The CLI runs in-process through main(). Ends with OnnxEmbedder on the
 * pulled model, checked against a hand computation of NCHW + 0..1 scaling + mean/std + L2.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { main } from '../../src/cli/main';
import type { RawImage } from '../../src/media/types';
import { parseManifest } from '../../src/signals/embedding/manifest';
import { OnnxEmbedder, resizeForManifest } from '../../src/signals/embedding/onnx-embedder';
import { floatTensor, int64Tensor, serializeModel, TensorDataType } from '../../src/signals/embedding/onnx-writer';

const S = 32;
const IN = 3 * S * S;
const OUT = 8;

/** Deterministic weights; `salt` gives a different (but equally valid) model. */
function weights(salt: number): Float32Array {
  const w = new Float32Array(IN * OUT);
  for (let i = 0; i < w.length; i++) w[i] = Math.sin(i * 0.37 + salt) * 0.05;
  return w;
}

function tinyModel(salt: number): Buffer {
  const bytes = serializeModel({
    graph: {
      name: 'tiny',
      nodes: [
        { opType: 'Flatten', name: 'flatten', inputs: ['pixel_values'], outputs: ['flat'], attributes: { axis: { kind: 'int', value: 1 } } },
        { opType: 'MatMul', name: 'matmul', inputs: ['flat', 'W'], outputs: ['embedding'] },
        { opType: 'Reshape', name: 'reshape', inputs: ['embedding', 'token_shape'], outputs: ['tokens'] },
      ],
      initializers: [floatTensor('W', [IN, OUT], weights(salt)), int64Tensor('token_shape', [3], [0, 2, 4])],
      inputs: [{ name: 'pixel_values', elemType: TensorDataType.FLOAT, shape: ['N', 3, S, S] }],
      outputs: [
        { name: 'embedding', elemType: TensorDataType.FLOAT, shape: ['N', OUT] },
        { name: 'tokens', elemType: TensorDataType.FLOAT, shape: ['N', 2, 4] },
      ],
    },
  });
  return Buffer.from(bytes);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const MODEL = tinyModel(1);
const OTHER = tinyModel(2);
const ETAG = `"${sha(MODEL).slice(0, 16)}"`;

interface Seen {
  url: string;
  range?: string;
  ifRange?: string;
}

/** What /model.onnx does: normal (Range + If-Range), ignore Range, cut the first answer, serve other bytes. */
const server = {
  mode: 'normal' as 'normal' | 'ignore-range' | 'cut-once' | 'other',
  cutAt: 40_000,
  seen: [] as Seen[],
};

const httpServer = http.createServer((req, res) => {
  server.seen.push({ url: req.url ?? '', range: req.headers.range, ifRange: req.headers['if-range'] as string | undefined });
  if (req.url !== '/model.onnx' && req.url !== '/mirror/model.onnx') {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    return;
  }
  const body = server.mode === 'other' ? OTHER : MODEL;
  const etag = server.mode === 'other' ? `"${sha(OTHER).slice(0, 16)}"` : ETAG;
  if (server.mode === 'cut-once') {
    server.mode = 'normal';
    res.writeHead(200, { 'content-length': body.length, etag, 'accept-ranges': 'bytes' });
    res.write(body.subarray(0, server.cutAt), () => setTimeout(() => res.socket?.destroy(), 30));
    return;
  }
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  const ifRange = req.headers['if-range'];
  if (!m || server.mode === 'ignore-range' || (ifRange && ifRange !== etag)) {
    res.writeHead(200, { 'content-length': body.length, etag, 'accept-ranges': server.mode === 'ignore-range' ? 'none' : 'bytes' });
    res.end(body);
    return;
  }
  const start = Number(m[1]);
  if (start >= body.length) {
    res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
    return;
  }
  res.writeHead(206, { 'content-length': body.length - start, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}`, etag });
  res.end(body.subarray(start));
});

let base: string;
let tmp: string;
let filesDir: string;
const savedEnv = process.env.KAGAMI_MODELS_DIR;

beforeAll(async () => {
  await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}`;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kagami-pull-'));
});

afterAll(async () => {
  httpServer.closeAllConnections();
  await new Promise((resolve) => httpServer.close(resolve));
  fs.rmSync(tmp, { recursive: true, force: true });
  if (savedEnv === undefined) delete process.env.KAGAMI_MODELS_DIR;
  else process.env.KAGAMI_MODELS_DIR = savedEnv;
});

let testNo = 0;
beforeEach(() => {
  server.mode = 'normal';
  server.seen = [];
  filesDir = path.join(tmp, `files-${++testNo}`);
  process.env.KAGAMI_MODELS_DIR = filesDir;
});

type Json = Record<string, unknown>;
function manifest(over: { download?: Json; output?: Json; input?: Json; id?: string } = {}): Json {
  return {
    id: over.id ?? 'tiny',
    description: 'tiny test model',
    download: { url: `${base}/model.onnx`, sha256: sha(MODEL), licence: 'MIT', ...over.download },
    file: 'tiny.onnx',
    input: { name: 'pixel_values', width: S, height: S, layout: 'NCHW', channels: 'RGB', range: '0-1', mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3], ...over.input },
    output: { name: 'embedding', dimension: OUT, normalized: false, ...over.output },
    licence: 'MIT',
  };
}

function writeManifest(m: Json, name = `${m.id}.json`): string {
  const dir = path.join(tmp, `manifests-${testNo}`);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify(m, null, 2));
  return file;
}

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const o = jest.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((out += String(c)), true));
  const e = jest.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((err += String(c)), true));
  try {
    const code = await main(argv);
    return { code, out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

const leftovers = () => (fs.existsSync(filesDir) ? fs.readdirSync(filesDir).sort() : []);

describe('kagami models pull', () => {
  test('downloads, checks sha256, loads; a second pull finds it present', async () => {
    const mf = writeManifest(manifest());
    const r = await cli('models', 'pull', mf);
    expect(r.err).toBe('kagami: downloading tiny (0.1 MiB) …\n');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/tiny: downloaded: .*tiny\.onnx .*sha256 [0-9a-f]{64}, matches the manifest/);
    expect(fs.readFileSync(path.join(filesDir, 'tiny.onnx')).equals(MODEL)).toBe(true);
    expect(leftovers()).toEqual(['tiny.onnx']);
    expect(server.seen).toHaveLength(1);
    expect(server.seen[0].range).toBeUndefined();

    const again = await cli('models', 'pull', mf);
    expect(again.code).toBe(0);
    expect(again.out).toMatch(/already present, sha256 checked/);
    expect(server.seen).toHaveLength(1); // no second request
  });

  test('resumes an interrupted download with a Range request', async () => {
    const mf = writeManifest(manifest());
    server.mode = 'cut-once';
    const first = await cli('models', 'pull', mf);
    expect(first.code).toBe(2);
    expect(first.err).toMatch(/interrupted after \d+ of \d+ bytes.*run the same command again to resume/);
    const part = path.join(filesDir, 'tiny.onnx.part');
    const partSize = fs.statSync(part).size;
    expect(partSize).toBeGreaterThan(0);
    expect(partSize).toBeLessThan(MODEL.length);
    expect(fs.existsSync(path.join(filesDir, 'tiny.onnx'))).toBe(false);

    const second = await cli('models', 'pull', mf);
    expect(second.code).toBe(0);
    expect(second.out).toMatch(/resumed at/);
    expect(server.seen).toHaveLength(2);
    expect(server.seen[1].range).toBe(`bytes=${partSize}-`);
    expect(server.seen[1].ifRange).toBe(ETAG);
    expect(fs.readFileSync(path.join(filesDir, 'tiny.onnx')).equals(MODEL)).toBe(true);
    expect(leftovers()).toEqual(['tiny.onnx']);
  });

  test('a server that ignores Range (200) restarts from zero', async () => {
    const mf = writeManifest(manifest());
    server.mode = 'cut-once';
    expect((await cli('models', 'pull', mf)).code).toBe(2);
    server.mode = 'ignore-range';
    const r = await cli('models', 'pull', mf);
    expect(r.code).toBe(0);
    expect(r.out).not.toMatch(/resumed/);
    expect(server.seen[1].range).toMatch(/^bytes=\d+-$/);
    expect(fs.readFileSync(path.join(filesDir, 'tiny.onnx')).equals(MODEL)).toBe(true);
    expect(leftovers()).toEqual(['tiny.onnx']);
  });

  test('sha256 mismatch: exit 2, nothing left behind', async () => {
    const mf = writeManifest(manifest({ download: { sha256: sha(OTHER) } }));
    const r = await cli('models', 'pull', mf);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`has sha256 ${sha(MODEL)}`);
    expect(r.err).toContain(`expects ${sha(OTHER)}`);
    expect(leftovers()).toEqual([]);
  });

  test('a size different from the declared download.bytes is refused before downloading', async () => {
    const mf = writeManifest(manifest({ download: { bytes: MODEL.length - 1 } }));
    const r = await cli('models', 'pull', mf);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`the server's file has ${MODEL.length} bytes, the manifest says ${MODEL.length - 1}`);
    expect(leftovers()).toEqual([]);
  });

  test('404: a clear error, no file', async () => {
    const mf = writeManifest(manifest({ download: { url: `${base}/missing.onnx` } }));
    const r = await cli('models', 'pull', mf);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/download of http:\/\/127\.0\.0\.1:\d+\/missing\.onnx failed: HTTP 404/);
    expect(leftovers()).toEqual([]);
  });

  test('unreachable server: a clear network error', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const mf = writeManifest(manifest({ download: { url: `http://127.0.0.1:${port}/model.onnx` } }));
    const r = await cli('models', 'pull', mf);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/cannot download http:\/\/127\.0\.0\.1:\d+\/model\.onnx: .*ECONNREFUSED/);
  });

  test('--url overrides the manifest URL (same sha256 check)', async () => {
    const mf = writeManifest(manifest({ download: { url: `${base}/missing.onnx` } }));
    const r = await cli('models', 'pull', mf, '--url', `${base}/mirror/model.onnx`);
    expect(r.code).toBe(0);
    expect(server.seen.map((s) => s.url)).toEqual(['/mirror/model.onnx']);
    expect(fs.readFileSync(path.join(filesDir, 'tiny.onnx')).equals(MODEL)).toBe(true);
  });

  test('a file that does not match the declared input/output is refused', async () => {
    const mf = writeManifest(manifest({ output: { name: 'logits' } }));
    const r = await cli('models', 'pull', mf);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/does not match its manifest: no output 'logits' \(outputs: embedding, tokens\)/);
    expect(leftovers()).toEqual([]);
    const wrongSize = writeManifest(manifest({ id: 'tiny2', input: { width: 64, height: 64 } }));
    const r2 = await cli('models', 'pull', wrongSize);
    expect(r2.code).toBe(2);
    expect(r2.err).toMatch(/input 'pixel_values' has shape \[N, 3, 32, 32\], manifest says NCHW 64x64x3/);
  });

  test('trust on first use: the first pull pins the hash in a lock file, a later mismatch is refused', async () => {
    const mf = writeManifest(manifest({ download: { sha256: null, pin: 'on-first-pull' } }));
    const first = await cli('models', 'pull', mf);
    expect(first.code).toBe(0);
    expect(first.err).toMatch(/warning: tiny: the manifest publishes no sha256.*trust on first use/s);
    expect(first.out).toMatch(/pinned now \(trust on first use\)/);
    const lockPath = path.join(filesDir, 'tiny.lock.json');
    const lock = JSON.parse(fs.readFileSync(lockPath, 'utf8'));
    expect(lock).toMatchObject({ id: 'tiny', file: 'tiny.onnx', sha256: sha(MODEL), bytes: MODEL.length, url: `${base}/model.onnx` });

    // The embedder accepts the pinned file ...
    const emb = await OnnxEmbedder.create(mf, { modelsDir: filesDir });
    await emb.dispose();
    // ... a re-download of changed bytes is refused against the lock, leaving nothing ...
    server.mode = 'other';
    const changed = await cli('models', 'pull', mf, '--force');
    expect(changed.code).toBe(2);
    expect(changed.err).toContain(`the lock file ${lockPath} expects ${sha(MODEL)}`);
    expect(leftovers()).toEqual(['tiny.lock.json', 'tiny.onnx']);
    expect(fs.readFileSync(path.join(filesDir, 'tiny.onnx')).equals(MODEL)).toBe(true);
    // ... and without the lock a present file is not trusted silently.
    fs.rmSync(lockPath);
    await expect(OnnxEmbedder.create(mf, { modelsDir: filesDir })).rejects.toThrow(/no pinned sha256/);
    const unpinned = await cli('models', 'pull', mf);
    expect(unpinned.code).toBe(2);
    expect(unpinned.err).toMatch(/never pinned.*--force/);
  });

  test('manifest rules: an unknown sha256 needs an explicit pin; built models cannot be pulled', async () => {
    expect(() => parseManifest(manifest({ download: { sha256: null } }), 'x.json')).toThrow(/pin/);
    expect(() => parseManifest(manifest({ download: { sha256: 'abc' } }), 'x.json')).toThrow(/sha256/);
    const r = await cli('models', 'pull', 'mobilenetv2-block10-gem3x3');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/built locally .*kagami models build/);
    const unknown = await cli('models', 'pull', 'no-such-model');
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/model not found: no-such-model/);
  });

  test('models list shows kind, presence and dimension', async () => {
    const r = await cli('models', 'list', '--json');
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.out) as Array<{ id: string; kind: string; present: boolean; dimension: number; pin: string }>;
    const byId = Object.fromEntries(rows.map((x) => [x.id, x]));
    expect(byId['dinov2-vits14']).toMatchObject({ kind: 'downloaded', present: false, dimension: 384, pin: 'sha256' });
    expect(byId['clip-vitb32-image']).toMatchObject({ kind: 'downloaded', present: false, dimension: 512, pin: 'sha256' });
    expect(byId['ccip']).toMatchObject({ kind: 'downloaded', present: false, dimension: 768, pin: 'unpinned' });
    expect(byId['mobilenetv2-block10-gem3x3']).toMatchObject({ kind: 'built', dimension: 864 });
    const table = await cli('models', 'list');
    expect(table.out).toMatch(/^ID +KIND +PRESENT +DIM/);
    expect(table.out).toMatch(/ccip +downloaded +no +768 +unpinned/);
  });

  test('models list names the int8 weights this machine runs (KAGAMI_INT8_WEIGHTS forces them)', async () => {
    const before = process.env.KAGAMI_INT8_WEIGHTS;
    try {
      for (const bits of [7, 8] as const) {
        process.env.KAGAMI_INT8_WEIGHTS = String(bits);
        const rows = JSON.parse((await cli('models', 'list', '--json')).out) as Array<{ id: string; file: string; weightBits?: number; present: boolean }>;
        const v10 = rows.find((x) => x.id === 'kagami-descriptor-v10-int8');
        expect(v10).toMatchObject({ weightBits: bits, present: true, file: bits === 8 ? 'kagami-descriptor-v10-int8-w8.onnx' : 'kagami-descriptor-v10-int8.onnx' });
        expect(rows.find((x) => x.id === 'kagami-descriptor-v9-int8')?.weightBits).toBeUndefined();
        expect((await cli('models', 'list')).out).toMatch(new RegExp(`kagami-descriptor-v10-int8 +trained, ${bits}-bit weights +yes`));
      }
    } finally {
      if (before === undefined) delete process.env.KAGAMI_INT8_WEIGHTS;
      else process.env.KAGAMI_INT8_WEIGHTS = before;
    }
  });
});

describe('OnnxEmbedder on a pulled NCHW model', () => {
  /** 32x32 RGB test image. */
  const image: RawImage = { width: S, height: S, channels: 3, data: new Uint8Array(S * S * 3) };
  for (let i = 0; i < S * S; i++) image.data.set([(i * 7) % 256, (i * 13 + 50) % 256, 255 - (i % 256)], i * 3);
  const mean = [0.5, 0.4, 0.3];
  const std = [0.2, 0.25, 0.3];

  /** By hand: NCHW planes of (v/255 - mean)/std, times W. */
  function raw(): number[] {
    const w = weights(1);
    const x = new Float64Array(IN);
    for (let c = 0; c < 3; c++) for (let i = 0; i < S * S; i++) x[c * S * S + i] = (image.data[i * 3 + c] / 255 - mean[c]) / std[c];
    const out: number[] = [];
    for (let j = 0; j < OUT; j++) {
      let s = 0;
      for (let i = 0; i < IN; i++) s += x[i] * w[i * OUT + j];
      out.push(s);
    }
    return out;
  }
  const l2 = (v: number[]) => {
    const n = Math.hypot(...v);
    return v.map((x) => x / n);
  };
  const expectClose = (got: Float32Array, want: number[]) => {
    expect(got).toHaveLength(want.length);
    want.forEach((w, i) => expect(Math.abs(got[i] - w)).toBeLessThan(1e-5));
  };

  test('NCHW, 0..1 range, mean/std, L2 normalisation, output selection and token pooling match a hand computation', async () => {
    const mf = writeManifest(manifest());
    expect((await cli('models', 'pull', mf)).code).toBe(0);
    const want = raw();

    const emb = await OnnxEmbedder.create(mf, { modelsDir: filesDir });
    const [v, v2] = await emb.embed([image, image]);
    expectClose(v, l2(want));
    expectClose(v2, l2(want));
    await emb.dispose();

    // The same file through other manifests: the token output, CLS pooling and mean pooling.
    const cls = writeManifest(manifest({ id: 'tiny-cls', output: { name: 'tokens', pooling: 'cls', dimension: 4 } }));
    const e2 = await OnnxEmbedder.create(cls, { modelsDir: filesDir });
    expectClose((await e2.embed([image]))[0], l2(want.slice(0, 4)));
    await e2.dispose();
    const mean2 = writeManifest(manifest({ id: 'tiny-mean', output: { name: 'tokens', pooling: 'mean', dimension: 4 } }));
    const e3 = await OnnxEmbedder.create(mean2, { modelsDir: filesDir });
    expectClose((await e3.embed([image]))[0], l2(want.slice(0, 4).map((a, i) => (a + want[4 + i]) / 2)));
    await e3.dispose();
  });

  test('a missing downloaded model is an error naming the pull command', async () => {
    const mf = writeManifest(manifest());
    await expect(OnnxEmbedder.create(mf, { modelsDir: filesDir })).rejects.toThrow(/kagami models pull tiny/);
  });

  test('resizeForManifest: centre-crop, stretch and letterbox produce the model size', async () => {
    const wide: RawImage = { width: 80, height: 40, channels: 4, data: new Uint8Array(80 * 40 * 4).fill(200) };
    for (const resize of [{ mode: 'centre-crop', shorterSide: 36 }, { mode: 'stretch' }, { mode: 'letterbox', kernel: 'linear' }] as const) {
      const r = await resizeForManifest(wide, { width: S, height: S, resize });
      expect([r.width, r.height, r.channels, r.data.length]).toEqual([S, S, 3, S * S * 3]);
    }
  });
});

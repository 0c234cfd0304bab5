/**
 * Downloads the ONNX file of a `download` manifest (models/*.json): `kagami models pull ID`.
 *
 *  - Streams with Node's fetch into `<file>.part` next to the final file (KAGAMI_MODELS_DIR or models/).
 *  - Resumable: when a `.part` exists (an earlier pull was interrupted) it asks for the rest with
 *    `Range: bytes=<size>-`, guarded by `If-Range` with the ETag / Last-Modified the first response
 *    had (kept in `<file>.part.meta`). 206 appends; 200 (server ignores ranges, or the file changed)
 *    starts again from zero; 416 means the part is already complete (or stale: start again).
 *  - Checks the sha256 before the file is moved into place: the manifest's `download.sha256`, or, for
 *    `"pin": "on-first-pull"` manifests, the hash recorded in `<id>.lock.json` by the first pull (trust
 *    on first use: the first pull writes the lock and prints a warning; later pulls and every load
 *    must match it). A mismatch deletes the `.part` and fails.
 *  - Loads the result with onnxruntime and checks the manifest's input/output names and dimensions.
 *  - Moves it into place atomically (rename), so a model file is either complete and verified or absent.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as ort from 'onnxruntime-node';
import { KagamiError } from '../errors';
import {
  expectedSha256,
  type ExpectedHash,
  type LoadedManifest,
  listManifestFiles,
  loadManifest,
  type ModelLock,
  readLock,
} from '../signals/embedding/manifest';
import { checkModelSignature } from '../signals/embedding/onnx-embedder';

export interface PullProgress {
  id: string;
  /** Bytes in the .part file so far (including a resumed prefix). */
  received: number;
  /** Size of the whole file when the server said so. */
  total?: number;
  /** Bytes that were already there when this download started (0 = from the beginning). */
  resumedFrom: number;
}

export interface PullOptions {
  manifestPath: string;
  /** Folder of the model file, .part and lock (default: the manifest's folder). */
  modelsDir?: string;
  /** Download from here instead of the manifest's url (a mirror); the hash check is the same. */
  url?: string;
  /** Download again even when the file is present. */
  force?: boolean;
  onProgress?: (p: PullProgress) => void;
  /** Warnings (trust on first use). Default: stderr. */
  warn?: (line: string) => void;
  /** Abort the download (e.g. on SIGINT); the .part stays for a later resume. */
  signal?: AbortSignal;
}

export interface PullResult {
  id: string;
  path: string;
  sha256: string;
  bytes: number;
  /** present: the file was there already and matched; downloaded: fetched now. */
  status: 'present' | 'downloaded';
  /** Bytes reused from an earlier, interrupted download. */
  resumedFrom: number;
  /** Where the checked hash came from: the manifest, an earlier lock, or this pull (new lock). */
  pinnedBy: 'manifest' | 'lock' | 'new-lock';
  url?: string;
}

interface PartMeta {
  url: string;
  etag?: string;
  lastModified?: string;
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(fs.createReadStream(file), hash);
  return hash.digest('hex');
}

function describeError(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  const cause = err?.cause;
  const detail = cause ? [cause.code, cause.message].filter(Boolean).join(' ') : '';
  return detail && !err.message.includes(detail) ? `${err.message} (${detail})` : String(err?.message ?? e);
}

function hashSource(e: ExpectedHash, m: LoadedManifest): string {
  return e.from === 'lock' ? `the lock file ${m.lockPath}` : `manifest ${m.manifestPath}`;
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

function readMeta(file: string): PartMeta | undefined {
  try {
    const j = JSON.parse(fs.readFileSync(file, 'utf8'));
    return typeof j?.url === 'string' ? j : undefined;
  } catch {
    return undefined;
  }
}

function rmQuiet(...files: string[]): void {
  for (const f of files) fs.rmSync(f, { force: true });
}

/** Content-Range `bytes START-END/TOTAL` (or an unsatisfied range: star, slash, TOTAL) → numbers (undefined where absent or malformed). */
export function parseContentRange(v: string | null): { start?: number; end?: number; total?: number } | undefined {
  if (!v) return undefined;
  const m = /^bytes\s+(?:(\d+)-(\d+)|\*)\/(\d+|\*)$/i.exec(v.trim());
  if (!m) return undefined;
  const num = (s?: string) => (s === undefined || s === '*' ? undefined : Number(s));
  return { start: num(m[1]), end: num(m[2]), total: num(m[3]) };
}

/**
 * Fetch `url` into `part`, resuming what is there when its provenance (`meta`) matches. Keeps the
 * .part on network errors (a later call resumes); throws KagamiError('download_failed').
 */
async function download(
  url: string,
  part: string,
  metaPath: string,
  opts: Pick<PullOptions, 'signal'> & { maxBytes?: number; onProgress?: (p: Omit<PullProgress, 'id'>) => void },
  retried = false,
): Promise<{ bytes: number; resumedFrom: number }> {
  let start = 0;
  let validator: string | undefined;
  if (fs.existsSync(part)) {
    const meta = readMeta(metaPath);
    const size = fs.statSync(part).size;
    if (meta && meta.url === url && size > 0) {
      start = size;
      validator = meta.etag && !meta.etag.startsWith('W/') ? meta.etag : meta.lastModified;
    } else {
      rmQuiet(part, metaPath); // unknown origin: do not append to it
    }
  }
  const headers: Record<string, string> = { 'user-agent': 'kagami-models-pull', 'accept-encoding': 'identity' };
  if (start > 0) {
    headers.range = `bytes=${start}-`;
    if (validator) headers['if-range'] = validator;
  }
  let res: Response;
  try {
    res = await fetch(url, { headers, redirect: 'follow', signal: opts.signal });
  } catch (e) {
    throw new KagamiError('download_failed', `cannot download ${url}: ${describeError(e)}`, 502, { cause: e });
  }
  const restart = async () => {
    await res.body?.cancel().catch(() => undefined);
    rmQuiet(part, metaPath);
    if (retried) throw new KagamiError('download_failed', `download of ${url}: the server's range answers are inconsistent`, 502);
    return download(url, part, metaPath, opts, true);
  };
  let total: number | undefined;
  let flags: 'a' | 'w';
  if (start > 0 && res.status === 416) {
    // Nothing left to send: complete if the server's size is what we have, else the part is stale.
    const cr = parseContentRange(res.headers.get('content-range'));
    if (cr?.total === start) {
      await res.body?.cancel().catch(() => undefined);
      return { bytes: start, resumedFrom: start };
    }
    return restart();
  }
  if (start > 0 && res.status === 206) {
    const cr = parseContentRange(res.headers.get('content-range'));
    if (cr?.start !== start) return restart();
    total = cr.total;
    flags = 'a';
  } else if (res.status >= 200 && res.status < 300 && res.status !== 206) {
    // A full answer: the server ignored Range (or If-Range said the file changed). Start from zero.
    start = 0;
    flags = 'w';
    const len = res.headers.get('content-length');
    total = len !== null && /^\d+$/.test(len) ? Number(len) : undefined;
    const meta: PartMeta = { url };
    const etag = res.headers.get('etag');
    const lm = res.headers.get('last-modified');
    if (etag) meta.etag = etag;
    if (lm) meta.lastModified = lm;
    writeAtomic(metaPath, JSON.stringify(meta) + '\n');
  } else if (res.status === 206) {
    // 206 to a request without Range: not something we can use.
    await res.body?.cancel().catch(() => undefined);
    throw new KagamiError('download_failed', `download of ${url} failed: unexpected HTTP 206 without a range request`, 502);
  } else {
    await res.body?.cancel().catch(() => undefined);
    throw new KagamiError('download_failed', `download of ${url} failed: HTTP ${res.status}${res.statusText ? ' ' + res.statusText : ''}`, 502);
  }
  if (opts.maxBytes !== undefined && total !== undefined && total !== opts.maxBytes) {
    await res.body?.cancel().catch(() => undefined);
    rmQuiet(part, metaPath);
    throw new KagamiError('download_failed', `download of ${url}: the server's file has ${total} bytes, the manifest says ${opts.maxBytes}`, 502);
  }
  if (!res.body) throw new KagamiError('download_failed', `download of ${url} failed: empty response`, 502);
  const resumedFrom = start;
  let received = start;
  const report = () => opts.onProgress?.({ received, total, resumedFrom });
  report();
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      received += chunk.length;
      if (opts.maxBytes !== undefined && received > opts.maxBytes) {
        cb(new KagamiError('download_too_big', `more than the ${opts.maxBytes} bytes the manifest declares`));
        return;
      }
      report();
      cb(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), counter, fs.createWriteStream(part, { flags }));
  } catch (e) {
    if ((e as KagamiError).code === 'download_too_big') {
      rmQuiet(part, metaPath);
      throw new KagamiError('download_failed', `download of ${url}: ${(e as Error).message}; deleted the partial file`, 502);
    }
    const of = total !== undefined ? ` of ${total}` : '';
    throw new KagamiError(
      'download_failed',
      `download of ${url} interrupted after ${received}${of} bytes: ${describeError(e)}; run the same command again to resume`,
      502,
      { cause: e },
    );
  }
  const size = fs.statSync(part).size;
  if (total !== undefined && size !== total) {
    throw new KagamiError('download_failed', `download of ${url} ended early: ${size} of ${total} bytes; run the same command again to resume`, 502);
  }
  return { bytes: size, resumedFrom };
}

/** Load an ONNX file with onnxruntime and check it against the manifest's input/output. */
export async function verifyOnnxFile(file: string, m: LoadedManifest): Promise<void> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(file, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1 });
  } catch (e) {
    throw new KagamiError('invalid_model', `${m.id}: the downloaded file is not a loadable ONNX model: ${(e as Error).message}`, 502);
  }
  try {
    checkModelSignature(session, m);
  } catch (e) {
    throw new KagamiError('invalid_model', `${m.id}: ${(e as Error).message}`, 502);
  } finally {
    await session.release();
  }
}

function expectedOrThrow(m: LoadedManifest): ExpectedHash {
  try {
    return expectedSha256(m);
  } catch (e) {
    throw new KagamiError('invalid_lock', (e as Error).message);
  }
}

export async function pullModel(opts: PullOptions): Promise<PullResult> {
  const m = loadManifest(opts.manifestPath, { modelsDir: opts.modelsDir });
  const warn = opts.warn ?? ((l: string) => process.stderr.write(l + '\n'));
  if (!m.download) {
    throw new KagamiError(
      'not_downloadable',
      m.training
        ? `${m.id} is Kagami's own trained model, committed in models/: nothing to download`
        : `${m.id} is built locally from the ${m.source?.package} npm package, not downloaded: run \`kagami models build\``,
    );
  }
  const url = opts.url ?? m.download.url;
  if (!/^https?:\/\/[^/]/i.test(url)) throw new KagamiError('invalid_request', `--url must be an http(s) URL, got ${url}`);
  const expected = expectedOrThrow(m);
  const target = m.modelPath;
  fs.mkdirSync(path.dirname(target), { recursive: true });

  if (fs.existsSync(target) && !opts.force) {
    const sha = await sha256File(target);
    if (expected.sha256 === sha) {
      return { id: m.id, path: target, sha256: sha, bytes: fs.statSync(target).size, status: 'present', resumedFrom: 0, pinnedBy: expected.from as 'manifest' | 'lock' };
    }
    if (expected.sha256 === null) {
      throw new KagamiError('model_unpinned', `${target} exists but its sha256 was never pinned (no ${m.lockPath}): run with --force to download it again and pin it`);
    }
    throw new KagamiError(
      'checksum_mismatch',
      `${target} exists with sha256 ${sha}, but ${hashSource(expected, m)} expects ${expected.sha256}: run with --force to download it again`,
    );
  }

  const part = `${target}.part`;
  const metaPath = `${part}.meta`;
  const onProgress = opts.onProgress && ((p: Omit<PullProgress, 'id'>) => opts.onProgress!({ id: m.id, ...p }));
  const got = await download(url, part, metaPath, { onProgress, signal: opts.signal, maxBytes: m.download.bytes });
  const sha = await sha256File(part);
  if (expected.sha256 !== null && sha !== expected.sha256) {
    rmQuiet(part, metaPath);
    throw new KagamiError(
      'checksum_mismatch',
      `${m.id}: the file downloaded from ${url} has sha256 ${sha}, but ${hashSource(expected, m)} expects ${expected.sha256}; ` +
        'deleted it (a different or corrupted file, or the publisher changed it: check before trusting another hash)',
    );
  }
  try {
    await verifyOnnxFile(part, m);
  } catch (e) {
    rmQuiet(part, metaPath);
    throw e;
  }
  let pinnedBy: PullResult['pinnedBy'];
  if (expected.sha256 === null) {
    const lock: ModelLock = { id: m.id, file: m.file, sha256: sha, bytes: got.bytes, url, pinnedAt: new Date().toISOString() };
    writeAtomic(m.lockPath, JSON.stringify(lock, null, 2) + '\n');
    pinnedBy = 'new-lock';
    warn(
      `warning: ${m.id}: the manifest publishes no sha256, so this first download is trusted as is (trust on first use).\n` +
        `  sha256 ${sha} (${got.bytes} bytes, from ${url})\n` +
        `  is now recorded in ${m.lockPath}; later pulls and every load must match it.\n` +
        `  Compare it with the publisher's (e.g. the file page on the hub) before relying on this model.`,
    );
  } else {
    pinnedBy = expected.from as 'manifest' | 'lock';
  }
  fs.renameSync(part, target);
  rmQuiet(metaPath);
  return { id: m.id, path: target, sha256: sha, bytes: got.bytes, status: 'downloaded', resumedFrom: got.resumedFrom, pinnedBy, url };
}

export interface ModelListing {
  id: string;
  kind: 'built' | 'downloaded' | 'trained';
  present: boolean;
  dimension: number;
  file: string;
  path: string;
  bytes?: number;
  /** built: sha256 in the manifest; sha256: published hash; lock: pinned on first pull; unpinned: not yet. */
  pin: 'built' | 'sha256' | 'lock' | 'unpinned' | 'invalid-lock';
  licence: string;
  url?: string;
  /** Int8 models with an 8-bit weights variant: the weights this machine runs (file and path are theirs). */
  weightBits?: 7 | 8;
  /** Set when the manifest itself is invalid. */
  error?: string;
}

/** Every manifest in `manifestsDir`, with whether its file is present in `modelsDir` (no hashing). */
export function listModels(manifestsDir: string, modelsDir?: string): ModelListing[] {
  return listManifestFiles(manifestsDir).map((file): ModelListing => {
    let m: LoadedManifest;
    try {
      m = loadManifest(file, { modelsDir });
    } catch (e) {
      const id = path.basename(file, '.json');
      return { id, kind: 'built', present: false, dimension: 0, file: '', path: '', pin: 'built', licence: '', error: (e as Error).message };
    }
    const present = fs.existsSync(m.modelPath);
    let pin: ModelListing['pin'] = 'built';
    if (m.download) {
      if (m.download.sha256) pin = 'sha256';
      else {
        try {
          pin = readLock(m) ? 'lock' : 'unpinned';
        } catch {
          pin = 'invalid-lock';
        }
      }
    }
    return {
      id: m.id,
      kind: m.download ? 'downloaded' : m.training ? 'trained' : 'built',
      present,
      dimension: m.output.dimension,
      file: m.file,
      path: m.modelPath,
      bytes: present ? fs.statSync(m.modelPath).size : m.download?.bytes,
      pin,
      licence: m.download?.licence ?? m.licence,
      url: m.download?.url,
      ...(m.weightBits ? { weightBits: m.weightBits } : {}),
    };
  });
}

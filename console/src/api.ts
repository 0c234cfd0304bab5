/** The console is a client of the public API: same routes, the key as a Bearer token (and a cookie for <img>). */
const KEY = 'kagami_key';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function getKey(): string | undefined {
  const s = sessionStorage.getItem(KEY);
  if (s) return s;
  const m = /(?:^|;\s*)kagami_key=([^;]+)/.exec(document.cookie);
  return m ? decodeURIComponent(m[1]) : undefined;
}

export function setKey(key: string): void {
  sessionStorage.setItem(KEY, key);
  // Lets <img src="/v1/..."> and download links authenticate; never sent to other sites.
  document.cookie = `${KEY}=${encodeURIComponent(key)}; path=/; SameSite=Strict${location.protocol === 'https:' ? '; Secure' : ''}`;
}

export function clearKey(): void {
  sessionStorage.removeItem(KEY);
  document.cookie = `${KEY}=; path=/; SameSite=Strict; max-age=0`;
}

async function fail(res: Response): Promise<never> {
  let code = 'http_' + res.status;
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = (await res.json()) as { error?: { code: string; message: string } };
    if (body.error) ({ code, message } = body.error);
  } catch {
    /* not JSON */
  }
  if (res.status === 401) window.dispatchEvent(new CustomEvent('kagami:unauthorized'));
  throw new ApiError(res.status, code, message);
}

export async function api<T = unknown>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
  const headers: Record<string, string> = {};
  const key = getKey();
  if (key) headers.authorization = `Bearer ${key}`;
  let body: BodyInit | undefined;
  if (init.body instanceof FormData) body = init.body;
  else if (init.body !== undefined) {
    body = JSON.stringify(init.body);
    headers['content-type'] = 'application/json';
  }
  const res = await fetch(path, { method: init.method ?? 'GET', headers, body, credentials: 'same-origin' });
  if (!res.ok) return fail(res);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

/** Uploads multipart form data with progress (fetch has no upload progress). */
export function upload<T>(path: string, form: FormData, onProgress: (frac: number) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    const key = getKey();
    if (key) xhr.setRequestHeader('authorization', `Bearer ${key}`);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject(new ApiError(0, 'network', 'the upload failed: network error'));
    xhr.onload = () => {
      let data: unknown;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = undefined;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data as T);
      else {
        const err = (data as { error?: { code: string; message: string } } | undefined)?.error;
        reject(new ApiError(xhr.status, err?.code ?? `http_${xhr.status}`, err?.message ?? `upload failed (${xhr.status})`));
      }
    };
    xhr.send(form);
  });
}

// ---- API types (the parts the console reads)

export interface Me { id: string; name: string; role: 'rightsholder' | 'platform' | 'admin' }
export interface Reference { id: string; status: 'pending' | 'ready' | 'failed'; fileName: string; width: number; height: number; createdAt: string; error?: string; warnings: string[]; negative: boolean }
export interface Character { id: string; name: string; owner: string; franchise?: string; createdAt: string; references: Reference[] }
export interface Segment { startSec: number; endSec: number }
export interface Decision { decision: string; by: string; at: string; note?: string; negativeReferenceId?: string }
export interface Decisions { owner?: Decision; platform?: Decision }
export type Verdict = 'match' | 'review' | 'clear';
export type Effective = Verdict | 'allowed';
export interface Box { x: number; y: number; width: number; height: number }
export interface ReportMatch {
  characterId: string; name: string; owner: string; verdict: Verdict; score: number; kind: 'copy' | 'likeness'; segments: Segment[];
  evidence: { timeSec: number; referenceImage: string; referenceId: string; similarity: number; inliers?: number; mirrored?: boolean; box?: Box };
  framesMatched: number; reason: string; matchId?: string; decisions?: Decisions; effectiveVerdict?: Effective;
}
export interface Report { video: string; durationSec: number; framesSampled: number; verdict: Verdict; effectiveVerdict?: Verdict; matches: ReportMatch[]; model: string; elapsedSec: number }
export interface Scan { id: string; status: 'queued' | 'running' | 'done' | 'failed'; progress: number; report: Report | null; error?: string; fileName: string; batchId?: string; createdAt: string; finishedAt?: string }
export interface Match {
  id: string; scanId: string; platform?: string; characterId: string; characterName?: string; owner: string; verdict: Verdict; score: number; kind: string;
  segments: Segment[]; evidence: { timeSec?: number; referenceId?: string; box?: Box; similarity?: number; inliers?: number; reason?: string; durationSec?: number }; video: string; createdAt: string;
  decisions?: Decisions; effectiveVerdict: Effective;
}
export interface Batch { id: string; status: 'running' | 'done'; total: number; counts: { queued: number; running: number; done: number; failed: number }; progress: number; createdAt: string; finishedAt?: string }

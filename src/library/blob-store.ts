import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** Content-addressed storage of reference files: the key is the sha256 of the bytes. */
export interface BlobStore {
  /** Stores the bytes (a no-op when already there); returns the key and whether it was new. */
  put(bytes: Buffer): Promise<{ key: string; created: boolean }>;
  get(key: string): Promise<Buffer>;
  delete(key: string): Promise<void>;
}

export function sha256Hex(bytes: Buffer | Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Blobs as files `blobs/ab/abcdef…` under a directory; written to a temp name and renamed, so never half-written. */
export class FsBlobStore implements BlobStore {
  constructor(private readonly dir: string) {}

  pathOf(key: string): string {
    if (!/^[0-9a-f]{64}$/.test(key)) throw new Error(`bad blob key: ${key}`);
    return path.join(this.dir, key.slice(0, 2), key);
  }

  async put(bytes: Buffer): Promise<{ key: string; created: boolean }> {
    const key = sha256Hex(bytes);
    const file = this.pathOf(key);
    try {
      await stat(file);
      return { key, created: false };
    } catch {
      await mkdir(path.dirname(file), { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      await writeFile(tmp, bytes);
      await rename(tmp, file);
      return { key, created: true };
    }
  }

  get(key: string): Promise<Buffer> {
    return readFile(this.pathOf(key));
  }

  async delete(key: string): Promise<void> {
    await rm(this.pathOf(key), { force: true });
  }
}

/** Streams a file into the blob store without holding it in memory; the source file is moved or removed. */
export async function putFile(store: FsBlobStore, file: string): Promise<{ key: string; size: number }> {
  const { createReadStream } = await import('node:fs');
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  const key = hash.digest('hex');
  const dest = store.pathOf(key);
  try {
    await stat(dest);
    await rm(file, { force: true });
  } catch {
    await mkdir(path.dirname(dest), { recursive: true });
    await rename(file, dest);
  }
  return { key, size };
}

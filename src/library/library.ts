/**
 * The reference library on disk (the embedded default): `DIR/kagami.db` (SQLite) and `DIR/blobs/`
 * (the registered files, content-addressed). Use cases: open, register references, list.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { InvalidMediaError, LibraryError, ValidationError } from '../errors';
import { decodeReference, resizeRaw, type DecodeLimits, DEFAULT_DECODE_LIMITS } from '../media/image';
import type { Embedder } from '../signals/embedder';
import { extractReferenceFeatures, serializeKeypointSet, deserializeKeypointSet, type KeypointSet } from '../signals/keypoints';
import { FsBlobStore, sha256Hex } from './blob-store';
import type { MetadataStore } from './metadata-store';
import { SqliteStore } from './sqlite-store';
import type { CharacterRecord, ReferenceRecord } from './types';

export const DB_FILE = 'kagami.db';

export interface Library {
  dir: string;
  store: MetadataStore;
  blobs: FsBlobStore;
}

/** Opens the library in `dir`; with `create`, makes it if missing, otherwise a missing library is an error. */
export function openLibrary(dir: string, opts: { create: boolean }): Library {
  const db = path.join(dir, DB_FILE);
  if (!opts.create) {
    if (!existsSync(dir)) throw new LibraryError('library_not_found', `library not found: ${dir} does not exist (register a character first with 'kagami library add')`);
    if (!statSync(dir).isDirectory()) throw new LibraryError('library_not_found', `library not found: ${dir} is not a directory`);
    if (!existsSync(db)) throw new LibraryError('library_not_found', `library not found: ${dir} has no ${DB_FILE} (register a character first with 'kagami library add')`);
  } else {
    mkdirSync(dir, { recursive: true });
  }
  return { dir, store: new SqliteStore(db), blobs: new FsBlobStore(path.join(dir, 'blobs')) };
}

export interface CharacterInput {
  id: string;
  name?: string;
  owner?: string;
  franchise?: string;
}

export interface ReferenceFile {
  name: string;
  bytes: Buffer;
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export function validateCharacterId(id: string): void {
  if (!ID_RE.test(id)) {
    throw new ValidationError(`invalid character id '${id}': use 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit`);
  }
}

/** A reference id: stable for (character, file content), so registering the same file twice is a no-op. */
export function referenceId(characterId: string, sha256: string): string {
  return 'ref_' + createHash('sha256').update(`${characterId}\0${sha256}`).digest('hex').slice(0, 20);
}

/** Packs the normal and mirrored keypoint sets of a reference into one stored value. */
export function packKeypoints(normal: KeypointSet, mirrored: KeypointSet): Buffer {
  const a = serializeKeypointSet(normal);
  const b = serializeKeypointSet(mirrored);
  const head = Buffer.alloc(4);
  head.writeUInt32LE(a.length, 0);
  return Buffer.concat([head, a, b]);
}

export function unpackKeypoints(buf: Buffer): { normal: KeypointSet; mirrored: KeypointSet } {
  const n = buf.readUInt32LE(0);
  return { normal: deserializeKeypointSet(buf.subarray(4, 4 + n)), mirrored: deserializeKeypointSet(buf.subarray(4 + n)) };
}

/**
 * Registers reference images for a character (created if new). Every file is decoded and its
 * features computed before anything is written, so a bad file leaves the library untouched.
 */
export async function addReferences(
  lib: Library,
  embedder: Embedder,
  character: CharacterInput,
  files: ReferenceFile[],
  limits: DecodeLimits = DEFAULT_DECODE_LIMITS,
): Promise<{ character: CharacterRecord; references: ReferenceRecord[]; added: number }> {
  validateCharacterId(character.id);
  if (!files.length) throw new ValidationError('no reference images given');
  const existing = await lib.store.getCharacter(character.id);
  const name = character.name ?? existing?.name;
  const owner = character.owner ?? existing?.owner;
  if (!name || !owner) {
    throw new ValidationError(`character '${character.id}' is new: give its --name and --owner`);
  }
  if (existing && character.owner && existing.owner !== character.owner) {
    throw new ValidationError(`character '${character.id}' belongs to owner '${existing.owner}', not '${character.owner}'`);
  }
  const stored = await lib.store.getModel();
  if (stored && stored.modelId !== embedder.modelId) {
    throw new LibraryError('model_mismatch', `library was built with model ${stored.modelId}; this Kagami uses ${embedder.modelId}`);
  }

  const prepared = [];
  for (const f of files) {
    const decoded = await decodeReference(f.name, f.bytes, limits);
    const kp = await extractReferenceFeatures(decoded.image);
    if (kp.normal.count < 8) {
      throw new InvalidMediaError(f.name, `too little detail to recognise (${kp.normal.count} keypoints): use larger or sharper art`);
    }
    const input = await resizeRaw(decoded.image, embedder.inputWidth, embedder.inputHeight, 'contain');
    const [vec] = await embedder.embed([input]);
    const sha = sha256Hex(f.bytes);
    prepared.push({ f, decoded, sha, vec, kp: packKeypoints(kp.normal, kp.mirrored) });
  }

  await lib.store.setModel({ modelId: embedder.modelId, dimension: embedder.dimension });
  const rec = await lib.store.upsertCharacter({ id: character.id, name, owner, franchise: character.franchise });
  const before = new Set((await lib.store.listReferences(character.id)).map((r) => r.id));
  for (const p of prepared) await lib.blobs.put(p.f.bytes);
  const refs = await lib.store.addReferences(
    prepared.map((p) => {
      const id = referenceId(character.id, p.sha);
      return {
        ref: { id, characterId: character.id, sha256: p.sha, fileName: path.basename(p.f.name), width: p.decoded.originalWidth, height: p.decoded.originalHeight, status: 'ready' as const },
        features: { referenceId: id, characterId: character.id, embedding: p.vec, keypoints: p.kp },
      };
    }),
  );
  return { character: rec, references: refs, added: refs.filter((r) => !before.has(r.id)).length };
}

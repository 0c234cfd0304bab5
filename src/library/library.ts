/**
 * The reference library on disk (the embedded default): `DIR/kagami.db` (SQLite) and `DIR/blobs/`
 * (the registered files, content-addressed). Use cases: open, register references, list.
 */
import path from 'node:path';
import { createHash } from 'node:crypto';
import { InvalidMediaError, KagamiError, LibraryError, ValidationError } from '../errors';
import { decodeReference, resizeCentred, type DecodeLimits, DEFAULT_DECODE_LIMITS } from '../media/image';
import type { Embedder } from '../signals/embedder';
import type { RawImage } from '../media/types';
import { extractReferenceFeatures } from '../signals/keypoints';
import { packKeypoints } from './keypoint-pack';
import { FsBlobStore, sha256Hex, type BlobStore } from './blob-store';
import type { MetadataStore } from './metadata-store';
import { openStore } from './open-store';
import type { CharacterRecord, LibraryModel, ReferenceRecord, ReferenceReplacement } from './types';

/** A library: its metadata (SQLite or PostgreSQL) and its blobs (the registered files). */
export interface Library {
  store: MetadataStore;
  blobs: BlobStore;
}

/**
 * Opens the library: metadata in PostgreSQL when `databaseUrl` is given, else SQLite in `dir`;
 * blobs under `dataDir` (default `dir`). Without `create`, a missing SQLite library is an error.
 */
export async function openLibrary(dir: string, opts: { create: boolean; databaseUrl?: string; dataDir?: string }): Promise<Library> {
  const store = await openStore({ databaseUrl: opts.databaseUrl, libraryDir: dir, create: opts.create });
  return { store, blobs: new FsBlobStore(path.join(opts.dataDir ?? dir, 'blobs')) };
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

export interface PreparedReference {
  sha256: string;
  width: number;
  height: number;
  embedding: Float32Array;
  keypoints: Buffer;
}

/**
 * Decodes one reference file (under the pixel limits), isolates the character from its canvas and
 * computes what both matchers need. Throws InvalidMediaError naming the file for unusable art.
 */
export async function prepareReference(file: ReferenceFile, embedder: Embedder, limits: DecodeLimits = DEFAULT_DECODE_LIMITS): Promise<PreparedReference> {
  const decoded = await decodeReference(file.name, file.bytes, limits);
  const kp = await extractReferenceFeatures(decoded.image);
  if (kp.normal.count < 8) {
    throw new InvalidMediaError(file.name, `too little detail to recognise (${kp.normal.count} keypoints): use larger or sharper art`);
  }
  const embedding = meanOfViews(await embedder.embed(await embedderInputs(decoded.image, embedder)));
  return {
    sha256: sha256Hex(file.bytes),
    width: decoded.originalWidth,
    height: decoded.originalHeight,
    embedding,
    keypoints: packKeypoints(kp.normal, kp.mirrored),
  };
}

/**
 * Crop models: the sizes, as fractions of the model's input side, at which a reference picture is
 * embedded, centred (on each of REFERENCE_VIEW_BACKGROUNDS); the reference's vector is the mean of
 * these views (re-normalised). A sliding window sees a character at 40-105 % of its side, not always
 * filling it as the reference picture does. 200-clip accuracy bench, seed 1, 150 characters: µAP
 * 0.732 → 0.750, temporal IoU 0.663 → 0.688 (the three views as separate index rows: 0.736 / 0.685,
 * for three times the vectors).
 */
export const REFERENCE_VIEW_SCALES: readonly number[] = [1, 0.7, 0.5];

/**
 * Crop models: the canvas colours a reference picture is flattened onto for its views (each at
 * every REFERENCE_VIEW_SCALES size; the vector is the mean of all of them). A window sees the
 * character over whatever scene it is in, not over grey: averaging over dark, light, grey and two
 * muted natural tints (foliage, sky) keeps less of any one canvas in the vector. 200-clip accuracy
 * bench, 150 characters, kagami-descriptor-v10-int8, same session: seed 1 µAP 0.815 → 0.828,
 * R@P.95 0.649 → 0.695, new renditions AP 0.599 → 0.624, temporal IoU 0.723 → 0.718 (grey, dark and
 * light alone: 0.829 / 0.675 / 0.623 / 0.712); horizontally mirrored views added to the mean
 * instead: 0.807 (not kept). The first colour is the one resizeCentred pads with by default.
 */
export const REFERENCE_VIEW_BACKGROUNDS: readonly { r: number; g: number; b: number }[] = [
  { r: 128, g: 128, b: 128 },
  { r: 30, g: 32, b: 40 },
  { r: 226, g: 224, b: 214 },
  { r: 92, g: 124, b: 72 },
  { r: 96, g: 128, b: 168 },
];

/**
 * A decoded reference image as the embedder takes it: the whole picture fitted into its input,
 * centred on grey, and for crop models also at the smaller REFERENCE_VIEW_SCALES and on each of
 * REFERENCE_VIEW_BACKGROUNDS.
 */
function embedderInputs(image: RawImage, embedder: Embedder): Promise<RawImage[]> {
  if (embedder.usage !== 'crop') return Promise.all([resizeCentred(image, embedder.inputWidth, embedder.inputHeight, 1)]);
  return Promise.all(
    REFERENCE_VIEW_BACKGROUNDS.flatMap((bg) => REFERENCE_VIEW_SCALES.map((s) => resizeCentred(image, embedder.inputWidth, embedder.inputHeight, s, bg))),
  );
}

/** The L2-normalised mean of a reference's view vectors (the one vector it is indexed by). */
export function meanOfViews(vectors: Float32Array[]): Float32Array {
  if (vectors.length === 1) return vectors[0];
  const out = new Float32Array(vectors[0].length);
  for (const v of vectors) for (let i = 0; i < out.length; i++) out[i] += v[i];
  let norm = 0;
  for (let i = 0; i < out.length; i++) norm += out[i] * out[i];
  norm = Math.sqrt(norm);
  if (norm > 0) for (let i = 0; i < out.length; i++) out[i] /= norm;
  return out;
}

/** The model record a library keeps for vectors `embedder` computes (its weights too, for int8 models with two). */
export function libraryModelOf(embedder: Embedder): LibraryModel {
  return { modelId: embedder.modelId, dimension: embedder.dimension, ...(embedder.weightBits ? { weightBits: embedder.weightBits } : {}) };
}

/**
 * Moves a library to `embedder`'s model: every ready reference's stored file is embedded again and
 * its keypoints extracted again (they do not depend on the model, but their extraction and the
 * appearance template stored with them may have improved since the reference was added), then
 * the new features and the model are written in one transaction (LibraryStore.replaceModel).
 * Nothing changes if a file cannot be read or the library changes meanwhile. Scanners still on
 * the old model stop at their next refresh: workers that follow the library load the new model
 * (service/engine.ts), the CLI and pinned workers stop with `model_mismatch`.
 */
export async function reembedLibrary(
  lib: Library,
  embedder: Embedder,
  opts: { limits?: DecodeLimits; batch?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<{ from?: string; to: string; references: number }> {
  const from = (await lib.store.getModel())?.modelId;
  const ready = (await lib.store.listReferences()).filter((r) => r.status === 'ready');
  const batch = opts.batch ?? 32;
  const embeddings: ReferenceReplacement[] = [];
  opts.onProgress?.(0, ready.length);
  for (let i = 0; i < ready.length; i += batch) {
    const part = ready.slice(i, i + batch);
    const inputs: RawImage[] = [];
    const views: number[] = [];
    const keypoints: Buffer[] = [];
    for (const r of part) {
      let bytes: Buffer;
      try {
        bytes = await lib.blobs.get(r.sha256);
      } catch (e) {
        throw new LibraryError('blob_missing', `reference ${r.id}: its stored file ${r.sha256} cannot be read (${(e as Error).message}); nothing was changed`);
      }
      const decoded = await decodeReference(r.fileName, bytes, opts.limits ?? DEFAULT_DECODE_LIMITS);
      const kp = await extractReferenceFeatures(decoded.image);
      keypoints.push(packKeypoints(kp.normal, kp.mirrored));
      const own = await embedderInputs(decoded.image, embedder);
      inputs.push(...own);
      views.push(own.length);
    }
    const vectors = await embedder.embed(inputs);
    let at = 0;
    part.forEach((r, k) => {
      embeddings.push({ referenceId: r.id, embedding: meanOfViews(vectors.slice(at, at + views[k])), keypoints: keypoints[k] });
      at += views[k];
    });
    opts.onProgress?.(embeddings.length, ready.length);
  }
  await lib.store.replaceModel(libraryModelOf(embedder), embeddings);
  return { from, to: embedder.modelId, references: embeddings.length };
}

/** Checks that a character may get references from `owner` and fills in name/owner of an existing one. */
async function resolveCharacter(store: MetadataStore, character: CharacterInput): Promise<{ name: string; owner: string }> {
  validateCharacterId(character.id);
  const existing = await store.getCharacter(character.id);
  const name = character.name ?? existing?.name;
  const owner = character.owner ?? existing?.owner;
  if (!name || !owner) {
    throw new ValidationError(`character '${character.id}' is new: give its --name and --owner`);
  }
  if (existing && character.owner && existing.owner !== character.owner) {
    throw new ValidationError(`character '${character.id}' belongs to owner '${existing.owner}', not '${character.owner}'`);
  }
  return { name, owner };
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
  /** `negative`: the files are negative examples, look-alikes the character is not (ReferenceRecord.negative). */
  opts: { negative?: boolean } = {},
): Promise<{ character: CharacterRecord; references: ReferenceRecord[]; added: number }> {
  if (!files.length) throw new ValidationError('no reference images given');
  const negative = !!opts.negative;
  const { name, owner } = await resolveCharacter(lib.store, character);
  const stored = await lib.store.getModel();
  if (stored && stored.modelId !== embedder.modelId) {
    throw new LibraryError('model_mismatch', `library was built with model ${stored.modelId}; this Kagami uses ${embedder.modelId}`);
  }
  const prepared = [];
  for (const f of files) prepared.push({ f, p: await prepareReference(f, embedder, limits) });

  const existing = await lib.store.listReferences(character.id);
  for (const { f, p } of prepared) checkSameRole(existing, character.id, p.sha256, negative, f.name);

  const rec = await lib.store.upsertCharacter({ id: character.id, name, owner, franchise: character.franchise });
  const before = new Set(existing.map((r) => r.id));
  for (const { f } of prepared) await lib.blobs.put(f.bytes);
  const refs = await lib.store.addReferences(
    prepared.map(({ f, p }) => {
      const id = referenceId(character.id, p.sha256);
      return {
        ref: { id, characterId: character.id, sha256: p.sha256, fileName: path.basename(f.name), width: p.width, height: p.height, ...(negative ? { negative } : {}) },
        features: { referenceId: id, characterId: character.id, embedding: p.embedding, keypoints: p.keypoints },
      };
    }),
    // Recorded (a new library) or checked in the same transaction as the write, so a `reembed`
    // moving the library meanwhile cannot leave vectors of the old model in it.
    libraryModelOf(embedder),
  );
  return { character: rec, references: refs, added: refs.filter((r) => !before.has(r.id)).length };
}

/**
 * Refuses to register an image (by sha256) as a reference of a character when it is already one of
 * the character's negative examples, or the other way round: KagamiError `conflict` (409).
 */
export function checkSameRole(existing: ReferenceRecord[], characterId: string, sha256: string, negative: boolean, fileName: string): void {
  const other = existing.find((r) => r.characterId === characterId && r.sha256 === sha256 && !!r.negative !== negative);
  if (!other) return;
  const was = other.negative ? 'a negative example' : 'a reference';
  throw new KagamiError('conflict', `${fileName}: this image is already ${was} of ${characterId} (${other.id}); remove it first to register it the other way`, 409);
}

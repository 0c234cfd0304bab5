/** Value conversions and checks shared by the SQLite and PostgreSQL stores, so both behave alike. */
import { endianness } from 'node:os';
import { LibraryError, ValidationError } from '../errors';
import type { LibraryModel, MatchDecision, ReferenceFeatures, ReferenceReplacement, ScanStatus } from './types';

/** How many entries changesSince returns when no limit is given. */
export const DEFAULT_CHANGES_LIMIT = 500;
/** How many rows listScans / listMatches / listDeliveries return when no limit is given. */
export const DEFAULT_LIST_LIMIT = 100;

const LITTLE_ENDIAN = endianness() === 'LE';

/** Float32 little-endian bytes of an embedding (a copy). */
export function encodeEmbedding(e: Float32Array): Buffer {
  if (LITTLE_ENDIAN) return Buffer.from(new Uint8Array(e.buffer, e.byteOffset, e.byteLength));
  const b = Buffer.alloc(e.length * 4);
  for (let i = 0; i < e.length; i++) b.writeFloatLE(e[i], i * 4);
  return b;
}

/** The embedding stored by encodeEmbedding, in its own (aligned) buffer. */
export function decodeEmbedding(b: Buffer): Float32Array {
  const out = new Float32Array(b.byteLength >>> 2);
  if (LITTLE_ENDIAN) new Uint8Array(out.buffer).set(b.subarray(0, out.length * 4));
  else for (let i = 0; i < out.length; i++) out[i] = b.readFloatLE(i * 4);
  return out;
}

export const now = (): string => new Date().toISOString();

/** A decision on a match as both stores keep it (JSON, stamped now), or null to clear it. */
export function decisionJson(decision: Omit<MatchDecision, 'at'> | null): string | null {
  if (!decision) return null;
  return JSON.stringify({
    decision: decision.decision,
    by: decision.by,
    at: now(),
    ...(decision.note ? { note: decision.note } : {}),
    ...(decision.negativeReferenceId ? { negativeReferenceId: decision.negativeReferenceId } : {}),
  });
}

/** An ISO timestamp given by a caller, in the one form stored (`toISOString`). */
export function isoTimestamp(value: string, field: string): string {
  const d = new Date(value);
  if (typeof value !== 'string' || Number.isNaN(d.getTime())) throw new ValidationError(`${field}: not a timestamp: ${String(value)}`);
  return d.toISOString();
}

export function clampProgress(p: number): number {
  if (typeof p !== 'number' || Number.isNaN(p)) throw new ValidationError(`progress: not a number: ${String(p)}`);
  return Math.min(1, Math.max(0, p));
}

export function limitOf(limit: number | undefined, fallback: number): number {
  if (limit === undefined) return fallback;
  if (!Number.isInteger(limit) || limit < 0) throw new ValidationError(`limit must be a non-negative integer, not ${limit}`);
  return limit;
}

/** How the meta table stores a library's model (JSON; weightBits only when recorded). */
export function modelJson(model: LibraryModel): string {
  return JSON.stringify({ modelId: model.modelId, dimension: model.dimension, ...(model.weightBits ? { weightBits: model.weightBits } : {}) });
}

export function modelMismatch(current: LibraryModel, model: LibraryModel): LibraryError {
  return new LibraryError(
    'model_mismatch',
    `library holds embeddings of model ${current.modelId} (${current.dimension}-d), not ${model.modelId} (${model.dimension}-d)`,
  );
}

/** replaceModel's precondition: the replacements cover exactly the ready references, each embedding with the model's dimension. */
export function checkReplacement(model: LibraryModel, readyIds: readonly string[], replacements: ReadonlyArray<ReferenceReplacement>): void {
  const given = new Set(replacements.map((e) => e.referenceId));
  const ready = new Set(readyIds);
  const added = readyIds.filter((id) => !given.has(id)).length;
  const gone = [...given].filter((id) => !ready.has(id)).length;
  if (added || gone || given.size !== replacements.length) {
    throw new LibraryError(
      'library_changed',
      `the library changed while its references were embedded again (${added} new or newly ready, ${gone} removed or no longer ready); nothing was changed: run it again`,
    );
  }
  for (const e of replacements) {
    if (e.embedding.length !== model.dimension) {
      throw new LibraryError('model_mismatch', `reference ${e.referenceId}: embedding has ${e.embedding.length} dimensions, model ${model.modelId} has ${model.dimension}`);
    }
  }
}

/** A reference's embedding has the library model's dimension (`model_mismatch` otherwise; anything goes in a library with no model yet). */
export function checkFeatures(model: LibraryModel | undefined, refId: string, f: ReferenceFeatures): void {
  if (model && f.embedding.length !== model.dimension) {
    throw new LibraryError(
      'model_mismatch',
      `reference ${refId}: embedding has ${f.embedding.length} dimensions; the library's model ${model.modelId} has ${model.dimension}`,
    );
  }
}

export const emptyCounts = (): Record<ScanStatus, number> => ({ queued: 0, running: 0, done: 0, failed: 0 });

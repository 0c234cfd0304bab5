/**
 * Approximate nearest-neighbour cosine index (HNSW, through usearch's prebuilt native addon) with
 * the same shape as ExactVectorIndex: add / remove / search returning (id, key, similarity).
 *
 * Vectors are L2-normalised on the way in and stored under the inner-product metric, so
 * similarity = 1 - distance = cosine (up to the storage precision: f32 by default; f16 halves
 * the memory of a large library at ~1e-3 similarity error). Each add gets a fresh numeric label;
 * replacing an id removes its old label first. search() asks the graph for max(k, expansion)
 * candidates (the wider beam is what buys recall), returns the best k.
 *
 * createVectorIndex() picks ExactVectorIndex below ANN_THRESHOLD references and this index above:
 * exact search costs ~n x dim multiply-adds per frame in JS (`npm run bench -- --only search`
 * measured 39 ms p50 per frame at 10 k references of dimension 864 on a busy 2-core machine,
 * i.e. ~4 ms per 1,000), while an HNSW search took ~1.1 ms at 10 k. Below ~2,000 references the
 * exact index costs < ~8 ms per frame and its recall is perfect, so it is kept there.
 */
import { Index, MetricKind, ScalarKind, type BatchMatches, type Matches } from 'usearch';
import { ExactVectorIndex, type SearchHit } from './exact-index';

/** What the scanner needs from a vector index (ExactVectorIndex and AnnVectorIndex both have it). */
export interface VectorIndex {
  readonly modelId: string;
  readonly dimension: number;
  readonly size: number;
  has(id: string): boolean;
  assertModel(modelId: string): void;
  add(id: string, key: string, vec: Float32Array): void;
  addTagged(modelId: string, id: string, key: string, vec: Float32Array): void;
  remove(id: string): boolean;
  /** The k most similar references of each query; `beam` widens or narrows an approximate index's search (exact ignores it). */
  search(queries: Float32Array[], k: number, beam?: number): SearchHit[][];
}

export interface AnnIndexOptions {
  /** HNSW graph degree M (default 16). */
  connectivity?: number;
  /** Beam width while inserting (default 128). */
  expansionAdd?: number;
  /** Beam width while searching: candidates looked at per query (default: by size, defaultBeam). */
  expansionSearch?: number;
  /** Storage precision of the vectors (default 'f32'). */
  quantization?: 'f32' | 'f16' | 'i8';
  /** Threads for batch add / batch search (default 1). */
  threads?: number;
}

export const ANN_DEFAULTS: Required<Omit<AnnIndexOptions, 'expansionSearch'>> = {
  connectivity: 16,
  expansionAdd: 128,
  quantization: 'f32',
  threads: 1,
};

/** From this many references on, the default search beam is BEAM_LARGE instead of BEAM_SMALL. */
export const LARGE_INDEX = 300_000;
export const BEAM_SMALL = 128;
export const BEAM_LARGE = 256;

/**
 * The search beam an index uses unless told otherwise. `npm run bench -- --only search` (synthetic
 * 256-d vectors, M 16, k 10, one thread): at 100 k references a beam of 128 has recall@10 1.00 in
 * 0.7 ms; at 1 M (f16) 128 reaches only 0.92 (1.1 ms), 256 reaches 0.99 in 2.0 ms and 512 1.00 in
 * 3.7 ms, so large libraries search twice as wide.
 */
export function defaultBeam(size: number): number {
  return size >= LARGE_INDEX ? BEAM_LARGE : BEAM_SMALL;
}

/** Below this many references the exact index is used (see the header for the measurement). */
export const ANN_THRESHOLD = 2_000;

export class AnnVectorIndex implements VectorIndex {
  private readonly index: Index;
  private readonly opts: Required<Omit<AnnIndexOptions, 'expansionSearch'>>;
  /** The search beam set by the caller (option or setter); undefined: defaultBeam(size). */
  private beam: number | undefined;
  private labelOf = new Map<string, number>();
  private idOf: string[] = [];
  private keyOf: string[] = [];
  private nextLabel = 0;

  constructor(
    readonly modelId: string,
    readonly dimension: number,
    opts: AnnIndexOptions = {},
  ) {
    if (!modelId) throw new Error('modelId is required');
    if (!Number.isInteger(dimension) || dimension < 1) throw new Error(`bad dimension ${dimension}`);
    const { expansionSearch, ...rest } = stripUndefined(opts);
    this.opts = { ...ANN_DEFAULTS, ...rest };
    if (expansionSearch !== undefined) this.expansionSearch = expansionSearch;
    const q = { f32: ScalarKind.F32, f16: ScalarKind.F16, i8: ScalarKind.I8 }[this.opts.quantization];
    this.index = new Index({
      dimensions: dimension,
      metric: MetricKind.IP,
      quantization: q,
      connectivity: this.opts.connectivity,
      expansion_add: this.opts.expansionAdd,
      // usearch searches with a beam of max(its expansion_search, the count asked for), and its JS
      // binding cannot change expansion_search later; 1 leaves the beam to search()'s count, so
      // the expansionSearch setter takes effect (with 128 fixed here, smaller beams ran at 128).
      expansion_search: 1,
      multi: false,
    });
  }

  get size(): number {
    return this.labelOf.size;
  }

  /** Search beam width (candidates per query): the one set, else defaultBeam(size); may be changed between searches. */
  get expansionSearch(): number {
    return this.beam ?? defaultBeam(this.size);
  }
  set expansionSearch(v: number) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`bad expansion ${v}`);
    this.beam = v;
  }

  /** Threads for batch add / batch search. */
  set threads(v: number) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`bad threads ${v}`);
    this.opts.threads = v;
  }

  has(id: string): boolean {
    return this.labelOf.has(id);
  }

  assertModel(modelId: string): void {
    if (modelId !== this.modelId) {
      throw new Error(`vector from model '${modelId}' cannot be mixed into an index of model '${this.modelId}'`);
    }
  }

  add(id: string, key: string, vec: Float32Array): void {
    this.addMany([id], [key], [vec]);
  }

  addTagged(modelId: string, id: string, key: string, vec: Float32Array): void {
    this.assertModel(modelId);
    this.add(id, key, vec);
  }

  /** Bulk add (one native call, `threads` threads): much faster than add() in a loop. */
  addMany(ids: string[], keys: string[], vecs: Float32Array[]): void {
    if (ids.length !== keys.length || ids.length !== vecs.length) throw new Error('addMany: ids, keys and vectors differ in length');
    if (!ids.length) return;
    const labels = new BigUint64Array(ids.length);
    const rows: Float32Array[] = [];
    const batchIds = new Set<string>();
    ids.forEach((id, i) => {
      if (batchIds.has(id)) throw new Error(`addMany: id '${id}' twice in one batch`);
      batchIds.add(id);
      rows.push(normalised(vecs[i], this.dimension, `vector '${id}'`));
    });
    ids.forEach((id, i) => {
      this.remove(id);
      const label = this.nextLabel++;
      labels[i] = BigInt(label);
      this.labelOf.set(id, label);
      this.idOf[label] = id;
      this.keyOf[label] = keys[i];
    });
    this.index.add(labels, rows, this.opts.threads);
  }

  remove(id: string): boolean {
    const label = this.labelOf.get(id);
    if (label === undefined) return false;
    this.index.remove(BigInt(label));
    this.labelOf.delete(id);
    delete this.idOf[label];
    delete this.keyOf[label];
    return true;
  }

  search(queries: Float32Array[], k: number, beam = this.expansionSearch): SearchHit[][] {
    if (!Number.isInteger(k) || k < 0) throw new Error(`bad k ${k}`);
    if (!Number.isInteger(beam) || beam < 1) throw new Error(`bad beam ${beam}`);
    const qs = queries.map((v, i) => normalised(v, this.dimension, `query ${i}`));
    if (qs.length === 0) return [];
    const kk = Math.min(k, this.size);
    if (kk === 0) return qs.map(() => []);
    const wide = Math.min(this.size, Math.max(kk, beam));
    const out: SearchHit[][] = [];
    const res = this.index.search(qs, wide, this.opts.threads) as BatchMatches | Matches;
    for (let i = 0; i < qs.length; i++) {
      // usearch answers a one-query batch with a plain Matches.
      const m = 'counts' in res ? res.get(i) : res;
      const hits: SearchHit[] = [];
      for (let t = 0; t < m.keys.length && hits.length < kk; t++) {
        const label = Number(m.keys[t]);
        const id = this.idOf[label];
        if (id === undefined) continue;
        hits.push({ id, key: this.keyOf[label], similarity: 1 - m.distances[t] });
      }
      out.push(hits);
    }
    return out;
  }

  /**
   * Writes the graph and vectors to a file. The id/key maps are the caller's to keep: load()
   * needs them in label order (label = position in add order, counting replaced ones).
   */
  save(file: string): void {
    this.index.save(file);
  }

  /** Replaces the contents with a saved index whose labels 0..n-1 are ids[i] / keys[i]. */
  load(file: string, ids: string[], keys: string[]): void {
    this.index.load(file);
    if (this.index.size() !== ids.length || keys.length !== ids.length) {
      throw new Error(`index file ${file} holds ${this.index.size()} vectors, ${ids.length} ids given`);
    }
    this.labelOf = new Map(ids.map((id, i) => [id, i]));
    this.idOf = [...ids];
    this.keyOf = [...keys];
    this.nextLabel = ids.length;
  }
}

/**
 * The vector index for a library of `expectedSize` references: exact below ANN_THRESHOLD (perfect
 * recall, fast enough), HNSW above it.
 */
export function createVectorIndex(modelId: string, dim: number, expectedSize: number, opts: AnnIndexOptions & { threshold?: number } = {}): VectorIndex {
  const threshold = opts.threshold ?? ANN_THRESHOLD;
  return expectedSize < threshold ? new ExactVectorIndex(modelId, dim) : new AnnVectorIndex(modelId, dim, opts);
}

function normalised(v: Float32Array, dim: number, what: string): Float32Array {
  if (!ArrayBuffer.isView(v)) throw new Error(`${what}: not a Float32Array`);
  if (v.length !== dim) throw new Error(`${what} has dimension ${v.length}, index has ${dim}`);
  let ss = 0;
  for (let t = 0; t < v.length; t++) ss += v[t] * v[t];
  if (!(ss > 0) || !Number.isFinite(ss)) throw new Error('cannot index a zero or non-finite vector');
  const inv = 1 / Math.sqrt(ss);
  const out = new Float32Array(dim);
  for (let t = 0; t < dim; t++) out[t] = v[t] * inv;
  return out;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

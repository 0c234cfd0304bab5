/**
 * Exact (brute-force) cosine-similarity index over embedding vectors of one model.
 *
 * Vectors are L2-normalised on the way in (stored as float32 rows of one contiguous buffer), so the
 * cosine similarity is a dot product; a search batch is one matrix product Q * R^T over that
 * buffer (blocked over references for cache locality), followed by a top-k selection per query.
 * Ties are broken by id (ascending) so results are deterministic.
 */

export interface SearchHit {
  id: string;
  /** The label the vector was registered under (e.g. a character id). */
  key: string;
  /** Cosine similarity in [-1, 1]. */
  similarity: number;
}

const REF_BLOCK = 256; // references per block of the matrix product (block = 256*dim*4 bytes)

export class ExactVectorIndex {
  private refs: Float32Array;
  private ids: string[] = [];
  private keys: string[] = [];
  private rowOf = new Map<string, number>();

  constructor(
    readonly modelId: string,
    readonly dimension: number,
  ) {
    if (!modelId) throw new Error('modelId is required');
    if (!Number.isInteger(dimension) || dimension < 1) throw new Error(`bad dimension ${dimension}`);
    this.refs = new Float32Array(16 * dimension);
  }

  get size(): number {
    return this.ids.length;
  }

  has(id: string): boolean {
    return this.rowOf.has(id);
  }

  /** Throws unless vectors of `modelId` belong in this index. */
  assertModel(modelId: string): void {
    if (modelId !== this.modelId) {
      throw new Error(`vector from model '${modelId}' cannot be mixed into an index of model '${this.modelId}'`);
    }
  }

  /** Add (or replace) the vector `id`, labelled `key`. The vector is copied and L2-normalised. */
  add(id: string, key: string, vec: Float32Array): void {
    this.checkVector(vec, `vector '${id}'`);
    let row = this.rowOf.get(id);
    if (row === undefined) {
      row = this.ids.length;
      if ((row + 1) * this.dimension > this.refs.length) {
        const grown = new Float32Array(this.refs.length * 2);
        grown.set(this.refs);
        this.refs = grown;
      }
      this.ids.push(id);
      this.keys.push(key);
      this.rowOf.set(id, row);
    } else {
      this.keys[row] = key;
    }
    normaliseInto(vec, this.refs, row * this.dimension);
  }

  /** add(), refusing vectors produced by a different model. */
  addTagged(modelId: string, id: string, key: string, vec: Float32Array): void {
    this.assertModel(modelId);
    this.add(id, key, vec);
  }

  /** Remove `id`; returns false if it was not there. The last row moves into the hole. */
  remove(id: string): boolean {
    const row = this.rowOf.get(id);
    if (row === undefined) return false;
    const last = this.ids.length - 1;
    const d = this.dimension;
    if (row !== last) {
      this.refs.copyWithin(row * d, last * d, (last + 1) * d);
      this.ids[row] = this.ids[last];
      this.keys[row] = this.keys[last];
      this.rowOf.set(this.ids[row], row);
    }
    this.ids.pop();
    this.keys.pop();
    this.rowOf.delete(id);
    return true;
  }

  /** The k most similar references for each query (best first); fewer when the index is smaller. */
  search(queries: Float32Array[], k: number, _beam?: number): SearchHit[][] {
    const m = queries.length;
    const n = this.ids.length;
    const d = this.dimension;
    if (!Number.isInteger(k) || k < 0) throw new Error(`bad k ${k}`);
    const q = new Float32Array(m * d);
    queries.forEach((v, i) => {
      this.checkVector(v, `query ${i}`);
      normaliseInto(v, q, i * d);
    });
    const kk = Math.min(k, n);
    if (m === 0) return [];
    if (kk === 0) return queries.map(() => []);

    // scores[i*n + j] = <q_i, r_j>: one blocked matrix product over the contiguous buffers.
    const scores = new Float32Array(m * n);
    const r = this.refs;
    for (let j0 = 0; j0 < n; j0 += REF_BLOCK) {
      const j1 = Math.min(n, j0 + REF_BLOCK);
      for (let i = 0; i < m; i++) {
        const qo = i * d;
        const so = i * n;
        for (let j = j0; j < j1; j++) {
          const ro = j * d;
          let s = 0;
          for (let t = 0; t < d; t++) s += q[qo + t] * r[ro + t];
          scores[so + j] = s;
        }
      }
    }

    const out: SearchHit[][] = [];
    const better = (a: number, b: number, so: number): boolean =>
      scores[so + a] > scores[so + b] || (scores[so + a] === scores[so + b] && this.ids[a] < this.ids[b]);
    const top = new Int32Array(kk);
    const all = kk > 32 ? new Int32Array(n) : null;
    for (let i = 0; i < m; i++) {
      const so = i * n;
      if (all) {
        // Large k (e.g. "rank everything"): one O(n log n) sort instead of O(n k) insertion.
        for (let j = 0; j < n; j++) all[j] = j;
        all.sort((a, b) => scores[so + b] - scores[so + a] || (this.ids[a] < this.ids[b] ? -1 : 1));
        top.set(all.subarray(0, kk));
      } else {
        // Small k: keep a sorted (best first) list of the kk best rows.
        let len = 0;
        for (let j = 0; j < n; j++) {
          if (len === kk && !better(j, top[kk - 1], so)) continue;
          let p = len === kk ? kk - 1 : len++;
          while (p > 0 && better(j, top[p - 1], so)) {
            top[p] = top[p - 1];
            p--;
          }
          top[p] = j;
        }
      }
      const hits: SearchHit[] = [];
      for (let t = 0; t < kk; t++) hits.push({ id: this.ids[top[t]], key: this.keys[top[t]], similarity: scores[so + top[t]] });
      out.push(hits);
    }
    return out;
  }

  private checkVector(vec: Float32Array, what: string): void {
    if (!(vec instanceof Float32Array) && !ArrayBuffer.isView(vec)) throw new Error(`${what}: not a Float32Array`);
    if (vec.length !== this.dimension) {
      throw new Error(`${what} has dimension ${vec.length}, index of model '${this.modelId}' has ${this.dimension}`);
    }
  }
}

/** Copy `v` / |v| into dst at offset (norm in float64); rejects zero and non-finite vectors. */
/** Writes `v` / |v| into `dst` at `offset`; throws on a zero or non-finite vector. */
export function normaliseInto(v: Float32Array, dst: Float32Array, offset: number): void {
  let ss = 0;
  for (let t = 0; t < v.length; t++) ss += v[t] * v[t];
  if (!(ss > 0) || !Number.isFinite(ss)) throw new Error('cannot index a zero or non-finite vector');
  const inv = 1 / Math.sqrt(ss);
  for (let t = 0; t < v.length; t++) dst[offset + t] = v[t] * inv;
}

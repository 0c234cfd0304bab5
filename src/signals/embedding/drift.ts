/**
 * How far a quantised model's embeddings are from its float model's, on the same inputs: the cosine
 * between the two vectors of each input, and whether nearest-neighbour retrieval among reference
 * vectors picks the same reference. Pure functions over unit vectors (the embedders L2-normalise).
 */

/** Dot product (= cosine for unit vectors). */
export function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

export interface DriftStats {
  count: number;
  median: number;
  /** 5th percentile (nearest rank). */
  p5: number;
  min: number;
}

/** Cosine between a[i] and b[i] for every i: its median, 5th percentile and minimum. */
export function cosineDrift(a: Float32Array[], b: Float32Array[]): DriftStats {
  if (a.length !== b.length || a.length === 0) throw new Error(`cosineDrift needs two equal, non-empty lists (${a.length} vs ${b.length})`);
  const c = a.map((v, i) => dot(v, b[i])).sort((x, y) => x - y);
  const rank = (p: number) => c[Math.min(c.length - 1, Math.max(0, Math.ceil((p / 100) * c.length) - 1))];
  return { count: c.length, median: rank(50), p5: rank(5), min: c[0] };
}

/** Index of the reference most similar to each query. */
export function nearest(queries: Float32Array[], refs: Float32Array[]): number[] {
  return queries.map((q) => {
    let best = -1;
    let bestSim = -Infinity;
    refs.forEach((r, j) => {
      const s = dot(q, r);
      if (s > bestSim) (bestSim = s), (best = j);
    });
    return best;
  });
}

export interface NeighbourAgreement {
  queries: number;
  /** Share of queries whose nearest reference is the same under both models (0..1). */
  agreement: number;
  /** Share of queries whose nearest reference is the right one, per model (when labels are given). */
  top1A?: number;
  top1B?: number;
  /** Agreement among the queries model A gets right (when labels are given). */
  agreementWhereARight?: number;
}

/**
 * Nearest-reference agreement of two models: model A's queries against A's references, B's against
 * B's. `labels[i]`: the index of query i's own reference, for top-1 accuracy (optional).
 */
export function neighbourAgreement(qa: Float32Array[], ra: Float32Array[], qb: Float32Array[], rb: Float32Array[], labels?: number[]): NeighbourAgreement {
  const na = nearest(qa, ra);
  const nb = nearest(qb, rb);
  const share = (f: (i: number) => boolean) => na.filter((_, i) => f(i)).length / na.length;
  const r: NeighbourAgreement = { queries: na.length, agreement: share((i) => na[i] === nb[i]) };
  if (labels) {
    r.top1A = share((i) => na[i] === labels[i]);
    r.top1B = share((i) => nb[i] === labels[i]);
    const right = na.map((_, i) => i).filter((i) => na[i] === labels[i]);
    r.agreementWhereARight = right.length ? right.filter((i) => nb[i] === na[i]).length / right.length : NaN;
  }
  return r;
}

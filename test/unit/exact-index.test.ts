import { ExactVectorIndex, SearchHit } from '../../src/signals/embedding/exact-index';

/** Deterministic pseudo-random vectors (LCG), values in [-1, 1). */
function vectors(count: number, dim: number, seed: number): Float32Array[] {
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
  return Array.from({ length: count }, () => Float32Array.from({ length: dim }, next));
}

/** Naive reference: cosine in float64 on the raw vectors, full sort (similarity desc, id asc). */
function naiveSearch(refs: Array<{ id: string; key: string; vec: Float32Array }>, queries: Float32Array[], k: number): SearchHit[][] {
  const norm = (v: Float32Array) => Math.sqrt(v.reduce((a, x) => a + x * x, 0));
  return queries.map((q) =>
    refs
      .map((r) => ({ id: r.id, key: r.key, similarity: q.reduce((a, x, i) => a + x * r.vec[i], 0) / (norm(q) * norm(r.vec)) }))
      .sort((a, b) => b.similarity - a.similarity || (a.id < b.id ? -1 : 1))
      .slice(0, k),
  );
}

function expectSameHits(actual: SearchHit[][], expected: SearchHit[][]): void {
  expect(actual).toHaveLength(expected.length);
  actual.forEach((hits, i) => {
    expect(hits.map((h) => [h.id, h.key])).toEqual(expected[i].map((h) => [h.id, h.key]));
    hits.forEach((h, j) => expect(h.similarity).toBeCloseTo(expected[i][j].similarity, 5));
  });
}

describe('ExactVectorIndex', () => {
  test.each([
    // [references, queries, dimension, k]
    [1, 1, 4, 1],
    [5, 3, 8, 3],
    [10, 4, 16, 10],
    [7, 2, 3, 20], // k larger than the index
    [300, 5, 64, 5], // more references than one block of the matrix product
    [600, 17, 864, 8], // model-sized vectors, several blocks
    [400, 3, 32, 400], // k = size (rank everything): the sorting path
    [100, 2, 16, 40], // k just above the insertion-list limit
  ])('%i refs, %i queries, dim %i, k=%i matches the naive computation', (n, m, dim, k) => {
    const refVecs = vectors(n, dim, n * 31 + dim);
    const refs = refVecs.map((vec, i) => ({ id: `r${String(i).padStart(4, '0')}`, key: `char${i % 7}`, vec }));
    const queries = vectors(m, dim, 999 + m);
    const index = new ExactVectorIndex('model-a', dim);
    for (const r of refs) index.add(r.id, r.key, r.vec);
    expect(index.size).toBe(n);
    expectSameHits(index.search(queries, k), naiveSearch(refs, queries, k));
  });

  test('a stored vector is its own nearest neighbour with similarity 1; scale does not matter', () => {
    const [a, b] = vectors(2, 32, 7);
    const index = new ExactVectorIndex('m', 32);
    index.add('a', 'x', a);
    index.add('b', 'y', b);
    const [hits] = index.search([a.map((v) => v * 5)], 1);
    expect(hits[0].id).toBe('a');
    expect(hits[0].similarity).toBeCloseTo(1, 6);
  });

  test('ties are broken by id, independent of insertion order', () => {
    const v = Float32Array.from([1, 0, 0]);
    const index = new ExactVectorIndex('m', 3);
    for (const id of ['c', 'a', 'b']) index.add(id, 'k', v);
    index.add('z', 'k', Float32Array.from([0, 1, 0]));
    expect(index.search([v], 4)[0].map((h) => h.id)).toEqual(['a', 'b', 'c', 'z']);
    // Same through the large-k path (sort): 40 identical vectors.
    const big = new ExactVectorIndex('m', 3);
    const ids = Array.from({ length: 40 }, (_, i) => `t${String(39 - i).padStart(2, '0')}`);
    for (const id of ids) big.add(id, 'k', v);
    expect(big.search([v], 40)[0].map((h) => h.id)).toEqual([...ids].sort());
  });

  test('remove and re-add keep results equal to the naive computation', () => {
    const dim = 24;
    const vecs = vectors(40, dim, 3);
    const live = new Map(vecs.map((vec, i) => [`id${i}`, { id: `id${i}`, key: `k${i % 3}`, vec }]));
    const index = new ExactVectorIndex('m', dim);
    for (const r of live.values()) index.add(r.id, r.key, r.vec);
    for (const id of ['id0', 'id39', 'id17', 'id5', 'nope']) {
      expect(index.remove(id)).toBe(live.delete(id));
    }
    const replaced = vectors(1, dim, 77)[0];
    index.add('id8', 'k-new', replaced); // replacing keeps the size
    live.set('id8', { id: 'id8', key: 'k-new', vec: replaced });
    expect(index.size).toBe(live.size);
    expect(index.has('id17')).toBe(false);
    const queries = vectors(6, dim, 11);
    expectSameHits(index.search(queries, 7), naiveSearch([...live.values()], queries, 7));
  });

  test('edge cases: empty index, no queries, k = 0', () => {
    const index = new ExactVectorIndex('m', 4);
    const q = Float32Array.from([1, 2, 3, 4]);
    expect(index.search([q], 5)).toEqual([[]]);
    index.add('a', 'k', q);
    expect(index.search([], 5)).toEqual([]);
    expect(index.search([q], 0)).toEqual([[]]);
  });

  test('refuses wrong dimensions, zero vectors and other models', () => {
    const index = new ExactVectorIndex('model-a', 4);
    expect(() => index.add('a', 'k', new Float32Array(5))).toThrow(/dimension 5/);
    expect(() => index.add('a', 'k', new Float32Array(4))).toThrow(/zero/);
    expect(() => index.addTagged('model-b', 'a', 'k', Float32Array.from([1, 0, 0, 0]))).toThrow(/model-b/);
    index.addTagged('model-a', 'a', 'k', Float32Array.from([1, 0, 0, 0]));
    expect(index.size).toBe(1);
    expect(() => index.search([new Float32Array(3)], 1)).toThrow(/dimension 3/);
  });
});

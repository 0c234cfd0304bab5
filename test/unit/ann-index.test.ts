import { AnnVectorIndex, ANN_THRESHOLD, BEAM_LARGE, BEAM_SMALL, createVectorIndex, defaultBeam, LARGE_INDEX } from '../../src/signals/embedding/ann-index';
import { ExactVectorIndex } from '../../src/signals/embedding/exact-index';

/** Deterministic clustered vectors (LCG): `clusters` centres, each vector a noisy copy of one. */
function vectors(count: number, dim: number, seed: number, clusters = 50): Float32Array[] {
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
  const centres = Array.from({ length: clusters }, () => Float32Array.from({ length: dim }, next));
  return Array.from({ length: count }, (_, i) => {
    const c = centres[i % clusters];
    return Float32Array.from({ length: dim }, (_, t) => c[t] + 0.6 * next());
  });
}

describe('AnnVectorIndex', () => {
  test('recall@10 against the exact index is >= 0.95 on random clustered data', () => {
    const dim = 64;
    const refs = vectors(5000, dim, 1);
    const exact = new ExactVectorIndex('m', dim);
    const ann = new AnnVectorIndex('m', dim);
    refs.forEach((v, i) => exact.add(`r${i}`, `c${i % 50}`, v));
    ann.addMany(refs.map((_, i) => `r${i}`), refs.map((_, i) => `c${i % 50}`), refs);
    expect(ann.size).toBe(5000);
    const queries = vectors(100, dim, 2);
    const truth = exact.search(queries, 10);
    const got = ann.search(queries, 10);
    let hit = 0;
    got.forEach((hits, i) => {
      expect(hits).toHaveLength(10);
      const want = new Set(truth[i].map((h) => h.id));
      for (const h of hits) if (want.has(h.id)) hit++;
    });
    const recall = hit / (queries.length * 10);
    expect(recall).toBeGreaterThanOrEqual(0.95);
    // Similarities agree with the exact cosine of the same reference.
    const ex = new Map(exact.search([queries[0]], 5000)[0].map((h) => [h.id, h.similarity]));
    for (const h of got[0]) expect(h.similarity).toBeCloseTo(ex.get(h.id)!, 4);
  });

  test('expansionSearch sets the beam: a beam of 1 finds fewer true nearest neighbours than 128', () => {
    const dim = 64;
    const refs = vectors(5000, dim, 3, 500);
    const exact = new ExactVectorIndex('m', dim);
    const ann = new AnnVectorIndex('m', dim);
    refs.forEach((v, i) => exact.add(`r${i}`, `c${i}`, v));
    ann.addMany(refs.map((_, i) => `r${i}`), refs.map((_, i) => `c${i}`), refs);
    const queries = vectors(200, dim, 4, 500);
    const truth = exact.search(queries, 1).map((h) => h[0].id);
    const top1 = (ef: number) => {
      ann.expansionSearch = ef;
      return ann.search(queries, 1).filter((h, i) => h[0]?.id === truth[i]).length / queries.length;
    };
    const narrow = top1(1);
    const wide = top1(128);
    expect(wide).toBeGreaterThanOrEqual(0.95);
    expect(narrow).toBeLessThan(wide - 0.05);
    // A search's own beam overrides the index's (the scanner's windows pass ScanOptions.windowBeam).
    ann.expansionSearch = 1;
    const perCall = ann.search(queries, 1, 128).filter((h, i) => h[0]?.id === truth[i]).length / queries.length;
    expect(perCall).toBeCloseTo(wide, 2);
    expect(() => ann.search(queries, 1, 0)).toThrow(/bad beam/);
  });

  test('the default beam widens for large libraries; a beam set by option or setter stays', () => {
    expect(defaultBeam(LARGE_INDEX - 1)).toBe(BEAM_SMALL);
    expect(defaultBeam(LARGE_INDEX)).toBe(BEAM_LARGE);
    expect(BEAM_LARGE).toBeGreaterThan(BEAM_SMALL);
    const ann = new AnnVectorIndex('m', 3);
    ann.add('a', 'ka', new Float32Array([1, 0, 0]));
    expect(ann.expansionSearch).toBe(BEAM_SMALL);
    expect(new AnnVectorIndex('m', 3, { expansionSearch: 40 }).expansionSearch).toBe(40);
    ann.expansionSearch = 300;
    expect(ann.expansionSearch).toBe(300);
    expect(() => new AnnVectorIndex('m', 3, { expansionSearch: 0 })).toThrow(/bad expansion/);
  });

  test('add / replace / remove / keys / model checks', () => {
    const ann = new AnnVectorIndex('m', 3);
    ann.add('a', 'ka', new Float32Array([1, 0, 0]));
    ann.add('b', 'kb', new Float32Array([0, 1, 0]));
    expect(ann.search([new Float32Array([2, 0.1, 0])], 1)[0]).toEqual([{ id: 'a', key: 'ka', similarity: expect.any(Number) }]);
    ann.add('a', 'ka2', new Float32Array([0, 0, 1])); // replace
    expect(ann.size).toBe(2);
    const top = ann.search([new Float32Array([0, 0, 1])], 2)[0];
    expect(top[0]).toMatchObject({ id: 'a', key: 'ka2' });
    expect(top[0].similarity).toBeCloseTo(1, 5);
    expect(ann.remove('a')).toBe(true);
    expect(ann.remove('a')).toBe(false);
    expect(ann.search([new Float32Array([0, 0, 1])], 5)[0].map((h) => h.id)).toEqual(['b']);
    expect(() => ann.addTagged('other', 'c', 'k', new Float32Array([1, 1, 1]))).toThrow(/cannot be mixed/);
    expect(() => ann.add('z', 'k', new Float32Array([0, 0, 0]))).toThrow(/zero/);
    expect(() => ann.add('z', 'k', new Float32Array([1, 0]))).toThrow(/dimension/);
    expect(ann.search([], 3)).toEqual([]);
  });

  test('createVectorIndex picks exact below the threshold, ANN above', () => {
    expect(createVectorIndex('m', 8, 10)).toBeInstanceOf(ExactVectorIndex);
    expect(createVectorIndex('m', 8, ANN_THRESHOLD)).toBeInstanceOf(AnnVectorIndex);
    expect(createVectorIndex('m', 8, 10, { threshold: 5 })).toBeInstanceOf(AnnVectorIndex);
  });
});

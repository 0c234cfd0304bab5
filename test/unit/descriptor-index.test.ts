import { DescriptorIndex, packDescriptorWords } from '../../src/signals/keypoints/descriptor-index';

/** ORB-like test data: `groups` random base descriptors with skewed bits, refs = noisy copies. */
function makeData(n: number, seed: number) {
  let s = seed >>> 0;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const bias = Float64Array.from({ length: 256 }, () => 0.2 + 0.6 * rnd()); // per-bit p(1), like ORB
  const randomDesc = () => {
    const d = new Uint8Array(32);
    for (let b = 0; b < 256; b++) if (rnd() < bias[b]) d[b >> 3] |= 1 << (b & 7);
    return d;
  };
  const flip = (src: Uint8Array, bits: number) => {
    const d = Uint8Array.from(src);
    for (let i = 0; i < bits; i++) {
      const b = Math.floor(rnd() * 256);
      d[b >> 3] ^= 1 << (b & 7);
    }
    return d;
  };
  const refs = new Uint8Array(n * 32);
  for (let j = 0; j < n; j++) refs.set(randomDesc(), j * 32);
  const labels = Int32Array.from({ length: n }, (_, j) => j % 37);
  return { refs, labels, flip, rnd };
}

describe('DescriptorIndex', () => {
  const n = 20000;
  const { refs, labels, flip, rnd } = makeData(n, 7);
  const W = packDescriptorWords(refs, n);
  const index = new DescriptorIndex(W, labels);
  // Queries: noisy copies of references at 2..40 bits, plus unrelated random ones.
  const nq = 400;
  const qBytes = new Uint8Array(nq * 32);
  const source = new Int32Array(nq);
  const noise = new Int32Array(nq);
  for (let i = 0; i < nq; i++) {
    const j = Math.floor(rnd() * n);
    source[i] = j;
    noise[i] = 2 + (i % 39);
    qBytes.set(flip(refs.subarray(j * 32, j * 32 + 32), noise[i]), i * 32);
  }
  const Q = packDescriptorWords(qBytes, nq);

  test('exact mode equals a naive brute force (nearest, nearest of another label)', () => {
    const pop = (x: number) => {
      let c = 0;
      for (; x; x &= x - 1) c++;
      return c;
    };
    const r = index.nearestOtherLabel(Q, 50, { bound: 81, exact: true });
    for (let i = 0; i < 50; i++) {
      let d1 = 81, c1 = -1;
      const dist: number[] = [];
      for (let j = 0; j < n; j++) {
        let d = 0;
        for (let w = 0; w < 8; w++) d += pop((W[j * 8 + w] ^ Q[i * 8 + w]) >>> 0);
        dist.push(d);
        if (d < d1) (d1 = d), (c1 = labels[j]);
      }
      let dB = 81;
      for (let j = 0; j < n; j++) if (labels[j] !== c1 && dist[j] < dB) dB = dist[j];
      expect(r.d1[i]).toBe(d1);
      expect(r.dB[i]).toBe(dB);
      if (r.i1[i] >= 0) expect(dist[r.i1[i]]).toBe(d1);
    }
  });

  test('MIH finds every neighbour closer than 16 bits and most up to 40, for a fraction of the work', () => {
    const exact = index.nearestOtherLabel(Q, nq, { bound: 81, exact: true });
    const fast = index.nearestOtherLabel(Q, nq, { bound: 81 });
    let close = 0, closeFound = 0, mid = 0, midFound = 0;
    for (let i = 0; i < nq; i++) {
      const same = fast.d1[i] === exact.d1[i];
      // Never better than the truth (all candidates are verified on 256 bits).
      expect(fast.d1[i]).toBeGreaterThanOrEqual(exact.d1[i]);
      expect(fast.dB[i]).toBeGreaterThanOrEqual(exact.dB[i]);
      if (exact.d1[i] < 16) (close++, closeFound += same ? 1 : 0);
      else if (exact.d1[i] <= 40) (mid++, midFound += same ? 1 : 0);
    }
    expect(closeFound).toBe(close);
    expect(close).toBeGreaterThan(50);
    expect(midFound / mid).toBeGreaterThan(0.8);
    expect(fast.candidates).toBeLessThan(exact.candidates / 10);
  });

  test('radius-1 probing finds everything closer than 32 bits', () => {
    const r1 = new DescriptorIndex(W, labels, { probeRadius: 1 });
    const exact = index.knn(Q, nq, 4, { bound: 81, exact: true });
    const fast = r1.knn(Q, nq, 4, { bound: 81 });
    for (let i = 0; i < nq; i++) {
      if (exact.dists[i * 4] < 32) {
        expect(fast.dists[i * 4]).toBe(exact.dists[i * 4]);
        expect(fast.ids[i * 4]).toBe(exact.ids[i * 4]);
      }
    }
  });

  test('knn exact mode returns sorted distances and ids below the bound', () => {
    const r = index.knn(Q, 20, 4, { bound: 60, exact: true });
    for (let i = 0; i < 20; i++) {
      for (let t = 1; t < 4; t++) expect(r.dists[i * 4 + t]).toBeGreaterThanOrEqual(r.dists[i * 4 + t - 1]);
      for (let t = 0; t < 4; t++) if (r.ids[i * 4 + t] < 0) expect(r.dists[i * 4 + t]).toBe(61);
    }
    expect(r.ids[0]).toBe(source[0]);
  });

  test('rejects bad input', () => {
    expect(() => new DescriptorIndex(W, new Int32Array(3))).toThrow(/labels/);
    expect(() => new DescriptorIndex(W, labels, { substrings: 17 })).toThrow(/substrings/);
    expect(() => packDescriptorWords(new Uint8Array(31), 1)).toThrow();
  });
});

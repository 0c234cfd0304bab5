import { DescriptorIndex, kernelModuleBytes, packDescriptorWords } from '../../src/signals/keypoints/descriptor-index';
import { KeypointIndex, extractFrameFeatures, extractReferenceFeatures, getCv } from '../../src/signals/keypoints';
import { composite, decodeToRaw, renderBackground, renderCharacter } from '../helpers/synthetic-art';

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

  test('hashed search finds nearly every close neighbour, never a wrong one, for a fraction of the work', () => {
    const exact = index.nearestOtherLabel(Q, nq, { bound: 81, exact: true });
    const fast = index.nearestOtherLabel(Q, nq, { bound: 81 });
    let close = 0, closeFound = 0, mid = 0, midFound = 0;
    for (let i = 0; i < nq; i++) {
      const same = fast.d1[i] === exact.d1[i];
      // Never better than the truth (all candidates are verified on 256 bits).
      expect(fast.d1[i]).toBeGreaterThanOrEqual(exact.d1[i]);
      expect(fast.dB[i]).toBeGreaterThanOrEqual(exact.dB[i]);
      if (same) expect(fast.i1[i]).toBe(exact.i1[i]); // ties -> lowest id, like brute force
      if (exact.d1[i] < 16) (close++, closeFound += same ? 1 : 0);
      else if (exact.d1[i] <= 40) (mid++, midFound += same ? 1 : 0);
    }
    expect(close).toBeGreaterThan(50);
    expect(closeFound / close).toBeGreaterThan(0.98);
    expect(midFound / mid).toBeGreaterThan(0.8);
    expect(fast.candidates).toBeLessThan(exact.candidates / 10);
  });

  test('a small index (keyed tables) answers exactly as with full 2^keyBits tables, in a fraction of the memory', () => {
    const full = new DescriptorIndex(W, labels, { sparseTables: false });
    for (const bound of [41, 81]) {
      const a = index.nearestOtherLabel(Q, nq, { bound });
      const b = full.nearestOtherLabel(Q, nq, { bound });
      expect(a.candidates).toBe(b.candidates);
      expect(Array.from(a.i1)).toEqual(Array.from(b.i1));
      expect(Array.from(a.d1)).toEqual(Array.from(b.d1));
      expect(Array.from(a.dB)).toEqual(Array.from(b.dB));
      const ka = index.knn(Q, nq, 4, { bound });
      const kb = full.knn(Q, nq, 4, { bound });
      expect(Array.from(ka.ids)).toEqual(Array.from(kb.ids));
      expect(Array.from(ka.dists)).toEqual(Array.from(kb.dists));
    }
    expect(index.largestBucket).toBe(full.largestBucket);
    // 24 tables of 2^20 + 1 offsets (~96 MiB) against tables sized by the 20,000 descriptors.
    expect(full.memoryBytes).toBeGreaterThan(90 * 2 ** 20);
    expect(index.memoryBytes).toBeLessThan(full.memoryBytes / 5);
  });

  test('the WebAssembly kernel and the JS path give identical answers', () => {
    const wasm = (globalThis as unknown as { WebAssembly: { Module: new (b: Uint8Array) => object } }).WebAssembly;
    expect(() => new wasm.Module(kernelModuleBytes())).not.toThrow();
    expect(index.usesWasm).toBe(true);
    const js = new DescriptorIndex(W, labels, { wasm: false });
    expect(js.usesWasm).toBe(false);
    const a = index.knn(Q, nq, 4, { bound: 81 });
    const b = js.knn(Q, nq, 4, { bound: 81 });
    expect(Array.from(a.ids)).toEqual(Array.from(b.ids));
    expect(Array.from(a.dists)).toEqual(Array.from(b.dists));
  });

  test('exact search in the WebAssembly scan kernel equals the JS path; an exact-only index answers the same', () => {
    const js = new DescriptorIndex(W, labels, { wasm: false });
    const only = new DescriptorIndex(W, labels, { exactOnly: true });
    expect(only.usesWasm).toBe(true);
    for (const x of [index, only]) {
      const a = x.nearestOtherLabel(Q, 120, { bound: 81, exact: true });
      const b = js.nearestOtherLabel(Q, 120, { bound: 81, exact: true });
      expect(Array.from(a.i1)).toEqual(Array.from(b.i1));
      expect(Array.from(a.d1)).toEqual(Array.from(b.d1));
      expect(Array.from(a.dB)).toEqual(Array.from(b.dB));
      const k = x.knn(Q, 120, 4, { bound: 81, exact: true });
      const l = js.knn(Q, 120, 4, { bound: 81, exact: true });
      expect(Array.from(k.ids)).toEqual(Array.from(l.ids));
      expect(Array.from(k.dists)).toEqual(Array.from(l.dists));
    }
    // It keeps no tables: an approximate query finds nothing; appends and removals still count.
    expect(only.knn(Q, 10, 1, { bound: 81 }).candidates).toBe(0);
    const grown = new DescriptorIndex(W.subarray(0, 1000 * 8), labels.subarray(0, 1000), { exactOnly: true });
    grown.append(W.subarray(1000 * 8, 6000 * 8), labels.subarray(1000, 6000), 5000);
    grown.remove(0, 10);
    const small = new DescriptorIndex(W.subarray(0, 6000 * 8), Int32Array.from(labels.subarray(0, 6000), (v, j) => (j < 10 ? -1 : v)), { wasm: false });
    const a = grown.nearestOtherLabel(Q, nq, { bound: 81, exact: true });
    const b = small.nearestOtherLabel(Q, nq, { bound: 81, exact: true });
    expect(Array.from(a.i1)).toEqual(Array.from(b.i1));
    expect(Array.from(a.dB)).toEqual(Array.from(b.dB));
  });

  test('append and remove keep answers equal to a fresh build', () => {
    const half = n / 2;
    const grown = new DescriptorIndex(W.subarray(0, half * 8), labels.subarray(0, half));
    // Small appends go to the side tables, a large one triggers a rebuild: check both.
    grown.append(W.subarray(half * 8, (half + 100) * 8), labels.subarray(half, half + 100), 100);
    grown.append(W.subarray((half + 100) * 8), labels.subarray(half + 100), n - half - 100);
    const small = new DescriptorIndex(W.subarray(0, half * 8), labels.subarray(0, half));
    small.append(W.subarray(half * 8, (half + 2000) * 8), labels.subarray(half, half + 2000), 2000);
    const fresh = new DescriptorIndex(W.subarray(0, (half + 2000) * 8), labels.subarray(0, half + 2000));
    for (const [x, y] of [[grown, index], [small, fresh]] as const) {
      const a = x.nearestOtherLabel(Q, nq, { bound: 81 });
      const b = y.nearestOtherLabel(Q, nq, { bound: 81 });
      expect(Array.from(a.i1)).toEqual(Array.from(b.i1));
      expect(Array.from(a.dB)).toEqual(Array.from(b.dB));
    }
    // Removing the true nearest neighbours: they are never returned again.
    const before = small.knn(Q, nq, 1, { bound: 81 });
    for (let i = 0; i < nq; i++) if (before.ids[i] >= 0) small.remove(before.ids[i], before.ids[i] + 1);
    const after = small.knn(Q, nq, 1, { bound: 81, exact: true });
    for (let i = 0; i < nq; i++) {
      if (before.ids[i] >= 0) expect(after.ids[i]).not.toBe(before.ids[i]);
    }
    expect(small.liveCount).toBeLessThan(small.size);
  });

  test('knn exact mode returns sorted distances and ids below the bound', () => {
    const r = index.knn(Q, 20, 4, { bound: 60, exact: true });
    for (let i = 0; i < 20; i++) {
      for (let t = 1; t < 4; t++) expect(r.dists[i * 4 + t]).toBeGreaterThanOrEqual(r.dists[i * 4 + t - 1]);
      for (let t = 0; t < 4; t++) if (r.ids[i * 4 + t] < 0) expect(r.dists[i * 4 + t]).toBe(61);
    }
    expect(r.ids[0]).toBe(source[0]);
  });

  test('a dense cluster of near-identical descriptors is skipped, a distinct neighbour is still found', () => {
    // 20,000 random descriptors plus 1,000 copies (1-bit noise) of one "flat fill" descriptor: its
    // buckets hold ~1,000 entries, far above 32x the mean of ~0.02 (and below the old fixed cap of 1,500).
    const flat = refs.subarray(0, 32);
    const k = 1000;
    const all = new Uint8Array((n + k) * 32);
    all.set(refs);
    for (let j = 0; j < k; j++) all.set(flip(flat, 1), (n + j) * 32);
    const lab = Int32Array.from({ length: n + k }, (_, j) => (j < n ? labels[j] : 99));
    const words = packDescriptorWords(all, n + k);
    const capped = new DescriptorIndex(words, lab);
    const uncapped = new DescriptorIndex(words, lab, { maxBucket: Infinity });
    const nearFlat = packDescriptorWords(flip(flat, 3), 1);
    expect(uncapped.nearestOtherLabel(nearFlat, 1, { bound: 81 }).candidates).toBeGreaterThan(k);
    expect(capped.nearestOtherLabel(nearFlat, 1, { bound: 81 }).candidates).toBeLessThan(k / 10);
    // A query near an ordinary descriptor finds it as before.
    const j = 1234;
    const q = packDescriptorWords(flip(refs.subarray(j * 32, j * 32 + 32), 10), 1);
    expect(capped.nearestOtherLabel(q, 1, { bound: 81 }).i1[0]).toBe(uncapped.nearestOtherLabel(q, 1, { bound: 81 }).i1[0]);
    expect(capped.nearestOtherLabel(q, 1, { bound: 81 }).i1[0]).toBe(j);
  });

  test('rejects bad input', () => {
    expect(() => new DescriptorIndex(W, new Int32Array(3))).toThrow(/labels/);
    expect(() => new DescriptorIndex(W, labels, { tables: 65 })).toThrow(/tables/);
    expect(() => new DescriptorIndex(W, labels, { keyBits: 23 })).toThrow(/keyBits/);
    expect(() => packDescriptorWords(new Uint8Array(31), 1)).toThrow();
  });
});

describe('KeypointIndex: hashed matcher vs brute force on real ORB descriptors', () => {
  test('same ratio-test survivors and hits on a frame (50 references of 10 styles)', async () => {
    await getCv();
    const kp = new KeypointIndex();
    const art: Buffer[] = [];
    for (let i = 0; i < 50; i++) {
      art.push(await renderCharacter(500 + i, 300, { styleSeed: i % 10 }));
      const f = await extractReferenceFeatures(await decodeToRaw(art[i], 4));
      kp.add({ referenceId: `r${i}`, characterId: `c${i}`, features: f });
    }
    const bg = await renderBackground(77, 960, 540);
    const scene = await composite(bg, [
      { image: art[3], cx: 300, cy: 280, scale: 0.8 },
      { image: art[27], cx: 680, cy: 300, scale: 0.75, mirror: true },
    ], { jpegQuality: 80 });
    const frame = await extractFrameFeatures(scene.raw);
    const ki = kp as unknown as { match(f: unknown, o: unknown): { f: Int32Array; r: Int32Array; n: number } };
    const o = { ...(await import('../../src/signals/keypoints')).QUERY_DEFAULTS };
    kp.matcher = 'brute';
    expect(kp.activeMatcher).toBe('brute'); // (also packs the library)
    const bf = ki.match(frame, o);
    const bfHits = kp.query(frame);
    // Brute force runs in DescriptorIndex's exact kernel; the plain JS loop gives the same survivors.
    const kx = kp as unknown as { exact: unknown };
    const kernel = kx.exact;
    expect(kernel).not.toBeNull();
    kx.exact = null;
    const loop = ki.match(frame, o);
    kx.exact = kernel;
    expect(Array.from(loop.f.subarray(0, loop.n))).toEqual(Array.from(bf.f.subarray(0, bf.n)));
    expect(Array.from(loop.r.subarray(0, loop.n))).toEqual(Array.from(bf.r.subarray(0, bf.n)));
    kp.matcher = 'hashed';
    expect(kp.activeMatcher).toBe('hashed');
    const h = ki.match(frame, o);
    const hHits = kp.query(frame);
    // Brute force's survivors on the two pasted references (the ones verification keeps) are
    // nearly all found, with the same reference descriptor. (Survivors elsewhere are mostly chance
    // matches at larger distances; hashing misses more of those, which costs nothing.)
    const dRef = (kp as unknown as { dRef: Int32Array }).dRef;
    const onHits = new Set([3, 27]); // slots = insertion order
    const hashedPairs = new Set<string>();
    for (let i = 0; i < h.n; i++) hashedPairs.add(`${h.f[i]}:${h.r[i]}`);
    let rel = 0, same = 0;
    for (let i = 0; i < bf.n; i++) {
      if (!onHits.has(dRef[bf.r[i]])) continue;
      rel++;
      if (hashedPairs.has(`${bf.f[i]}:${bf.r[i]}`)) same++;
    }
    expect(rel).toBeGreaterThan(40);
    expect(same / rel).toBeGreaterThan(0.6); // measured 0.74 here (0.96 at 1,000 references in the bench)
    expect(bfHits.map((x) => x.referenceId).sort()).toEqual(['r27', 'r3']);
    expect(hHits.map((x) => x.referenceId).sort()).toEqual(bfHits.map((x) => x.referenceId).sort());
    const inl = (hs: typeof bfHits) => hs.reduce((a, x) => a + x.inliers, 0);
    expect(inl(hHits)).toBeGreaterThanOrEqual(0.8 * inl(bfHits)); // measured 96 vs 108
    // Incremental upkeep: remove one hit reference, add it back under a new id.
    kp.remove('r3');
    expect(kp.query(frame).map((x) => x.referenceId)).toEqual(['r27']);
    kp.add({ referenceId: 'r3b', characterId: 'c3', features: await extractReferenceFeatures(await decodeToRaw(art[3], 4)) });
    expect(kp.query(frame).map((x) => x.referenceId).sort()).toEqual(['r27', 'r3b']);
  });
});

/**
 * The MetadataStore contract as one test suite, run against every implementation (see
 * metadata-store.test.ts). Each test gets a fresh, empty store from `factory`.
 */
import { KagamiError } from '../../src/errors';
import type { MetadataStore } from '../../src/library/metadata-store';
import type { LibraryChange, ReferenceFeatures, ReferenceRecord, ScanRecord } from '../../src/library/types';

export type StoreFactory = () => Promise<{ store: MetadataStore; cleanup: () => Promise<void> }>;

const DIM = 8;
const ISO_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** An embedding with awkward values (negative zero, subnormal, NaN, infinity) to prove bit-exact storage. */
function embedding(seed: number, dim = DIM): Float32Array {
  const e = new Float32Array(dim);
  for (let i = 0; i < dim; i++) e[i] = Math.sin(seed * 7.3 + i * 1.7) / 3;
  e[0] = -0;
  if (dim > 1) e[1] = 1e-45; // subnormal
  if (dim > 2) e[2] = seed % 2 ? NaN : -Infinity;
  return e;
}

function keypoints(seed: number, n = 300): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (seed * 31 + i * 17) & 0xff;
  b[0] = 0;
  b[n - 1] = 0;
  return b;
}

function features(referenceId: string, characterId: string, seed: number, dim = DIM): ReferenceFeatures {
  return { referenceId, characterId, embedding: embedding(seed, dim), keypoints: keypoints(seed) };
}

function ref(id: string, characterId: string, sha256 = `sha-${id}`): Omit<ReferenceRecord, 'createdAt' | 'status'> {
  return { id, characterId, sha256, fileName: `${id}.png`, width: 640, height: 480 };
}

const bytes = (a: Float32Array | Buffer): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

function expectSameFeatures(actual: ReferenceFeatures, expected: ReferenceFeatures): void {
  expect(actual.referenceId).toBe(expected.referenceId);
  expect(actual.characterId).toBe(expected.characterId);
  expect(actual.embedding).toBeInstanceOf(Float32Array);
  expect(actual.embedding.length).toBe(expected.embedding.length);
  expect(bytes(actual.embedding).equals(bytes(expected.embedding))).toBe(true);
  expect(Buffer.isBuffer(actual.keypoints)).toBe(true);
  expect(Buffer.from(actual.keypoints).equals(expected.keypoints)).toBe(true);
}

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(KagamiError);
  expect((e as KagamiError).code).toBe(code);
}

/** A change as something readable in an assertion (features reduced to their ids). */
function summary(c: LibraryChange): string {
  switch (c.kind) {
    case 'reference_ready':
      return `ready ${c.features.characterId}/${c.features.referenceId}`;
    case 'reference_removed':
      return `removed ${c.characterId}/${c.referenceId}`;
    case 'character_updated':
      return `character ${c.characterId}`;
    case 'character_removed':
      return `character_removed ${c.characterId}`;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function runMetadataStoreContract(name: string, factory: StoreFactory): void {
  describe(`MetadataStore contract: ${name}`, () => {
    let store: MetadataStore;
    let cleanup: () => Promise<void>;

    beforeEach(async () => {
      ({ store, cleanup } = await factory());
    });
    afterEach(async () => {
      await cleanup();
    });

    /** Two characters of two owners, c1 with a ready reference. */
    async function seedLibrary(): Promise<void> {
      await store.setModel({ modelId: 'm1', dimension: DIM });
      await store.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme', franchise: 'F' });
      await store.upsertCharacter({ id: 'c2', name: 'Two', owner: 'globex' });
      await store.addReferences([{ ref: ref('r1', 'c1'), features: features('r1', 'c1', 1) }]);
    }

    describe('library: model', () => {
      it('has a kind and no model at first', async () => {
        expect(typeof store.kind).toBe('string');
        expect(await store.getModel()).toBeUndefined();
      });

      it('records the model once and rejects another one with model_mismatch', async () => {
        await store.setModel({ modelId: 'm1', dimension: 512 });
        expect(await store.getModel()).toEqual({ modelId: 'm1', dimension: 512 });
        await store.setModel({ modelId: 'm1', dimension: 512 }); // same: fine
        await expectCode(store.setModel({ modelId: 'm2', dimension: 512 }), 'model_mismatch');
        await expectCode(store.setModel({ modelId: 'm1', dimension: 256 }), 'model_mismatch');
        expect(await store.getModel()).toEqual({ modelId: 'm1', dimension: 512 });
      });

      it("keeps the int8 weights first recorded with the model; replaceModel records the new ones", async () => {
        await store.setModel({ modelId: 'm1', dimension: 512, weightBits: 7 });
        expect(await store.getModel()).toEqual({ modelId: 'm1', dimension: 512, weightBits: 7 });
        // Another process running the other weights of the same model adds to the library: the record stays.
        await store.setModel({ modelId: 'm1', dimension: 512, weightBits: 8 });
        await store.setModel({ modelId: 'm1', dimension: 512 });
        expect(await store.getModel()).toEqual({ modelId: 'm1', dimension: 512, weightBits: 7 });
        await store.replaceModel({ modelId: 'm1', dimension: 512, weightBits: 8 }, []);
        expect(await store.getModel()).toEqual({ modelId: 'm1', dimension: 512, weightBits: 8 });
        await store.replaceModel({ modelId: 'm2', dimension: 512 }, []);
        expect(await store.getModel()).toEqual({ modelId: 'm2', dimension: 512 });
      });

      it('rejects features whose dimension is not the model one', async () => {
        await store.setModel({ modelId: 'm1', dimension: DIM });
        await store.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme' });
        await expectCode(store.addReferences([{ ref: ref('r1', 'c1'), features: features('r1', 'c1', 1, DIM / 2) }]), 'model_mismatch');
        expect(await store.listReferences()).toEqual([]);
        await store.addReferences([{ ref: ref('r1', 'c1') }]);
        await expectCode(store.setReferenceFeatures('r1', features('r1', 'c1', 1, DIM * 2)), 'model_mismatch');
        expect((await store.getReference('r1'))!.status).toBe('pending');
      });

      it('addReferences with the model its features were made with: records it on a new library, refuses another one', async () => {
        await store.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme' });
        await store.addReferences([{ ref: ref('r1', 'c1'), features: features('r1', 'c1', 1) }], { modelId: 'm1', dimension: DIM });
        expect(await store.getModel()).toEqual({ modelId: 'm1', dimension: DIM });
        // Same dimension, other model (made before the library moved): nothing stored.
        await expectCode(store.addReferences([{ ref: ref('r2', 'c1'), features: features('r2', 'c1', 2) }], { modelId: 'm0', dimension: DIM }), 'model_mismatch');
        expect((await store.listReferences()).map((r) => r.id)).toEqual(['r1']);
        expect(await store.getModel()).toEqual({ modelId: 'm1', dimension: DIM });
        await store.addReferences([{ ref: ref('r2', 'c1'), features: features('r2', 'c1', 2) }], { modelId: 'm1', dimension: DIM });
        expect((await store.loadFeatures()).features.map((f) => f.referenceId)).toEqual(['r1', 'r2']);
      });

      it('setReferenceFeatures with the model it was made with: records it on a new library, refuses another one', async () => {
        await store.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme' });
        await store.addReferences([{ ref: ref('r1', 'c1') }, { ref: ref('r2', 'c1') }]);
        await store.setReferenceFeatures('r1', features('r1', 'c1', 1), { modelId: 'm1', dimension: DIM });
        expect(await store.getModel()).toEqual({ modelId: 'm1', dimension: DIM });
        expect((await store.getReference('r1'))!.status).toBe('ready');
        // Same dimension, other model (a vector made before the library moved): nothing written.
        await expectCode(store.setReferenceFeatures('r2', features('r2', 'c1', 2), { modelId: 'm0', dimension: DIM }), 'model_mismatch');
        expect((await store.getReference('r2'))!.status).toBe('pending');
        expect(await store.getModel()).toEqual({ modelId: 'm1', dimension: DIM });
        await store.setReferenceFeatures('r2', features('r2', 'c1', 2), { modelId: 'm1', dimension: DIM });
        expect((await store.loadFeatures()).features.map((f) => f.referenceId)).toEqual(['r1', 'r2']);
      });

      it('replaceModel swaps every ready embedding and the model in one go; keypoints and pending references stay', async () => {
        await seedLibrary();
        await store.addReferences([{ ref: ref('r2', 'c2'), features: features('r2', 'c2', 2) }, { ref: ref('r3', 'c2') }]);
        const before = await store.loadFeatures();
        const next = [
          { referenceId: 'r1', embedding: embedding(11, DIM * 2) },
          { referenceId: 'r2', embedding: embedding(12, DIM * 2) },
        ];
        await store.replaceModel({ modelId: 'm2', dimension: DIM * 2 }, next);
        expect(await store.getModel()).toEqual({ modelId: 'm2', dimension: DIM * 2 });
        const after = await store.loadFeatures();
        expect(after.features.map((f) => f.referenceId)).toEqual(['r1', 'r2']);
        for (const [i, f] of after.features.entries()) {
          expectSameFeatures(f, { ...before.features[i], embedding: next[i].embedding });
        }
        expect((await store.getReference('r3'))!.status).toBe('pending');
        // The old model is now refused, the new one accepted.
        await expectCode(store.setModel({ modelId: 'm1', dimension: DIM }), 'model_mismatch');
        await store.setReferenceFeatures('r3', features('r3', 'c2', 3, DIM * 2));
      });

      it('replaceModel replaces the keypoints of the references it is given new ones for, and keeps the others', async () => {
        await seedLibrary();
        await store.addReferences([{ ref: ref('r2', 'c2'), features: features('r2', 'c2', 2) }]);
        const before = await store.loadFeatures();
        const fresh = Buffer.from('new keypoints of r2');
        const next = [
          { referenceId: 'r1', embedding: embedding(11) },
          { referenceId: 'r2', embedding: embedding(12), keypoints: fresh },
        ];
        await store.replaceModel({ modelId: 'm1', dimension: DIM }, next);
        const after = await store.loadFeatures();
        expectSameFeatures(after.features[0], { ...before.features[0], embedding: next[0].embedding });
        expectSameFeatures(after.features[1], { ...before.features[1], embedding: next[1].embedding, keypoints: fresh });
        const changed = (await store.changesSince(before.seq)).find((c) => c.kind === 'reference_ready' && c.features.referenceId === 'r2');
        if (changed?.kind !== 'reference_ready') throw new Error('no reference_ready entry for r2');
        expect(Buffer.from(changed.features.keypoints).equals(fresh)).toBe(true);
      });

      it('replaceModel logs every re-embedded reference as ready again, so scanners on the same model take the new vectors', async () => {
        await seedLibrary();
        await store.addReferences([{ ref: ref('r2', 'c2'), features: features('r2', 'c2', 2) }, { ref: ref('r3', 'c2') }]);
        const before = await store.loadFeatures();
        const next = [
          { referenceId: 'r2', embedding: embedding(12) },
          { referenceId: 'r1', embedding: embedding(11) },
        ];
        await store.replaceModel({ modelId: 'm1', dimension: DIM }, next); // the same model: new reference views
        const changes = await store.changesSince(before.seq);
        expect(changes.map(summary)).toEqual(['ready c2/r2', 'ready c1/r1']);
        expect(changes[0].seq).toBeGreaterThan(before.seq);
        expect(changes[1].seq).toBeGreaterThan(changes[0].seq);
        for (const [i, c] of changes.entries()) {
          if (c.kind !== 'reference_ready') throw new Error(c.kind);
          const old = before.features.find((f) => f.referenceId === next[i].referenceId)!;
          expectSameFeatures(c.features, { ...old, embedding: next[i].embedding });
        }
        // Only the newest entry of a reference is live: a reader from the start sees each once.
        const all = (await store.changesSince(0)).filter((c) => c.kind === 'reference_ready');
        expect(all.map(summary)).toEqual(['ready c2/r2', 'ready c1/r1']);
        expect((await store.loadFeatures()).seq).toBe(changes[1].seq);
      });

      it('replaceModel writes nothing when the ready references are not exactly the ones given', async () => {
        await seedLibrary();
        await store.addReferences([{ ref: ref('r2', 'c2'), features: features('r2', 'c2', 2) }]);
        const before = await store.loadFeatures();
        const r1 = { referenceId: 'r1', embedding: embedding(11, DIM) };
        const r2 = { referenceId: 'r2', embedding: embedding(12, DIM) };
        // r2 missing (it became ready meanwhile), an unknown one, a duplicate, a wrong dimension.
        await expectCode(store.replaceModel({ modelId: 'm2', dimension: DIM }, [r1]), 'library_changed');
        await expectCode(store.replaceModel({ modelId: 'm2', dimension: DIM }, [r1, r2, { referenceId: 'gone', embedding: embedding(13) }]), 'library_changed');
        await expectCode(store.replaceModel({ modelId: 'm2', dimension: DIM }, [r1, r1]), 'library_changed');
        await expectCode(store.replaceModel({ modelId: 'm2', dimension: DIM * 2 }, [r1, r2]), 'model_mismatch');
        expect(await store.getModel()).toEqual({ modelId: 'm1', dimension: DIM });
        const after = await store.loadFeatures();
        after.features.forEach((f, i) => expectSameFeatures(f, before.features[i]));
      });
    });

    describe('library: characters', () => {
      it('creates, updates and gets characters', async () => {
        const c = await store.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme', franchise: 'F' });
        expect(c).toEqual({ id: 'c1', name: 'One', owner: 'acme', franchise: 'F', createdAt: expect.stringMatching(ISO_RE) });
        expect(await store.getCharacter('c1')).toEqual(c);

        const u = await store.upsertCharacter({ id: 'c1', name: 'Uno', owner: 'acme2' });
        expect(u).toEqual({ id: 'c1', name: 'Uno', owner: 'acme2', franchise: 'F', createdAt: c.createdAt }); // franchise kept
        const v = await store.upsertCharacter({ id: 'c1', name: 'Uno', owner: 'acme2', franchise: 'G' });
        expect(v.franchise).toBe('G');

        const plain = await store.upsertCharacter({ id: 'c2', name: 'Two', owner: 'acme' });
        expect(plain).not.toHaveProperty('franchise');
        expect(await store.getCharacter('nope')).toBeUndefined();
      });

      it('lists characters ordered by id, optionally of one owner', async () => {
        await store.upsertCharacter({ id: 'b', name: 'B', owner: 'acme' });
        await store.upsertCharacter({ id: 'a', name: 'A', owner: 'globex' });
        await store.upsertCharacter({ id: 'C', name: 'C', owner: 'acme' });
        await store.upsertCharacter({ id: 'a-2', name: 'A2', owner: 'acme' });
        expect((await store.listCharacters()).map((c) => c.id)).toEqual(['C', 'a', 'a-2', 'b']);
        expect((await store.listCharacters({})).map((c) => c.id)).toEqual(['C', 'a', 'a-2', 'b']);
        expect((await store.listCharacters({ owner: 'acme' })).map((c) => c.id)).toEqual(['C', 'a-2', 'b']);
        expect(await store.listCharacters({ owner: 'nobody' })).toEqual([]);
      });

      it('deletes a character with all its references', async () => {
        await seedLibrary();
        await store.addReferences([{ ref: ref('r2', 'c1') }, { ref: ref('r3', 'c2'), features: features('r3', 'c2', 3) }]);
        expect(await store.deleteCharacter('c1')).toBe(true);
        expect(await store.getCharacter('c1')).toBeUndefined();
        expect(await store.getReference('r1')).toBeUndefined();
        expect(await store.getReference('r2')).toBeUndefined();
        expect((await store.listReferences()).map((r) => r.id)).toEqual(['r3']);
        expect((await store.loadFeatures()).features.map((f) => f.referenceId)).toEqual(['r3']);
        expect(await store.deleteCharacter('c1')).toBe(false);
        expect(await store.deleteCharacter('nope')).toBe(false);
      });
    });

    describe('library: references', () => {
      it('adds ready (with features) and pending (without) references', async () => {
        await store.setModel({ modelId: 'm1', dimension: DIM });
        await store.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme' });
        const added = await store.addReferences([
          { ref: { ...ref('r1', 'c1'), status: 'pending' }, features: features('r1', 'c1', 1) },
          { ref: ref('r2', 'c1') },
        ]);
        expect(added).toEqual([
          { ...ref('r1', 'c1'), status: 'ready', createdAt: expect.stringMatching(ISO_RE) },
          { ...ref('r2', 'c1'), status: 'pending', createdAt: expect.stringMatching(ISO_RE) },
        ]);
        expect(await store.getReference('r1')).toEqual(added[0]);
        expect(await store.getReference('r2')).toEqual(added[1]);
        expect(await store.getReference('nope')).toBeUndefined();
        expect(await store.listReferences('c1')).toEqual(added);
        expect(await store.listReferences()).toEqual(added);
        expect(await store.listReferences('nope')).toEqual([]);
        expect(await store.addReferences([])).toEqual([]);
      });

      it('keeps whether a reference is a negative example', async () => {
        await seedLibrary();
        const [neg] = await store.addReferences([{ ref: { ...ref('r9', 'c1'), negative: true }, features: features('r9', 'c1', 5) }]);
        expect(neg).toEqual({ ...ref('r9', 'c1'), negative: true, status: 'ready', createdAt: expect.stringMatching(ISO_RE) });
        expect(await store.getReference('r9')).toEqual(neg);
        expect((await store.listReferences('c1')).map((r) => [r.id, !!r.negative])).toEqual([
          ['r1', false],
          ['r9', true],
        ]);
        expect(await store.getReference('r1')).not.toHaveProperty('negative');
      });

      it('lists references of all characters by character', async () => {
        await seedLibrary();
        await store.addReferences([{ ref: ref('r0', 'c2') }, { ref: ref('r2', 'c1') }]);
        expect((await store.listReferences()).map((r) => r.id)).toEqual(['r1', 'r2', 'r0']);
      });

      it('is idempotent on (characterId, sha256)', async () => {
        await seedLibrary();
        const [first] = await store.listReferences('c1');
        const again = await store.addReferences([
          { ref: { ...ref('r1-other-id', 'c1', 'sha-r1'), fileName: 'renamed.png' }, features: features('x', 'c1', 9) },
          { ref: ref('r1', 'c1') },
        ]);
        expect(again).toEqual([first, first]);
        expect(await store.listReferences()).toEqual([first]);
        expect(await store.getReference('r1-other-id')).toBeUndefined();
        const [f] = (await store.loadFeatures()).features;
        expectSameFeatures(f, features('r1', 'c1', 1));

        // A pending one stays pending even when the repeat brings features.
        await store.addReferences([{ ref: ref('p', 'c1') }]);
        const [p] = await store.addReferences([{ ref: ref('p', 'c1'), features: features('p', 'c1', 5) }]);
        expect(p.status).toBe('pending');

        // The same file for another character is another reference.
        const [other] = await store.addReferences([{ ref: ref('r1-c2', 'c2', 'sha-r1') }]);
        expect(other.characterId).toBe('c2');
      });

      it('stores all references or none (unknown character)', async () => {
        await seedLibrary();
        const before = await store.changesSince(0);
        await expectCode(
          store.addReferences([
            { ref: ref('ok1', 'c1'), features: features('ok1', 'c1', 2) },
            { ref: ref('bad', 'no-such-character'), features: features('bad', 'no-such-character', 3) },
            { ref: ref('ok2', 'c2') },
          ]),
          'not_found',
        );
        expect((await store.listReferences()).map((r) => r.id)).toEqual(['r1']);
        expect(await store.changesSince(0)).toEqual(before);
        expect((await store.loadFeatures()).features.map((f) => f.referenceId)).toEqual(['r1']);
      });

      it('stores all references or none (id already used by another file)', async () => {
        await seedLibrary();
        await expectCode(
          store.addReferences([{ ref: ref('ok1', 'c2') }, { ref: ref('r1', 'c2', 'another-sha') }]),
          'conflict',
        );
        expect((await store.listReferences()).map((r) => r.id)).toEqual(['r1']);
      });

      it('marks a pending reference ready with its features, bit-exactly', async () => {
        await seedLibrary();
        await store.addReferences([{ ref: ref('r2', 'c1') }]);
        expect((await store.loadFeatures()).features.map((f) => f.referenceId)).toEqual(['r1']);
        const f2 = features('r2', 'c1', 2);
        await store.setReferenceFeatures('r2', f2);
        expect((await store.getReference('r2'))!.status).toBe('ready');
        const { features: loaded } = await store.loadFeatures();
        expect(loaded.map((f) => f.referenceId)).toEqual(['r1', 'r2']);
        expectSameFeatures(loaded[0], features('r1', 'c1', 1));
        expectSameFeatures(loaded[1], f2);
        await expectCode(store.setReferenceFeatures('nope', features('nope', 'c1', 1)), 'not_found');
      });

      it('takes embeddings that are views into a larger buffer', async () => {
        await store.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme' });
        const big = new Float32Array(3 * DIM);
        big.set(embedding(4), DIM);
        const view = big.subarray(DIM, 2 * DIM);
        const kp = keypoints(4);
        const kpView = Buffer.concat([Buffer.from([1, 2, 3]), kp]).subarray(3);
        await store.addReferences([{ ref: ref('r1', 'c1'), features: { referenceId: 'r1', characterId: 'c1', embedding: view, keypoints: kpView } }]);
        const [f] = (await store.loadFeatures()).features;
        expectSameFeatures(f, { referenceId: 'r1', characterId: 'c1', embedding: embedding(4), keypoints: kp });
      });

      it('marks a reference failed with a reason', async () => {
        await seedLibrary();
        await store.addReferences([{ ref: ref('r2', 'c1') }]);
        await store.failReference('r2', 'decoder exploded');
        expect(await store.getReference('r2')).toEqual({
          ...ref('r2', 'c1'),
          status: 'failed',
          error: 'decoder exploded',
          createdAt: expect.stringMatching(ISO_RE),
        });
        // A ready one that fails leaves the features (and the workers' indexes).
        await store.failReference('r1', 'bad art');
        expect((await store.getReference('r1'))!.status).toBe('failed');
        expect((await store.loadFeatures()).features).toEqual([]);
        await expectCode(store.failReference('nope', 'x'), 'not_found');
        // A failed one can still be made ready.
        await store.setReferenceFeatures('r2', features('r2', 'c1', 2));
        const r2 = (await store.getReference('r2'))!;
        expect(r2.status).toBe('ready');
        expect(r2).not.toHaveProperty('error');
      });

      it('deletes one reference', async () => {
        await seedLibrary();
        await store.addReferences([{ ref: ref('r2', 'c1'), features: features('r2', 'c1', 2) }]);
        expect(await store.deleteReference('r1')).toBe(true);
        expect(await store.getReference('r1')).toBeUndefined();
        expect(await store.deleteReference('r1')).toBe(false);
        expect((await store.loadFeatures()).features.map((f) => f.referenceId)).toEqual(['r2']);
        expect(await store.getCharacter('c1')).toBeDefined();
      });
    });

    describe('library: loadFeatures and the change log', () => {
      it('starts empty at seq 0', async () => {
        expect(await store.loadFeatures()).toEqual({ features: [], seq: 0 });
        expect(await store.changesSince(0)).toEqual([]);
      });

      it('loads only ready references, with the change-log position they reflect', async () => {
        await seedLibrary();
        await store.addReferences([{ ref: ref('r2', 'c1') }, { ref: ref('r3', 'c2'), features: features('r3', 'c2', 3) }]);
        await store.addReferences([{ ref: ref('r4', 'c2') }]);
        await store.failReference('r4', 'nope');
        const loaded = await store.loadFeatures();
        expect(loaded.features.map((f) => f.referenceId)).toEqual(['r1', 'r3']);
        const all = await store.changesSince(0);
        expect(loaded.seq).toBe(all[all.length - 1].seq);
        expect(await store.changesSince(loaded.seq)).toEqual([]);

        await store.setReferenceFeatures('r2', features('r2', 'c1', 2));
        const next = await store.changesSince(loaded.seq);
        expect(next.map(summary)).toEqual(['ready c1/r2']);
        expect(next[0].seq).toBeGreaterThan(loaded.seq);
        expect((await store.loadFeatures()).seq).toBe(next[0].seq);
      });

      it('records ready, removed and character changes in order', async () => {
        await store.setModel({ modelId: 'm1', dimension: DIM });
        await store.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme' }); // character c1
        await store.upsertCharacter({ id: 'c2', name: 'Two', owner: 'globex' }); // character c2
        await store.addReferences([{ ref: ref('r1', 'c1'), features: features('r1', 'c1', 1) }]); // ready r1 (deleted later: skipped)
        await store.addReferences([{ ref: ref('r2', 'c1') }]); // pending: nothing
        await store.addReferences([{ ref: ref('r3', 'c2'), features: features('r3', 'c2', 3) }]); // ready r3 (c2 removed later: skipped)
        await store.setReferenceFeatures('r2', features('r2', 'c1', 2)); // ready r2
        await store.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme' }); // unchanged: nothing
        await store.upsertCharacter({ id: 'c1', name: 'Uno', owner: 'acme' }); // character c1
        await store.deleteReference('r1'); // removed r1
        await store.deleteCharacter('c2'); // character_removed c2
        await store.addReferences([{ ref: ref('r5', 'c1'), features: features('r5', 'c1', 5) }]); // ready r5
        await store.failReference('r5', 'withdrawn'); // removed r5 (its ready entry is skipped)

        const all = await store.changesSince(0);
        expect(all.map(summary)).toEqual([
          'character c1',
          'character c2',
          'ready c1/r2',
          'character c1',
          'removed c1/r1',
          'character_removed c2',
          'removed c1/r5',
        ]);
        for (let i = 1; i < all.length; i++) expect(all[i].seq).toBeGreaterThan(all[i - 1].seq);
        const ready = all.find((c) => c.kind === 'reference_ready');
        expect(ready && ready.kind === 'reference_ready').toBe(true);
        if (ready?.kind === 'reference_ready') expectSameFeatures(ready.features, features('r2', 'c1', 2));

        // Paging with a limit yields the same entries.
        const paged: LibraryChange[] = [];
        for (let seq = 0; ; ) {
          const page = await store.changesSince(seq, 2);
          expect(page.length).toBeLessThanOrEqual(2);
          if (!page.length) break;
          paged.push(...page);
          seq = page[page.length - 1].seq;
        }
        expect(paged.map((c) => c.seq)).toEqual(all.map((c) => c.seq));
        expect(await store.changesSince(0, 3)).toEqual(all.slice(0, 3));
        expect(await store.changesSince(all[2].seq, 1)).toEqual([all[3]]);
        expect(await store.changesSince(all[all.length - 1].seq)).toEqual([]);
        expect(await store.changesSince(0, 0)).toEqual([]);
      });

      it('shows only the latest features of a reference featured twice', async () => {
        await seedLibrary();
        const start = (await store.loadFeatures()).seq;
        await store.setReferenceFeatures('r1', features('r1', 'c1', 7));
        const changes = await store.changesSince(0);
        expect(changes.filter((c) => c.kind === 'reference_ready').map(summary)).toEqual(['ready c1/r1']);
        const last = changes[changes.length - 1];
        expect(last.seq).toBeGreaterThan(start);
        if (last.kind !== 'reference_ready') throw new Error('expected reference_ready');
        expectSameFeatures(last.features, features('r1', 'c1', 7));
        expectSameFeatures((await store.loadFeatures()).features[0], features('r1', 'c1', 7));
      });

      it('replays a reference deleted and added again correctly', async () => {
        await seedLibrary();
        await store.deleteReference('r1');
        await store.addReferences([{ ref: ref('r1', 'c1'), features: features('r1', 'c1', 8) }]);
        const changes = (await store.changesSince(0)).map(summary);
        expect(changes.slice(-2)).toEqual(['removed c1/r1', 'ready c1/r1']);
        expect(changes.filter((s) => s === 'ready c1/r1')).toHaveLength(1);
      });
    });

    describe('tenants and api keys', () => {
      it('ensures tenants idempotently and rejects another role', async () => {
        const t = await store.ensureTenant('acme', 'rightsholder');
        expect(t).toEqual({ id: expect.any(String), name: 'acme', role: 'rightsholder', createdAt: expect.stringMatching(ISO_RE) });
        expect(await store.ensureTenant('acme', 'rightsholder')).toEqual(t);
        await expectCode(store.ensureTenant('acme', 'platform'), 'tenant_role_mismatch');
        const p = await store.ensureTenant('tube', 'platform');
        expect(p.id).not.toBe(t.id);
        expect(await store.getTenant(t.id)).toEqual(t);
        expect(await store.getTenantByName('tube')).toEqual(p);
        expect(await store.getTenant('nope')).toBeUndefined();
        expect(await store.getTenantByName('nope')).toBeUndefined();
      });

      it('finds tenants by unrevoked key hash', async () => {
        const t = await store.ensureTenant('acme', 'rightsholder');
        const u = await store.ensureTenant('tube', 'platform');
        const k = await store.addApiKey({ id: 'k1', tenantId: t.id, hash: 'h1', prefix: 'kg_abc' });
        expect(k).toEqual({ id: 'k1', tenantId: t.id, prefix: 'kg_abc', createdAt: expect.stringMatching(ISO_RE) });
        await store.addApiKey({ id: 'k2', tenantId: t.id, hash: 'h2', prefix: 'kg_def' });
        await store.addApiKey({ id: 'k3', tenantId: u.id, hash: 'h3', prefix: 'kg_ghi' });
        expect(await store.findTenantByKeyHash('h1')).toEqual(t);
        expect(await store.findTenantByKeyHash('h3')).toEqual(u);
        expect(await store.findTenantByKeyHash('nope')).toBeUndefined();

        expect(await store.revokeApiKey('k1')).toBe(true);
        expect(await store.findTenantByKeyHash('h1')).toBeUndefined();
        expect(await store.findTenantByKeyHash('h2')).toEqual(t);
        expect(await store.revokeApiKey('k1')).toBe(false);
        expect(await store.revokeApiKey('nope')).toBe(false);

        await expectCode(store.addApiKey({ id: 'k4', tenantId: t.id, hash: 'h2', prefix: 'x' }), 'conflict');
        await expectCode(store.addApiKey({ id: 'k5', tenantId: 'no-such-tenant', hash: 'h5', prefix: 'x' }), 'not_found');
        expect(await store.findTenantByKeyHash('h5')).toBeUndefined();
      });
    });

    describe('scans, batches and matches', () => {
      let tube: string;
      let other: string;
      beforeEach(async () => {
        tube = (await store.ensureTenant('tube', 'platform')).id;
        other = (await store.ensureTenant('vids', 'platform')).id;
      });

      const scan = (id: string, tenantId: string, extra: Partial<ScanRecord> = {}) =>
        store.createScan({ id, tenantId, source: { kind: 'blob', key: `blob-${id}` }, fileName: `${id}.mp4`, ...extra });

      it('creates scans and scopes lookups by tenant', async () => {
        const s = await scan('s1', tube);
        expect(s).toEqual({
          id: 's1',
          tenantId: tube,
          source: { kind: 'blob', key: 'blob-s1' },
          fileName: 's1.mp4',
          status: 'queued',
          progress: 0,
          createdAt: expect.stringMatching(ISO_RE),
        });
        expect(await store.getScan('s1')).toEqual(s);
        expect(await store.getScan('s1', tube)).toEqual(s);
        expect(await store.getScan('s1', other)).toBeUndefined();
        expect(await store.getScan('nope')).toBeUndefined();
        const p = await scan('s2', other, { source: { kind: 'path', path: 'in/clip.mp4' } });
        expect(p.source).toEqual({ kind: 'path', path: 'in/clip.mp4' });
        await expectCode(scan('s1', tube), 'conflict');
        await expectCode(scan('s3', 'no-such-tenant'), 'not_found');
      });

      it('moves a scan along', async () => {
        await scan('s1', tube);
        const running = await store.updateScan('s1', { status: 'running', startedAt: '2024-01-02T03:04:05Z', progress: 0.25 });
        expect(running).toMatchObject({ status: 'running', progress: 0.25, startedAt: '2024-01-02T03:04:05.000Z' });
        expect(running).not.toHaveProperty('finishedAt');
        expect((await store.updateScan('s1', { progress: 0.5 }))!.progress).toBe(0.5);

        const report = { verdict: 'match', score: 0.8125, characters: [{ id: 'c1', n: 3 }], nested: { ok: true, none: null } };
        const done = await store.updateScan('s1', { status: 'done', progress: 1, report, finishedAt: '2024-01-02T03:05:00.123Z' });
        expect(done).toEqual({
          id: 's1',
          tenantId: tube,
          source: { kind: 'blob', key: 'blob-s1' },
          fileName: 's1.mp4',
          status: 'done',
          progress: 1,
          report,
          createdAt: expect.stringMatching(ISO_RE),
          startedAt: '2024-01-02T03:04:05.000Z',
          finishedAt: '2024-01-02T03:05:00.123Z',
        });
        expect(await store.getScan('s1')).toEqual(done);
        expect(await store.updateScan('s1', {})).toEqual(done);

        await scan('s2', tube);
        const failed = await store.updateScan('s2', { status: 'failed', error: 'invalid_media: not a video' });
        expect(failed).toMatchObject({ status: 'failed', error: 'invalid_media: not a video' });
        const retried = await store.updateScan('s2', { status: 'queued', error: null });
        expect(retried).not.toHaveProperty('error');
        expect(retried!.status).toBe('queued');

        expect(await store.updateScan('nope', { status: 'running' })).toBeUndefined();
      });

      it('lists scans newest first, by tenant, batch and status, with a limit', async () => {
        await store.createBatch({ id: 'b1', tenantId: tube, total: 2 });
        await scan('s1', tube, { batchId: 'b1' });
        await scan('s2', other);
        await scan('s3', tube, { batchId: 'b1' });
        await scan('s4', tube);
        await store.updateScan('s3', { status: 'done' });
        const ids = (scans: ScanRecord[]) => scans.map((s) => s.id);
        expect(ids(await store.listScans({}))).toEqual(['s4', 's3', 's2', 's1']);
        expect(ids(await store.listScans({ tenantId: tube }))).toEqual(['s4', 's3', 's1']);
        expect(ids(await store.listScans({ tenantId: tube, limit: 2 }))).toEqual(['s4', 's3']);
        expect(ids(await store.listScans({ batchId: 'b1' }))).toEqual(['s3', 's1']);
        expect(ids(await store.listScans({ status: 'queued' }))).toEqual(['s4', 's2', 's1']);
        expect(ids(await store.listScans({ tenantId: tube, status: 'done' }))).toEqual(['s3']);
        expect(ids(await store.listScans({ tenantId: other, batchId: 'b1' }))).toEqual([]);
        expect((await store.listScans({ batchId: 'b1' }))[0].batchId).toBe('b1');
      });

      it('creates batches, scopes them and counts their scans by status', async () => {
        const b = await store.createBatch({ id: 'b1', tenantId: tube, total: 3 });
        expect(b).toEqual({ id: 'b1', tenantId: tube, status: 'running', total: 3, createdAt: expect.stringMatching(ISO_RE) });
        expect(await store.getBatch('b1')).toEqual(b);
        expect(await store.getBatch('b1', tube)).toEqual(b);
        expect(await store.getBatch('b1', other)).toBeUndefined();
        expect(await store.getBatch('nope')).toBeUndefined();
        expect(await store.batchCounts('b1')).toEqual({ queued: 0, running: 0, done: 0, failed: 0 });
        expect(await store.batchCounts('nope')).toEqual({ queued: 0, running: 0, done: 0, failed: 0 });

        await scan('s1', tube, { batchId: 'b1' });
        await scan('s2', tube, { batchId: 'b1' });
        await scan('s3', tube, { batchId: 'b1' });
        await scan('s4', tube); // not in the batch
        await store.updateScan('s1', { status: 'done' });
        await store.updateScan('s2', { status: 'done' });
        await store.updateScan('s3', { status: 'failed', error: 'x' });
        expect(await store.batchCounts('b1')).toEqual({ queued: 0, running: 0, done: 2, failed: 1 });

        await store.updateBatch('b1', { status: 'done', finishedAt: '2024-05-06T07:08:09.010Z' });
        expect(await store.getBatch('b1')).toEqual({ ...b, status: 'done', finishedAt: '2024-05-06T07:08:09.010Z' });
        await expectCode(scan('s5', tube, { batchId: 'no-such-batch' }), 'not_found');
      });

      describe('matches', () => {
        const match = (characterId: string, owner: string, score: number) => ({
          tenantId: tube,
          characterId,
          owner,
          verdict: 'match' as const,
          score,
          kind: 'copy' as const,
          segments: [{ startSec: 1.5, endSec: 3.25 }],
          evidence: { frames: [1, 2], note: 'x' },
          video: 'clip.mp4',
        });

        it('replaces the matches of a scan (idempotent)', async () => {
          await scan('s1', tube);
          await store.putMatches('s1', [match('c1', 'acme', 0.9), match('c2', 'globex', 0.7)]);
          const first = await store.listMatches({ scanId: 's1' });
          expect(first).toEqual([
            { id: expect.any(String), scanId: 's1', createdAt: expect.stringMatching(ISO_RE), ...match('c1', 'acme', 0.9) },
            { id: expect.any(String), scanId: 's1', createdAt: expect.stringMatching(ISO_RE), ...match('c2', 'globex', 0.7) },
          ]);
          expect(first[0].id).not.toBe(first[1].id);
          await store.putMatches('s1', [match('c1', 'acme', 0.9), match('c2', 'globex', 0.7)]);
          expect((await store.listMatches({ scanId: 's1' })).map((m) => [m.characterId, m.score])).toEqual([
            ['c1', 0.9],
            ['c2', 0.7],
          ]);
          await store.putMatches('s1', [match('c3', 'acme', 0.5)]);
          expect((await store.listMatches({})).map((m) => m.characterId)).toEqual(['c3']);
          await store.putMatches('s1', []);
          expect(await store.listMatches({ scanId: 's1' })).toEqual([]);
          await expectCode(store.putMatches('nope', [match('c1', 'acme', 0.9)]), 'not_found');
        });

        it('lists matches by owner, character and scan, newest first, with limit and before', async () => {
          await scan('s1', tube);
          await scan('s2', tube);
          await scan('s3', other);
          await store.putMatches('s1', [match('c1', 'acme', 0.91), match('c2', 'globex', 0.81)]);
          await sleep(5);
          await store.putMatches('s2', [match('c1', 'acme', 0.92)]);
          await sleep(5);
          await store.putMatches('s3', [{ ...match('c3', 'acme', 0.93), tenantId: other }, match('c2', 'globex', 0.83)]);
          const scores = (ms: Array<{ score: number }>) => ms.map((m) => m.score);

          expect(scores(await store.listMatches({}))).toEqual([0.93, 0.83, 0.92, 0.91, 0.81]);
          expect(scores(await store.listMatches({ owner: 'acme' }))).toEqual([0.93, 0.92, 0.91]);
          expect(scores(await store.listMatches({ owner: 'globex' }))).toEqual([0.83, 0.81]);
          expect(await store.listMatches({ owner: 'nobody' })).toEqual([]);
          expect(scores(await store.listMatches({ characterId: 'c1' }))).toEqual([0.92, 0.91]);
          expect(scores(await store.listMatches({ owner: 'acme', characterId: 'c3' }))).toEqual([0.93]);
          expect(scores(await store.listMatches({ scanId: 's1' }))).toEqual([0.91, 0.81]);
          expect(scores(await store.listMatches({ owner: 'acme', limit: 2 }))).toEqual([0.93, 0.92]);

          const [, second] = await store.listMatches({ owner: 'acme' });
          expect(scores(await store.listMatches({ owner: 'acme', before: second.createdAt }))).toEqual([0.91]);
          const m = (await store.listMatches({ scanId: 's3' }))[0];
          expect(m).toMatchObject({ scanId: 's3', tenantId: other, evidence: { frames: [1, 2], note: 'x' } });
        });
      });
    });

    describe('reference warnings', () => {
      it('stores, replaces and clears the warnings of a reference; finds references by sha256', async () => {
        await seedLibrary();
        await store.addReferences([{ ref: ref('r2', 'c2', 'sha-r1') }, { ref: ref('r3', 'c2') }]);
        expect(await store.getReference('r1')).not.toHaveProperty('warnings');
        await store.setReferenceWarnings('r1', ['too_small: tiny', 'duplicate: same file']);
        expect((await store.getReference('r1'))!.warnings).toEqual(['too_small: tiny', 'duplicate: same file']);
        expect((await store.listReferences('c1'))[0].warnings).toEqual(['too_small: tiny', 'duplicate: same file']);
        await store.setReferenceWarnings('r1', ['mostly_background: x']);
        expect((await store.getReference('r1'))!.warnings).toEqual(['mostly_background: x']);
        await store.setReferenceWarnings('r1', []);
        expect(await store.getReference('r1')).not.toHaveProperty('warnings');
        await expectCode(store.setReferenceWarnings('nope', ['x']), 'not_found');
        expect((await store.findReferencesBySha256('sha-r1')).map((r) => `${r.characterId}/${r.id}`)).toEqual(['c1/r1', 'c2/r2']);
        expect(await store.findReferencesBySha256('nope')).toEqual([]);
      });
    });

    describe('match decisions and exclusions', () => {
      let tube: string;
      let other: string;
      const match = (characterId: string, owner: string, verdict: 'match' | 'review' | 'clear') => ({
        tenantId: tube,
        characterId,
        owner,
        verdict,
        score: 0.75,
        kind: 'likeness' as const,
        segments: [{ startSec: 0, endSec: 1 }],
        evidence: {},
        video: 'v.mp4',
      });
      beforeEach(async () => {
        tube = (await store.ensureTenant('tube', 'platform')).id;
        other = (await store.ensureTenant('vids', 'platform')).id;
        await store.createScan({ id: 's1', tenantId: tube, source: { kind: 'blob', key: 'k1' }, fileName: 'a.mp4' });
        await store.createScan({ id: 's2', tenantId: other, source: { kind: 'blob', key: 'k2' }, fileName: 'b.mp4' });
      });

      it('records one decision per side, keeps the other, clears with null', async () => {
        await store.putMatches('s1', [match('c1', 'acme', 'review')]);
        const [m] = await store.listMatches({ scanId: 's1' });
        expect(m).not.toHaveProperty('decisions');
        expect(await store.getMatch(m.id)).toEqual(m);
        expect(await store.getMatch('nope')).toBeUndefined();

        const a = await store.decideMatch(m.id, 'owner', { decision: 'licensed', by: 'acme', note: 'contract 42' });
        expect(a!.decisions).toEqual({ owner: { decision: 'licensed', by: 'acme', at: expect.stringMatching(ISO_RE), note: 'contract 42' } });
        const b = await store.decideMatch(m.id, 'platform', { decision: 'dismissed', by: 'tube' });
        expect(b!.decisions).toEqual({ owner: a!.decisions!.owner, platform: { decision: 'dismissed', by: 'tube', at: expect.stringMatching(ISO_RE) } });
        expect(await store.getMatch(m.id)).toEqual(b);
        expect((await store.listMatches({ scanId: 's1' }))[0]).toEqual(b);
        expect(b).toMatchObject({ verdict: 'review', score: 0.75 }); // the scan's verdict and score stay

        const c = await store.decideMatch(m.id, 'owner', { decision: 'false_match', by: 'acme' });
        expect(c!.decisions!.owner).toEqual({ decision: 'false_match', by: 'acme', at: expect.stringMatching(ISO_RE) });
        // a false match that taught the character a negative example keeps the reference's id
        const n = await store.decideMatch(m.id, 'owner', { decision: 'false_match', by: 'acme', negativeReferenceId: 'ref_neg' });
        expect(n!.decisions!.owner).toEqual({ decision: 'false_match', by: 'acme', at: expect.stringMatching(ISO_RE), negativeReferenceId: 'ref_neg' });
        expect((await store.getMatch(m.id))!.decisions!.owner).toEqual(n!.decisions!.owner);
        const d = await store.decideMatch(m.id, 'owner', null);
        expect(d!.decisions).toEqual({ platform: b!.decisions!.platform });
        const e = await store.decideMatch(m.id, 'platform', null);
        expect(e).not.toHaveProperty('decisions');
        expect(await store.decideMatch('nope', 'owner', { decision: 'licensed', by: 'x' })).toBeUndefined();
      });

      it('lists matches by tenant, verdict and undecided side (a review queue)', async () => {
        await store.putMatches('s1', [match('c1', 'acme', 'review'), match('c2', 'acme', 'match'), match('c3', 'globex', 'review')]);
        await store.putMatches('s2', [{ ...match('c1', 'acme', 'review'), tenantId: other }]);
        const ids = (ms: Array<{ characterId: string; scanId: string }>) => ms.map((m) => `${m.scanId}/${m.characterId}`);
        expect(ids(await store.listMatches({ tenantId: tube }))).toEqual(['s1/c1', 's1/c2', 's1/c3']);
        expect(ids(await store.listMatches({ tenantId: tube, verdict: 'review' }))).toEqual(['s1/c1', 's1/c3']);
        expect(ids(await store.listMatches({ verdict: 'review' }))).toEqual(['s2/c1', 's1/c1', 's1/c3']);
        const c3 = (await store.listMatches({ scanId: 's1', characterId: 'c3' }))[0];
        await store.decideMatch(c3.id, 'platform', { decision: 'confirmed', by: 'tube' });
        expect(ids(await store.listMatches({ tenantId: tube, verdict: 'review', undecided: 'platform' }))).toEqual(['s1/c1']);
        expect(ids(await store.listMatches({ tenantId: tube, verdict: 'review', undecided: 'owner' }))).toEqual(['s1/c1', 's1/c3']);
        // decisions go with the matches a re-run replaces
        await store.putMatches('s1', [match('c3', 'globex', 'review')]);
        expect(ids(await store.listMatches({ tenantId: tube, undecided: 'platform' }))).toEqual(['s1/c3']);
      });

      it('stores exclusions per (character, video), replaces, lists and deletes them', async () => {
        await store.upsertCharacter({ id: 'c1', name: 'One', owner: 'acme' });
        await store.upsertCharacter({ id: 'c2', name: 'Two', owner: 'acme' });
        const x = await store.putExclusion({ characterId: 'c1', video: 'sha256:aa', reason: 'licensed', matchId: 'm1', createdBy: 'acme' });
        expect(x).toEqual({ characterId: 'c1', video: 'sha256:aa', reason: 'licensed', matchId: 'm1', createdBy: 'acme', createdAt: expect.stringMatching(ISO_RE) });
        const y = await store.putExclusion({ characterId: 'c2', video: 'sha256:aa', reason: 'licensed', createdBy: 'acme' });
        expect(y).not.toHaveProperty('matchId');
        await store.putExclusion({ characterId: 'c1', video: 'path:/m/b.mp4', reason: 'licensed', createdBy: 'acme' });
        const again = await store.putExclusion({ characterId: 'c1', video: 'sha256:aa', reason: 'licensed', matchId: 'm2', createdBy: 'acme2' });
        expect(again).toMatchObject({ matchId: 'm2', createdBy: 'acme2' });
        const keys = (es: Array<{ characterId: string; video: string }>) => es.map((e) => `${e.video}|${e.characterId}`);
        expect(keys(await store.listExclusions({}))).toEqual(['path:/m/b.mp4|c1', 'sha256:aa|c1', 'sha256:aa|c2']);
        expect(keys(await store.listExclusions({ video: 'sha256:aa' }))).toEqual(['sha256:aa|c1', 'sha256:aa|c2']);
        expect(keys(await store.listExclusions({ characterId: 'c1' }))).toEqual(['path:/m/b.mp4|c1', 'sha256:aa|c1']);
        expect(keys(await store.listExclusions({ video: 'sha256:aa', characterId: 'c2' }))).toEqual(['sha256:aa|c2']);
        expect(await store.deleteExclusion('c2', 'sha256:aa')).toBe(true);
        expect(await store.deleteExclusion('c2', 'sha256:aa')).toBe(false);
        await expectCode(store.putExclusion({ characterId: 'nope', video: 'v', reason: 'licensed', createdBy: 'x' }), 'not_found');
        await store.deleteCharacter('c1');
        expect(await store.listExclusions({})).toEqual([]);
      });
    });

    describe('webhooks', () => {
      let t: string;
      let u: string;
      beforeEach(async () => {
        t = (await store.ensureTenant('tube', 'platform')).id;
        u = (await store.ensureTenant('acme', 'rightsholder')).id;
      });

      it('sets, replaces, gets and deletes a tenant webhook', async () => {
        expect(await store.getWebhook(t)).toBeUndefined();
        const w = await store.setWebhook({ tenantId: t, url: 'https://example.test/hook', secret: 's3cret' });
        expect(w).toEqual({ tenantId: t, url: 'https://example.test/hook', secret: 's3cret', createdAt: expect.stringMatching(ISO_RE) });
        expect(await store.getWebhook(t)).toEqual(w);
        expect(await store.getWebhook(u)).toBeUndefined();
        const w2 = await store.setWebhook({ tenantId: t, url: 'https://example.test/v2', secret: 'other' });
        expect(w2).toMatchObject({ tenantId: t, url: 'https://example.test/v2', secret: 'other' });
        expect(await store.getWebhook(t)).toEqual(w2);
        expect(await store.deleteWebhook(t)).toBe(true);
        expect(await store.getWebhook(t)).toBeUndefined();
        expect(await store.deleteWebhook(t)).toBe(false);
      });

      it('logs deliveries, updates them and lists them newest first', async () => {
        const payload = { event: 'scan.done', scan: { id: 's1', matches: [1, 2.5] }, ok: true };
        const d1 = await store.addDelivery({ id: 'd1', tenantId: t, event: 'scan.done', payload });
        expect(d1).toEqual({ id: 'd1', tenantId: t, event: 'scan.done', payload, status: 'pending', attempts: 0, createdAt: expect.stringMatching(ISO_RE) });
        await store.addDelivery({ id: 'd2', tenantId: t, event: 'batch.done', payload: { n: 2 } });
        await store.addDelivery({ id: 'd3', tenantId: u, event: 'match', payload: ['a'] });
        await store.addDelivery({ id: 'd4', tenantId: t, event: 'scan.failed', payload: 'text' });

        await store.updateDelivery('d1', { status: 'failed', attempts: 1, lastError: 'connect ECONNREFUSED', responseStatus: null });
        let [got] = (await store.listDeliveries(t)).filter((d) => d.id === 'd1');
        expect(got).toEqual({ ...d1, status: 'failed', attempts: 1, lastError: 'connect ECONNREFUSED' });
        await store.updateDelivery('d1', { status: 'delivered', attempts: 2, lastError: null, responseStatus: 204 });
        [got] = (await store.listDeliveries(t)).filter((d) => d.id === 'd1');
        expect(got).toEqual({ ...d1, status: 'delivered', attempts: 2, responseStatus: 204 });
        await store.updateDelivery('d2', { status: 'failed', attempts: 5, lastError: 'HTTP 500', responseStatus: 500 });
        await store.updateDelivery('d2', { status: 'failed', attempts: 6 }); // leaves error and response as they are
        [got] = (await store.listDeliveries(t)).filter((d) => d.id === 'd2');
        expect(got).toMatchObject({ attempts: 6, lastError: 'HTTP 500', responseStatus: 500 });

        expect((await store.listDeliveries(t)).map((d) => d.id)).toEqual(['d4', 'd2', 'd1']);
        expect((await store.listDeliveries(t, 2)).map((d) => d.id)).toEqual(['d4', 'd2']);
        expect((await store.listDeliveries(u)).map((d) => [d.id, d.payload])).toEqual([['d3', ['a']]]);
        expect((await store.listDeliveries(t))[0].payload).toBe('text');
        expect(await store.listDeliveries('nobody')).toEqual([]);
        expect(await store.getDelivery('d2')).toMatchObject({ id: 'd2', tenantId: t, event: 'batch.done', attempts: 6, responseStatus: 500 });
        expect(await store.getDelivery('d3')).toMatchObject({ tenantId: u, payload: ['a'] });
        expect(await store.getDelivery('missing')).toBeUndefined();
      });
    });
  });
}

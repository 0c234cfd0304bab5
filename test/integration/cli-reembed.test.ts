/**
 * Moving a library to another embedding model (`kagami library reembed`), through the real
 * binary: references registered with kagami-descriptor-v1 are embedded again with -v2 from their
 * stored files, scans on the old model are refused with a clear error, and scans on the new one
 * find the character as before. Real ffmpeg clip, real ONNX models, the SQLite library on disk.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_MODEL, modelManifestPath } from '../../src/config';
import { openLibrary } from '../../src/library/library';
import type { ReferenceFeatures } from '../../src/library/types';
import { dot } from '../../src/signals/embedding/drift';
import { hasInt8Dot, int8WeightBits, readCpuinfo } from '../../src/signals/embedding/int8-weights';
import { loadManifest } from '../../src/signals/embedding/manifest';
import { renderBackground, renderCharacter } from '../helpers/synthetic-art';
import { makeClip } from '../helpers/synthetic-video';

const CLI = path.resolve(__dirname, '../../dist/cli/main.js');
const V1 = 'kagami-descriptor-v1';
const V2 = 'kagami-descriptor-v2';

/**
 * The CLI with KAGAMI_MODEL set to `model`, or unset (undefined: the library's model, else the
 * default), and KAGAMI_INT8_WEIGHTS set to `weights`, or unset (the CPU picks).
 */
function kagami(args: string[], model: string | undefined, weights?: 7 | 8): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...process.env, KAGAMI_MODEL: model, KAGAMI_INT8_WEIGHTS: weights === undefined ? undefined : String(weights) };
  if (model === undefined) delete env.KAGAMI_MODEL;
  if (weights === undefined) delete env.KAGAMI_INT8_WEIGHTS;
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { env });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

async function features(dir: string): Promise<ReferenceFeatures[]> {
  const lib = await openLibrary(dir, { create: false });
  try {
    return (await lib.store.loadFeatures()).features;
  } finally {
    await lib.store.close();
  }
}

let dir: string;
let lib: string;
let clip: string;
const art: string[] = [];

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} missing: run 'npm run build' (npm test does it)`);
  dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-reembed-'));
  lib = path.join(dir, 'lib');
  for (const seed of [21, 22]) {
    const f = path.join(dir, `char${seed}.png`);
    writeFileSync(f, await renderCharacter(seed, 400, { styleSeed: 6 }));
    art.push(f);
  }
  clip = path.join(dir, 'clip.mp4');
  await makeClip({
    out: clip, width: 960, height: 540, durationSec: 6, background: await renderBackground(5, 1300, 540),
    appearances: [{ png: await renderCharacter(21, 400, { styleSeed: 6 }), startSec: 1, endSec: 4, heightFrac: 0.5, x: 0.3, y: 0.25, drift: 30 }],
  });
}, 120_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('a v1 library moves to v2: same vectors as registering under v2, old model refused, the character still found', async () => {
  for (const [i, f] of art.entries()) {
    const r = await kagami(['library', 'add', '--library', lib, '--character', `hero-${i}`, '--name', `Hero ${i}`, '--owner', 'studio', f], V1);
    expect(r.code).toBe(0);
  }
  const before = await kagami(['scan', '--library', lib, '--json', clip], V1);
  expect(before.code).toBe(1);
  expect(JSON.parse(before.stdout).matches[0].characterId).toBe('hero-0');
  const v1 = await features(lib);

  const r = await kagami(['library', 'reembed', '--library', lib, '--model', V2], V1);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(new RegExp(`moved from ${V1} to ${V2}: 2 reference\\(s\\) embedded and their keypoints extracted again`));

  // Each reference's features are what registering the stored file anew under v2 gives.
  const v2 = await features(lib);
  expect(v2.map((f) => f.referenceId)).toEqual(v1.map((f) => f.referenceId));
  const fresh = path.join(dir, 'fresh');
  for (const [i, f] of art.entries()) {
    expect((await kagami(['library', 'add', '--library', fresh, '--character', `hero-${i}`, '--name', `Hero ${i}`, '--owner', 'studio', f], V2)).code).toBe(0);
  }
  const direct = await features(fresh);
  for (const [i, f] of v2.entries()) {
    expect(f.embedding).toHaveLength(direct[i].embedding.length);
    expect(Buffer.from(f.keypoints).equals(Buffer.from(direct[i].keypoints))).toBe(true);
    expect(dot(f.embedding, direct[i].embedding)).toBeGreaterThan(0.9999);
    expect(dot(f.embedding, v1[i].embedding)).toBeLessThan(0.99); // really another model's vector
  }

  // The old model is refused with a clear error (exit 2), the new one finds the character.
  const stale = await kagami(['scan', '--library', lib, '--json', clip], V1);
  expect(stale.code).toBe(2);
  expect(stale.stderr).toMatch(/model_mismatch|kagami-descriptor-v2 embeddings/);
  const after = await kagami(['scan', '--library', lib, '--json', clip], V2);
  expect(after.code).toBe(1);
  expect(JSON.parse(after.stdout).matches[0].characterId).toBe('hero-0');
  // With KAGAMI_MODEL unset the CLI follows the library's model (v2 here, not the default).
  const follow = await kagami(['scan', '--library', lib, '--json', clip], undefined);
  expect(follow.code).toBe(1);
  expect(JSON.parse(follow.stdout).model).toBe(V2);
  // Adding references with the old model is refused as well.
  expect((await kagami(['library', 'add', '--library', lib, '--character', 'hero-0', art[1]], V1)).code).toBe(2);
  // Listing it says which model it holds and that new libraries get another (only reembed moves it).
  const list = await kagami(['library', 'list', '--library', lib], undefined);
  expect(list.code).toBe(0);
  expect(list.stdout).toContain(`model: ${V2} (new libraries get ${DEFAULT_MODEL}; \`kagami library reembed\` moves this one to it)`);
  expect(JSON.parse((await kagami(['library', 'list', '--library', lib, '--json'], undefined)).stdout)).toMatchObject({ model: V2, defaultModel: DEFAULT_MODEL });
}, 240_000);

test('with KAGAMI_MODEL unset a new library gets the default model, and reembed without --model moves to it', async () => {
  const lib3 = path.join(dir, 'lib3');
  expect((await kagami(['library', 'add', '--library', lib3, '--character', 'hero-0', '--name', 'Hero 0', '--owner', 'studio', art[0]], V1)).code).toBe(0);
  const r = await kagami(['library', 'reembed', '--library', lib3], undefined);
  expect(r.code).toBe(0);
  expect(r.stdout).toContain(`moved from ${V1} to ${DEFAULT_MODEL}`);
  const listed = await kagami(['library', 'list', '--library', lib3], undefined);
  // the default already: no hint; its int8 weights, the ones this CPU runs
  expect(listed.stdout).toMatch(new RegExp(`\\nmodel: ${DEFAULT_MODEL} \\(${int8WeightBits('auto')}-bit int8 weights\\)\\n$`));
  const scan = await kagami(['scan', '--library', lib3, '--json', clip], undefined);
  expect(scan.code).toBe(1);
  expect(JSON.parse(scan.stdout)).toMatchObject({ model: DEFAULT_MODEL, matches: [{ characterId: 'hero-0' }] });
  // The report names the weights file that ran: the one this CPU loads for the model (7- or 8-bit).
  const weights = loadManifest(modelManifestPath(DEFAULT_MODEL)).modelPath;
  expect(JSON.parse(scan.stdout).modelSha256).toBe(createHash('sha256').update(readFileSync(weights)).digest('hex'));
  // Again with its own model (e.g. after an upgrade that changed how references are embedded or
  // their appearance templates are built): keypoints stored by an older version are replaced.
  const current = await features(lib3);
  const stale = await openLibrary(lib3, { create: false });
  try {
    await stale.store.replaceModel({ modelId: DEFAULT_MODEL, dimension: current[0].embedding.length }, [
      { referenceId: current[0].referenceId, embedding: current[0].embedding, keypoints: Buffer.from('keypoints of an older version') },
    ]);
  } finally {
    await stale.store.close();
  }
  const again = await kagami(['library', 'reembed', '--library', lib3], undefined);
  expect(again.code).toBe(0);
  expect(again.stdout).toContain(`library kept on ${DEFAULT_MODEL}: 1 reference(s) embedded and their keypoints extracted again`);
  expect(Buffer.from((await features(lib3))[0].keypoints).equals(Buffer.from(current[0].keypoints))).toBe(true);
}, 120_000);

test("an int8 library is scanned with the weights that embedded its references, and reembed records new ones", async () => {
  const lib4 = path.join(dir, 'lib4');
  const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
  const file7 = loadManifest(modelManifestPath(DEFAULT_MODEL), { int8Weights: 7 }).modelPath;
  const file8 = loadManifest(modelManifestPath(DEFAULT_MODEL), { int8Weights: 8 }).modelPath;
  expect(sha(file7)).not.toBe(sha(file8));
  // Registered by a process running the 7-bit weights (a CPU without int8 dot products, here forced).
  expect((await kagami(['library', 'add', '--library', lib4, '--character', 'hero-0', '--name', 'Hero 0', '--owner', 'studio', art[0]], undefined, 7)).code).toBe(0);
  expect(JSON.parse((await kagami(['library', 'list', '--library', lib4, '--json'], undefined)).stdout)).toMatchObject({ model: DEFAULT_MODEL, weightBits: 7 });
  expect((await kagami(['library', 'list', '--library', lib4], undefined)).stdout).toContain(`model: ${DEFAULT_MODEL} (7-bit int8 weights)\n`);
  // Any process scans it with those, whatever its own CPU would pick (this one: 8 where it has VNNI) ...
  const scan7 = await kagami(['scan', '--library', lib4, '--json', clip], undefined);
  expect(scan7.code).toBe(1);
  expect(JSON.parse(scan7.stdout)).toMatchObject({ modelSha256: sha(file7), matches: [{ characterId: 'hero-0' }] });
  expect(scan7.stderr).toBe('');
  // ... unless KAGAMI_INT8_WEIGHTS says otherwise.
  expect(JSON.parse((await kagami(['scan', '--library', lib4, '--json', clip], undefined, 8)).stdout).modelSha256).toBe(sha(file8));

  // Re-embedded by a process running the 8-bit weights: recorded, and scans follow.
  const r = await kagami(['library', 'reembed', '--library', lib4], undefined, 8);
  expect(r.code).toBe(0);
  expect(JSON.parse((await kagami(['library', 'list', '--library', lib4, '--json'], undefined)).stdout)).toMatchObject({ weightBits: 8 });
  const scan8 = await kagami(['scan', '--library', lib4, '--json', clip], undefined);
  expect(scan8.code).toBe(1);
  if (hasInt8Dot(process.arch, readCpuinfo())) {
    expect(JSON.parse(scan8.stdout).modelSha256).toBe(sha(file8));
    expect(scan8.stderr).toBe('');
  } else {
    // 8-bit weights would saturate here: the 7-bit ones run, and the operator is told.
    expect(JSON.parse(scan8.stdout).modelSha256).toBe(sha(file7));
    expect(scan8.stderr).toMatch(/8-bit int8 weights.*saturate.*kagami library reembed/);
  }
}, 180_000);

test('reembed refuses an unknown model and a missing library, changing nothing', async () => {
  const unknown = await kagami(['library', 'reembed', '--library', lib, '--model', 'no-such-model'], V2);
  expect(unknown.code).toBe(2);
  expect(unknown.stderr).toMatch(/no-such-model/);
  const missing = await kagami(['library', 'reembed', '--library', path.join(dir, 'nope')], V2);
  expect(missing.code).toBe(2);
  const lib2 = await openLibrary(lib, { create: false });
  try {
    expect((await lib2.store.getModel())?.modelId).toBe(V2);
  } finally {
    await lib2.store.close();
  }
}, 60_000);

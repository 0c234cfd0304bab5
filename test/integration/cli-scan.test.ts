/**
 * The main job end to end, through the real `kagami` binary: real ffmpeg clips generated here,
 * the real ONNX model, ORB in OpenCV's WASM build, the SQLite library on disk.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import { DEFAULT_MODEL, modelManifestPath } from '../../src/config';
import { loadManifest } from '../../src/signals/embedding/manifest';
import { renderBackground, renderCharacter } from '../helpers/synthetic-art';
import { makeClip, temporalIoU } from '../helpers/synthetic-video';

const CLI = path.resolve(__dirname, '../../dist/cli/main.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function kagami(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

// Characters 11 and 12 are registered; 13 is an unregistered look-alike drawn in the same style.
const STYLE = 4;
let dir: string;
let lib: string;
const art: Record<string, string> = {};
const clips: Record<string, string> = {};

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} missing: run 'npm run build' (npm test does it)`);
  dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-cli-'));
  lib = path.join(dir, 'lib');
  for (const seed of [11, 12, 13]) {
    const f = path.join(dir, `char${seed}.png`);
    writeFileSync(f, await renderCharacter(seed, 400, { styleSeed: STYLE }));
    art[seed] = f;
  }
  // The same character on a white canvas, as rightsholders often upload it.
  const white = path.join(dir, 'char12-white.png');
  writeFileSync(white, await renderCharacter(12, 400, { styleSeed: STYLE, canvas: '#ffffff' }));
  art['12w'] = white;

  const W = 1280;
  const H = 720;
  const bg = (seed: number) => renderBackground(seed, W + 400, H);
  clips.a = path.join(dir, 'a.mp4'); // char 11 from 2 s to 6 s, half the frame high, drifting right
  clips.b = path.join(dir, 'b.mp4'); // char 12 mirrored, tilted, hue-shifted, 1 s to 4 s
  clips.neg = path.join(dir, 'neg.mp4'); // only the unregistered look-alike 13
  const png = async (s: number) => renderCharacter(s, 400, { styleSeed: STYLE });
  await makeClip({ out: clips.a, width: W, height: H, durationSec: 8, background: await bg(1), appearances: [{ png: await png(11), startSec: 2, endSec: 6, heightFrac: 0.5, x: 0.2, y: 0.25, drift: 40 }] });
  await makeClip({ out: clips.b, width: W, height: H, durationSec: 6, background: await bg(2), appearances: [{ png: await png(12), startSec: 1, endSec: 4, heightFrac: 0.45, x: 0.55, y: 0.3, mirror: true, tilt: 12, hue: 25 }] });
  await makeClip({ out: clips.neg, width: W, height: H, durationSec: 6, background: await bg(3), appearances: [{ png: await png(13), startSec: 0, endSec: 6, heightFrac: 0.5, x: 0.3, y: 0.2, drift: 30 }] });
}, 180_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('library', () => {
  test('add registers characters and list shows them', async () => {
    let r = await kagami(['library', 'add', '--library', lib, '--character', 'hero-11', '--name', 'Hero Eleven', '--owner', 'studio-a', art[11]]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    r = await kagami(['library', 'add', '--library', lib, '--character', 'hero-12', '--name', 'Hero Twelve', '--owner', 'studio-b', art[12], art['12w']]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/2 reference\(s\) added/);
    // The same file again is a no-op, not a duplicate.
    r = await kagami(['library', 'add', '--library', lib, '--character', 'hero-12', art[12]]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/0 reference\(s\) added, 1 already present/);

    r = await kagami(['library', 'list', '--library', lib, '--json']);
    expect(r.code).toBe(0);
    const listed = JSON.parse(r.stdout);
    expect(listed.model).toBe(DEFAULT_MODEL); // KAGAMI_MODEL unset: a new library gets the default
    expect(listed.characters.map((c: { id: string; references: unknown[] }) => [c.id, c.references.length])).toEqual([
      ['hero-11', 1],
      ['hero-12', 2],
    ]);
  });
});

describe('scan', () => {
  test('finds the registered character in the right interval (exit 1)', async () => {
    const r = await kagami(['scan', '--library', lib, '--json', clips.a]);
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.stdout);
    expect(rep).toMatchObject({ video: clips.a, verdict: 'match' });
    expect(rep.durationSec).toBeCloseTo(8, 0);
    expect(rep.framesSampled).toBeGreaterThanOrEqual(16);
    const m = rep.matches.find((x: { characterId: string }) => x.characterId === 'hero-11');
    expect(m).toMatchObject({ name: 'Hero Eleven', owner: 'studio-a', verdict: 'match', kind: 'copy' });
    expect(m.score).toBeGreaterThan(0.6);
    expect(m.score).toBeLessThanOrEqual(1);
    expect(m.segments).toHaveLength(1);
    expect(temporalIoU(m.segments[0], { startSec: 2, endSec: 6 })).toBeGreaterThan(0.8);
    expect(m.evidence.timeSec).toBeGreaterThanOrEqual(2);
    expect(m.evidence.timeSec).toBeLessThanOrEqual(6);
    expect(m.evidence.referenceImage).toBe('char11.png');
    // The other registered character is not a match here.
    const other = rep.matches.find((x: { characterId: string }) => x.characterId === 'hero-12');
    expect(other?.verdict ?? 'clear').not.toBe('match');
  });

  test('finds a mirrored, tilted, recoloured appearance', async () => {
    const r = await kagami(['scan', '--library', lib, '--json', clips.b]);
    expect(r.code).toBe(1);
    const m = JSON.parse(r.stdout).matches[0];
    expect(m.characterId).toBe('hero-12');
    expect(m.evidence.mirrored).toBe(true);
    expect(temporalIoU(m.segments[0], { startSec: 1, endSec: 4 })).toBeGreaterThan(0.7);
  });

  test('a look-alike that is not registered stays clear (exit 0)', async () => {
    const r = await kagami(['scan', '--library', lib, '--json', clips.neg]);
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.verdict).not.toBe('match');
    expect(rep.matches.filter((x: { verdict: string }) => x.verdict === 'match')).toEqual([]);
  });

  test('--min-score 0 lists every candidate with its score', async () => {
    const r = await kagami(['scan', '--library', lib, '--json', '--min-score', '0', '--top', '50', clips.neg]);
    const rep = JSON.parse(r.stdout);
    expect(rep.matches.map((m: { characterId: string }) => m.characterId).sort()).toEqual(['hero-11', 'hero-12']);
    for (const m of rep.matches) {
      expect(m.score).toBeGreaterThanOrEqual(0);
      expect(m.score).toBeLessThan(0.6);
    }
  });

  test('a directory is scanned as an archive, one JSON line per video', async () => {
    const archive = path.join(dir, 'archive');
    mkdirSync(path.join(archive, 'sub'), { recursive: true });
    writeFileSync(path.join(archive, 'sub', 'a.mp4'), readBytes(clips.a));
    writeFileSync(path.join(archive, 'neg.mp4'), readBytes(clips.neg));
    writeFileSync(path.join(archive, 'notes.txt'), 'not a video');
    const r = await kagami(['scan', '--library', lib, '--jsonl', archive]);
    expect(r.code).toBe(1);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => path.basename(l.video))).toEqual(['neg.mp4', 'a.mp4']);
    expect(lines.map((l) => l.verdict)).toEqual(['clear', 'match']);
  });
});

describe('negative examples', () => {
  const scores = async (clip: string): Promise<Record<string, { score: number; verdict: string }>> => {
    const r = await kagami(['scan', '--library', lib, '--json', '--min-score', '0', '--top', '50', clip]);
    expect(r.stderr).toBe('');
    return Object.fromEntries(JSON.parse(r.stdout).matches.map((m: { characterId: string; score: number; verdict: string }) => [m.characterId, m]));
  };

  test("a look-alike added as a character's negative example no longer counts for it", async () => {
    const before = await scores(clips.neg);
    expect(before['hero-12'].score).toBeGreaterThan(0);
    let r = await kagami(['library', 'add', '--library', lib, '--character', 'hero-12', '--negative', art[13]]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/1 negative example\(s\) added/);
    r = await kagami(['library', 'list', '--library', lib]);
    expect(r.stdout).toMatch(/hero-12\tHero Twelve\tstudio-b\t2 reference\(s\), 1 negative example\(s\)/);

    const after = await scores(clips.neg);
    console.log(`hero-12 on the look-alike clip: ${before['hero-12'].score} before its negative example, ${after['hero-12'].score} after`);
    expect(after['hero-12'].score).toBeLessThan(0.5 * before['hero-12'].score);
    // The character's own appearances are still found, as copies.
    const own = await scores(clips.b);
    expect(own['hero-12']).toMatchObject({ verdict: 'match' });
  });

  test('an image cannot be both a reference and a negative example of a character', async () => {
    const r = await kagami(['library', 'add', '--library', lib, '--character', 'hero-12', '--negative', art[12]]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/char12\.png: this image is already a reference of hero-12/);
    const r2 = await kagami(['library', 'add', '--library', lib, '--character', 'hero-12', art[13]]);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/char13\.png: this image is already a negative example of hero-12/);
  });
});

function readBytes(f: string): Buffer {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require('node:fs').readFileSync(f);
}

describe('bad input: clear message, exit 2, library untouched', () => {
  const libState = () => {
    const db = path.join(lib, 'kagami.db');
    const blobs = path.join(lib, 'blobs');
    const count = readdirSync(blobs, { recursive: true }).length;
    return `${statSync(db).size}:${count}`;
  };

  test.each([
    ['a text file', 'notes.mp4', Buffer.from('this is not a video at all\n'), /notes\.mp4: not a readable video/],
    ['an empty file', 'empty.mp4', Buffer.alloc(0), /empty\.mp4: file is empty/],
  ])('scan of %s', async (_n, name, bytes, msg) => {
    const f = path.join(dir, name);
    writeFileSync(f, bytes);
    const r = await kagami(['scan', '--library', lib, f]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  test('a truncated video', async () => {
    const f = path.join(dir, 'truncated.mp4');
    writeFileSync(f, readBytes(clips.a).subarray(0, 3000));
    const r = await kagami(['scan', '--library', lib, f]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/truncated\.mp4: /);
  });

  test('a missing library', async () => {
    const r = await kagami(['scan', '--library', path.join(dir, 'nope'), clips.a]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/library not found/);
  });

  test('a missing video', async () => {
    const r = await kagami(['scan', '--library', lib, path.join(dir, 'missing.mp4')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/missing\.mp4: no such file/);
  });

  test('an image bomb as reference art is refused before decoding', async () => {
    const before = libState();
    // A small PNG whose header claims 30000×30000 pixels (900 Mpx): the classic decompression bomb.
    const bomb = path.join(dir, 'bomb.png');
    writeFileSync(bomb, pngBomb(30000, 30000));
    const r = await kagami(['library', 'add', '--library', lib, '--character', 'bomb', '--name', 'B', '--owner', 'x', art[13], bomb]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bomb\.png: image is 30000×30000/);
    expect(libState()).toBe(before);
    const list = JSON.parse((await kagami(['library', 'list', '--library', lib, '--json'])).stdout);
    expect(list.characters.map((c: { id: string }) => c.id)).not.toContain('bomb');
  });

  test('a non-image as reference art', async () => {
    const before = libState();
    const f = path.join(dir, 'fake.png');
    writeFileSync(f, 'GIF89a but not really');
    const r = await kagami(['library', 'add', '--library', lib, '--character', 'hero-11', f]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/fake\.png: not a supported image/);
    expect(libState()).toBe(before);
  });

  test('an unknown character', async () => {
    const r = await kagami(['library', 'remove', '--library', lib, 'nobody']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/character not found: nobody/);
    const r2 = await kagami(['library', 'add', '--library', lib, '--character', 'newbie', art[13]]);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/'newbie' is new: give its --name and --owner/);
  });

  test('bad flags are usage errors (2), not matches (1)', async () => {
    const r = await kagami(['scan', '--library', lib, '--min-score', '7', clips.a]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/between 0 and 1/);
  });

  test('a bad KAGAMI_WINDOWS is a clear configuration error (2), and a good one still finds the character', async () => {
    const bad = await kagami(['scan', '--library', lib, clips.a], { KAGAMI_WINDOWS: '0.35/2,huge' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/KAGAMI_WINDOWS: 'huge' is not size\/frameStep/);
    const good = await kagami(['scan', '--library', lib, '--json', clips.a], { KAGAMI_WINDOWS: '0.35/2,0.6/2,0.9/2' });
    expect(good.code).toBe(1);
    expect(JSON.parse(good.stdout).matches.find((x: { characterId: string }) => x.characterId === 'hero-11')).toMatchObject({ verdict: 'match' });
  });

  test('KAGAMI_DENSE_UP_TO=1 runs every window through the dense form, 0 every one as a crop, unset as the model says; both find the same character; a bad value is a configuration error', async () => {
    const bad = await kagami(['scan', '--library', lib, clips.a], { KAGAMI_DENSE_UP_TO: 'fast' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/KAGAMI_DENSE_UP_TO/);
    const args = ['scan', '--library', lib, '--json', '--min-score', '0', '--top', '50', clips.a];
    const dense = await kagami(args, { KAGAMI_DENSE_UP_TO: '1' });
    const crops = await kagami(args, { KAGAMI_DENSE_UP_TO: '0' });
    const unset = await kagami(args);
    expect(dense.code).toBe(1);
    const [d, c, u] = [JSON.parse(dense.stdout), JSON.parse(crops.stdout), JSON.parse(unset.stdout)];
    // Unset, the windows go the way the model's manifest says (dense.upTo: 1 for a model trained for
    // it): the same candidates and evidence as that way, and not as the other.
    const byModel = (loadManifest(modelManifestPath(DEFAULT_MODEL)).dense?.upTo ?? 0) === 1 ? d : c;
    expect(u.matches).toEqual(byModel.matches);
    expect(d.matches).not.toEqual(c.matches);
    expect(d.matches[0]).toMatchObject({ characterId: 'hero-11', verdict: 'match' });
    expect(temporalIoU(d.matches[0].segments[0], { startSec: 2, endSec: 6 })).toBeGreaterThan(0.8);
    // The copy rests on its keypoints, so both ways give it the same verdict and segments.
    expect(d.matches[0].segments).toEqual(c.matches[0].segments);
  });
});

/** A grey PNG with the given header size whose pixel data is a few zero rows, deflated. */
function pngBomb(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body) >>> 0);
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 0, 0, 0, 0], 8); // 8-bit greyscale
  const rows = deflateSync(Buffer.alloc((width + 1) * 64));
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([sig, chunk('IHDR', ihdr), chunk('IDAT', rows), chunk('IEND', Buffer.alloc(0))]);
}

/**
 * Frame sampling through the real ffmpeg: a clip whose colours change every second, top and bottom
 * halves in different colours, so each sampled frame's pixels say which second it came from and
 * where its rows begin. Frames are all collected before they are checked, so a frame whose buffer
 * was reused, or whose bytes were shifted by the read-ahead, shows the wrong colours.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { outputSize, resolveBinaries, sampleFrames } from '../../src/media/ffmpeg';
import type { Frame } from '../../src/media/types';

const run = promisify(execFile);
const COLOURS: Array<[number, number, number]> = [
  [220, 30, 30],
  [30, 200, 40],
  [40, 60, 220],
  [230, 230, 230],
  [20, 20, 20],
  [200, 200, 30],
];

let dir: string;
let clip: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-sample-'));
  clip = path.join(dir, 'colours.mp4');
  const hex = (c: number[]) => c.map((v) => v.toString(16).padStart(2, '0')).join('');
  const bottom = (i: number) => COLOURS[(i + 1) % COLOURS.length];
  const inputs = COLOURS.flatMap((c, i) => ['-f', 'lavfi', '-i', `color=c=0x${hex(c)}:s=640x360:r=25:d=1,drawbox=x=0:y=180:w=640:h=180:color=0x${hex(bottom(i))}:t=fill`]);
  const concat = COLOURS.map((_, i) => `[${i}:v]`).join('') + `concat=n=${COLOURS.length}:v=1:a=0[v]`;
  await run(resolveBinaries().ffmpeg, ['-y', '-hide_banner', '-loglevel', 'error', ...inputs, '-filter_complex', concat, '-map', '[v]', '-c:v', 'libx264', '-preset', 'veryfast', '-crf', '18', '-pix_fmt', 'yuv420p', clip]);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Mean RGB of rows [y0, y1) of a frame. */
const meanColour = (f: Frame, y0: number, y1: number): number[] => {
  const sum = [0, 0, 0];
  for (let i = y0 * f.width; i < y1 * f.width; i++) for (let k = 0; k < 3; k++) sum[k] += f.data[i * f.channels + k];
  return sum.map((s) => s / ((y1 - y0) * f.width));
};

/** The frame shows second `s`'s colours: top half COLOURS[s], bottom half the next one. */
const expectColoursOf = (f: Frame, s: number) => {
  const top = meanColour(f, 5, f.height / 2 - 5);
  const bottom = meanColour(f, f.height / 2 + 5, f.height - 5);
  const want = [COLOURS[s], COLOURS[(s + 1) % COLOURS.length]];
  for (let k = 0; k < 3; k++) {
    expect(Math.abs(top[k] - want[0][k])).toBeLessThan(12);
    expect(Math.abs(bottom[k] - want[1][k])).toBeLessThan(12);
  }
};

test.each([
  ['every frame decoded', false],
  ['non-reference frames skipped (the default at 2 fps)', undefined],
])('frames sampled at 2 fps carry their own pixels and timestamps, also when read ahead of a slow consumer: %s', async (_, skipNonReference) => {
  const frames: Frame[] = [];
  // A slow consumer: ffmpeg gets ahead, the read-ahead fills and pauses the pipe, and reads then
  // span frame boundaries (a consumer that keeps up gets one frame per ffmpeg write).
  for await (const f of sampleFrames(clip, { fps: 2, sceneThreshold: 0, maxFrames: 100, maxDurationSec: 60, maxWidth: 320, maxHeight: 320, skipNonReference })) {
    frames.push(f);
    await new Promise((r) => setTimeout(r, 40));
  }
  expect(frames.length).toBe(2 * COLOURS.length);
  frames.forEach((f, i) => {
    expect(f.index).toBe(i);
    expect(f.width).toBe(320);
    expect(f.height).toBe(180);
    expect(f.data.length).toBe(320 * 180 * 3);
    // Decoding everything, a slot's first frame (25 fps: 0, 0.52, 1, …); skipping, its first
    // reference frame (x264's B-frame runs here are at most 3 frames of 40 ms).
    expect(f.timeSec).toBeGreaterThanOrEqual(i * 0.5 - 1e-6);
    expect(f.timeSec).toBeLessThanOrEqual(i * 0.5 + (skipNonReference === false ? 0.041 : 0.161));
    expectColoursOf(f, Math.floor(f.timeSec));
  });
});

test('with non-reference frames skipped, each frame is the picture of the time it is reported at, at most a few frames after its slot began', async () => {
  // A white bar moves 4 px a frame (25 fps) over black: its position says which frame a picture is.
  const file = path.join(dir, 'bar.mp4');
  const graph = 'color=c=black:s=640x120:r=25:d=4[bg];color=c=white:s=8x120:r=25:d=4[bar];[bg][bar]overlay=x=4*n:shortest=1[v]';
  await run(resolveBinaries().ffmpeg, ['-y', '-hide_banner', '-loglevel', 'error', '-filter_complex', graph, '-map', '[v]', '-c:v', 'libx264', '-preset', 'veryfast', '-bf', '3', '-pix_fmt', 'yuv420p', file]);
  const barFrame = (f: Frame): number => {
    let best = 0;
    let at = 0;
    for (let x = 0; x < f.width; x++) {
      let v = 0;
      for (let y = 10; y < f.height - 10; y++) v += f.data[(y * f.width + x) * 3];
      if (v > best) (best = v), (at = x);
    }
    return Math.round((at - 3.5) / 4); // the bar's centre column is 4n + 3.5
  };
  const times: Record<string, number[]> = {};
  for (const skipNonReference of [false, true]) {
    const got: number[] = (times[String(skipNonReference)] = []);
    for await (const f of sampleFrames(file, { fps: 2, sceneThreshold: 0, maxFrames: 100, maxDurationSec: 60, maxWidth: 640, maxHeight: 640, skipNonReference })) {
      expect(barFrame(f)).toBe(Math.round(f.timeSec * 25));
      got.push(f.timeSec);
    }
  }
  // Every slot's first frame (25 fps: a slot starting between frames begins at the next one).
  expect(times.false).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((i) => Math.ceil(i * 12.5) / 25));
  expect(times.true).toHaveLength(8);
  // Some slot began on a skipped frame, so its sample came a frame or two later.
  expect(times.true.some((t, i) => t > times.false[i] + 1e-6)).toBe(true);
  times.true.forEach((t, i) => expect(t - times.false[i]).toBeLessThanOrEqual(0.121));
});

test('a sampling stopped early leaves no frame half-read: maxFrames frames, each whole', async () => {
  const frames: Frame[] = [];
  for await (const f of sampleFrames(clip, { fps: 2, sceneThreshold: 0, maxFrames: 3, maxDurationSec: 60, maxWidth: 320, maxHeight: 320 })) frames.push(f);
  expect(frames.map((f) => f.index)).toEqual([0, 1, 2]);
  for (const f of frames) expectColoursOf(f, Math.floor(f.timeSec));
});

test('ffmpeg fits frames into the box by the same rule as outputSize(): aspect kept, even sides, never upscaled', async () => {
  const sizes: Array<[number, number, number]> = [
    [334, 250, 200], // landscape, shrunk
    [250, 334, 200], // portrait, shrunk
    [202, 146, 960], // smaller than the box: kept
  ];
  for (const [w, h, box] of sizes) {
    const file = path.join(dir, `size-${w}x${h}.mp4`);
    await run(resolveBinaries().ffmpeg, ['-y', '-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', `testsrc=s=${w}x${h}:r=10:d=1`, '-c:v', 'libx264', '-pix_fmt', 'yuv420p', file]);
    const frames: Frame[] = [];
    for await (const f of sampleFrames(file, { fps: 2, sceneThreshold: 0, maxFrames: 2, maxDurationSec: 60, maxWidth: box, maxHeight: box })) frames.push(f);
    const want = outputSize(w, h, box, box);
    expect(frames.map((f) => [f.width, f.height, f.data.length])).toEqual([
      [want.width, want.height, want.width * want.height * 3],
      [want.width, want.height, want.width * want.height * 3],
    ]);
  }
});

test('an ffmpeg whose showinfo has no checksum option (older builds) still samples: once refused, it is run again without it', async () => {
  // A stand-in for such a build: it answers the option as those builds do, and otherwise runs the real ffmpeg.
  const real = resolveBinaries().ffmpeg;
  const old = path.join(dir, 'ffmpeg-old');
  let calls = 0;
  const log = path.join(dir, 'ffmpeg-old.calls');
  writeFileSync(
    old,
    `#!/bin/sh\necho call >> '${log}'\ncase "$*" in\n  *checksum=0*) echo "[Parsed_showinfo_2 @ 0x1] Option 'checksum' not found" >&2; exit 1;;\nesac\nexec '${real}' "$@"\n`,
  );
  chmodSync(old, 0o755);
  const bins = { ffmpeg: old, ffprobe: resolveBinaries().ffprobe };
  for (let pass = 0; pass < 2; pass++) {
    const frames: Frame[] = [];
    for await (const f of sampleFrames(clip, { fps: 1, sceneThreshold: 0, maxFrames: 100, maxDurationSec: 60, maxWidth: 320, maxHeight: 320 }, bins)) frames.push(f);
    expect(frames.map((f) => f.timeSec)).toEqual([0, 1, 2, 3, 4, 5]);
    frames.forEach((f, s) => expectColoursOf(f, s));
    calls = readFileSync(log, 'utf8').split('\n').filter(Boolean).length;
    // The first sampling is refused once and run again; the binary is remembered after that.
    expect(calls).toBe(pass === 0 ? 2 : 3);
  }
});

/**
 * The in-process MP4/MOV probe (src/media/iso-probe.ts) against ffprobe on files the real ffmpeg
 * writes: where it answers, it answers what ffprobe does; where it is not sure (another container,
 * a fragmented or truncated MP4, a codec it does not name), it steps aside and probeVideo gives
 * ffprobe's answer or ffprobe's error.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ffprobeVideo, probeVideo, resolveBinaries } from '../../src/media/ffmpeg';
import { probeIsoVideo } from '../../src/media/iso-probe';
import type { VideoInfo } from '../../src/media/types';

jest.setTimeout(120_000);

const run = promisify(execFile);
let dir: string;
let encoders = '';
const SRC = ['-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=24:duration=3'];
const TONE = ['-f', 'lavfi', '-i', 'sine=frequency=440:duration=3'];

async function ffmpeg(name: string, args: string[]): Promise<string> {
  const out = path.join(dir, name);
  await run(resolveBinaries().ffmpeg, ['-y', '-hide_banner', '-loglevel', 'error', ...args, out]);
  return out;
}

const h264 = ['-c:v', 'libx264', '-preset', 'veryfast', '-pix_fmt', 'yuv420p'];

/** The first `fraction` of a file ffmpeg writes, as an upload cut off there. */
async function cutOff(name: string, args: string[], fraction: number): Promise<string> {
  const full = readFileSync(await ffmpeg(`whole-${name}`, args));
  const cut = path.join(dir, name);
  writeFileSync(cut, full.subarray(0, Math.floor(full.length * fraction)));
  return cut;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kagami-probe-'));
  encoders = (await run(resolveBinaries().ffmpeg, ['-hide_banner', '-encoders'])).stdout;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function expectSameInfo(mine: VideoInfo | undefined, ff: VideoInfo): void {
  expect(mine).toBeDefined();
  expect({ width: mine!.width, height: mine!.height, codec: mine!.codec, frameCount: mine!.frameCount }).toEqual({
    width: ff.width,
    height: ff.height,
    codec: ff.codec,
    frameCount: ff.frameCount,
  });
  expect(Math.abs(mine!.durationSec - ff.durationSec)).toBeLessThan(0.05);
  expect(Math.abs(mine!.fps - ff.fps)).toBeLessThan(0.01);
}

describe('files the in-process probe reads', () => {
  // The encoder each needs beyond libx264 ('' for none): jest passes a row's items as arguments, and
  // a row shorter than the test function's parameter list would make the last one jest's `done`.
  const cases: Array<[string, () => Promise<string>, string]> = [
    ['H.264 MP4, index at the end', () => ffmpeg('end.mp4', [...SRC, ...h264]), ''],
    ['H.264 MP4, index first (faststart)', () => ffmpeg('fast.mp4', [...SRC, ...h264, '-movflags', '+faststart']), ''],
    ['H.264 QuickTime MOV', () => ffmpeg('clip.mov', [...SRC, ...h264]), ''],
    ['H.264 MP4 with the audio track first', () => ffmpeg('audio-first.mp4', [...SRC, ...TONE, '-map', '1:a', '-map', '0:v', ...h264, '-c:a', 'aac']), ''],
    ['H.264 MP4 at 29.97 fps', () => ffmpeg('ntsc.mp4', ['-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30000/1001:duration=2', ...h264]), ''],
    ['HEVC MP4', () => ffmpeg('hevc.mp4', [...SRC, '-c:v', 'libx265', '-tag:v', 'hvc1', '-x265-params', 'log-level=error']), 'libx265'],
    ['VP9 MP4', () => ffmpeg('vp9.mp4', [...SRC, '-c:v', 'libvpx-vp9', '-b:v', '200k']), 'libvpx-vp9'],
  ];
  it.each(cases)('%s: the same size, codec, frames, duration and rate as ffprobe', async (_name, make, encoder) => {
    if (encoder && !encoders.includes(encoder)) {
      // This ffmpeg cannot write the format; H.264 (always there) carries the assertions.
      expect(encoders).toContain('libx264');
      return;
    }
    const file = await make();
    const ff = await ffprobeVideo(file);
    expectSameInfo(probeIsoVideo(file), ff);
    expectSameInfo(await probeVideo(file), ff);
  });
});

describe('files it leaves to ffprobe', () => {
  const same = async (file: string) => {
    const ff = await ffprobeVideo(file).then(
      (info) => ({ info }),
      (e: Error) => ({ error: e.message }),
    );
    const mine = await probeVideo(file).then(
      (info) => ({ info }),
      (e: Error) => ({ error: e.message }),
    );
    expect(mine).toEqual(ff);
    return ff;
  };
  const cases: Array<[string, () => Promise<string>, 'ok' | 'error']> = [
    ['Matroska', () => ffmpeg('clip.mkv', [...SRC, ...h264]), 'ok'],
    ['fragmented MP4', () => ffmpeg('frag.mp4', [...SRC, ...h264, '-movflags', 'frag_keyframe+empty_moov']), 'ok'],
    ['MPEG-4 part 2 in MP4 (a codec it does not name)', () => ffmpeg('mpeg4.mp4', [...SRC, '-c:v', 'mpeg4']), 'ok'],
    ['audio-only MP4', () => ffmpeg('tone.m4a', [...TONE, '-c:a', 'aac']), 'error'],
    ['an upload cut off before its index', () => cutOff('cut.mp4', [...SRC, ...h264], 0.6), 'error'],
    ['a faststart upload cut off in its data', () => cutOff('cut-fast.mp4', [...SRC, ...h264, '-movflags', '+faststart'], 0.3), 'ok'],
    [
      'text that begins like an MP4',
      async () => {
        const f = path.join(dir, 'fake.mp4');
        writeFileSync(f, Buffer.concat([Buffer.from([0, 0, 0, 16]), Buffer.from('ftypisom'), Buffer.alloc(4), Buffer.from('not a video at all\n'.repeat(50))]));
        return f;
      },
      'error',
    ],
  ];
  it.each(cases)('%s: probeVideo answers as ffprobe does', async (_name, make, expected) => {
    const file = await make();
    expect(probeIsoVideo(file)).toBeUndefined();
    const ff = await same(file);
    expect('info' in ff ? 'ok' : 'error').toBe(expected);
  });
});

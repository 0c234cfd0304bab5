/**
 * The one adapter around ffmpeg/ffprobe (through fluent-ffmpeg, which is archived upstream: keep
 * every use of it in this file so it can be replaced).
 *
 * Binaries: an explicitly configured path wins, then `ffmpeg`/`ffprobe` on PATH (a system build is
 * usually newer), then the static builds shipped in @ffmpeg-installer / @ffprobe-installer so that
 * `npm install` alone is enough.
 */
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import ffmpeg from 'fluent-ffmpeg';
import { InvalidMediaError } from '../errors';
import type { Frame } from './types';

export interface FfmpegBinaries {
  ffmpeg: string;
  ffprobe: string;
}

function onPath(name: string): string | undefined {
  const r = spawnSync(name, ['-version'], { stdio: 'ignore' });
  return r.status === 0 ? name : undefined;
}

function packaged(pkg: string): string | undefined {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require(pkg) as { path: string }).path;
  } catch {
    return undefined;
  }
}

let resolved: FfmpegBinaries | undefined;

/** Resolves (once) which ffmpeg and ffprobe to run. */
export function resolveBinaries(configured: Partial<FfmpegBinaries> = {}): FfmpegBinaries {
  if (resolved && !configured.ffmpeg && !configured.ffprobe) return resolved;
  const ff = configured.ffmpeg ?? onPath('ffmpeg') ?? packaged('@ffmpeg-installer/ffmpeg');
  const fp = configured.ffprobe ?? onPath('ffprobe') ?? packaged('@ffprobe-installer/ffprobe');
  if (!ff || !fp) {
    throw new Error('no ffmpeg/ffprobe found: install ffmpeg or reinstall the npm dependencies');
  }
  resolved = { ffmpeg: ff, ffprobe: fp };
  return resolved;
}

export interface VideoInfo {
  durationSec: number;
  width: number;
  height: number;
  /** Average frame rate, frames per second (0 when unknown). */
  fps: number;
  codec: string;
  frameCount?: number;
}

/** Reads the container and first video stream; throws InvalidMediaError for anything that is not a playable video. */
export async function probeVideo(file: string, bins = resolveBinaries()): Promise<VideoInfo> {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    throw new InvalidMediaError(file, 'file not found or not readable');
  }
  if (size === 0) throw new InvalidMediaError(file, 'file is empty (0 bytes)');
  const cmd = ffmpeg(file).setFfprobePath(bins.ffprobe);
  const data = await new Promise<ffmpeg.FfprobeData>((resolve, reject) =>
    cmd.ffprobe((err, d) => (err ? reject(err) : resolve(d))),
  ).catch((err: Error) => {
    const why = /Invalid data found|moov atom not found|End of file/i.exec(err.message)?.[0];
    throw new InvalidMediaError(file, why ? `not a readable video (${why})` : 'not a readable video', { cause: err });
  });
  const stream = data.streams.find((s) => s.codec_type === 'video' && s.disposition?.attached_pic !== 1);
  if (!stream) throw new InvalidMediaError(file, 'no video stream');
  if (!stream.codec_name || stream.codec_name === 'unknown') {
    throw new InvalidMediaError(file, 'unknown video codec');
  }
  const width = Number(stream.width) || 0;
  const height = Number(stream.height) || 0;
  if (!width || !height) throw new InvalidMediaError(file, 'video stream has no frame size');
  const durationSec = Number(data.format.duration ?? stream.duration) || 0;
  const [num, den] = String(stream.avg_frame_rate ?? stream.r_frame_rate ?? '0/1').split('/').map(Number);
  const fps = den ? num / den : 0;
  const frameCount = Number(stream.nb_frames) || undefined;
  return { durationSec, width, height, fps: Number.isFinite(fps) ? fps : 0, codec: stream.codec_name, frameCount };
}

export interface SampleOptions {
  /** Regular sampling rate, frames per second. */
  fps: number;
  /** Also take a frame at each scene change whose ffmpeg scene score exceeds this (0 disables). */
  sceneThreshold: number;
  /** Stop after this many frames. */
  maxFrames: number;
  /** Only look at the first this-many seconds. */
  maxDurationSec: number;
  /** Frames are scaled so they fit in this box, aspect kept (never upscaled). */
  maxWidth: number;
  maxHeight: number;
}

/** The size ffmpeg will scale frames of a `w`×`h` video to, given the box (even numbers, never larger). */
export function outputSize(w: number, h: number, maxW: number, maxH: number): { width: number; height: number } {
  const s = Math.min(1, maxW / w, maxH / h);
  const even = (v: number) => Math.max(2, Math.round((v * s) / 2) * 2);
  return { width: even(w), height: even(h) };
}

/**
 * Decodes the sampled frames of a video straight to raw RGB over a pipe (no temporary files).
 * A frame is taken when at least 1/fps seconds passed since the last taken one, or at a scene
 * change; its timestamp comes from ffmpeg's own `showinfo` for that frame, so it is exact.
 * Frames are yielded in order; stopping the iteration stops ffmpeg.
 */
export async function* sampleFrames(
  file: string,
  info: VideoInfo,
  opts: SampleOptions,
  bins = resolveBinaries(),
): AsyncGenerator<Frame> {
  const { width, height } = outputSize(info.width, info.height, opts.maxWidth, opts.maxHeight);
  const frameBytes = width * height * 3;
  const gap = 1 / opts.fps;
  // Keep the first frame of every 1/fps slot of the timeline (so 2 fps gives 0, 0.5, 1.0 s … on any
  // source frame rate) and, optionally, any frame where the scene score says the picture changed.
  const keep = [`isnan(prev_selected_t)`, `gt(floor(t*${opts.fps})\\,floor(prev_selected_t*${opts.fps}))`];
  if (opts.sceneThreshold > 0) keep.push(`gt(scene\\,${opts.sceneThreshold})`);
  const filter = [`select='${keep.join('+')}'`, 'showinfo', `scale=${width}:${height}:flags=area`, 'format=rgb24'].join(',');

  const times: number[] = [];
  const stderrTail: string[] = [];
  let ffError: Error | undefined;
  let ended = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };

  const cmd = ffmpeg(file)
    .setFfmpegPath(bins.ffmpeg)
    .inputOptions(['-nostdin', '-hide_banner'])
    .outputOptions(['-t', String(opts.maxDurationSec), '-vf', filter, '-vsync', '0', '-an', '-sn', '-f', 'rawvideo', '-pix_fmt', 'rgb24']);
  cmd.on('stderr', (line: string) => {
    const m = /\bn:\s*(\d+).*\bpts_time:\s*([-\d.e]+)/.exec(line);
    if (m && line.includes('Parsed_showinfo')) {
      times[Number(m[1])] = Number(m[2]);
      notify();
    } else {
      stderrTail.push(line);
      if (stderrTail.length > 20) stderrTail.shift();
    }
  });
  cmd.on('error', (err: Error) => {
    if (!/SIGKILL|SIGTERM|Output stream closed/.test(err.message)) ffError = err;
    ended = true;
    notify();
  });
  cmd.on('end', () => {
    ended = true;
    notify();
  });

  const out = cmd.pipe() as NodeJS.ReadableStream & { destroy(): void };
  const chunks: Buffer[] = [];
  let buffered = 0;
  let streamDone = false;
  out.on('data', (c: Buffer) => {
    chunks.push(c);
    buffered += c.length;
    if (buffered > frameBytes * 8) (out as unknown as { pause(): void }).pause();
    notify();
  });
  out.on('end', () => {
    streamDone = true;
    notify();
  });
  out.on('error', () => {
    streamDone = true;
    notify();
  });

  // Copies exactly one frame out of the queued chunks (pipe reads are ~64 KiB, a frame ~1.5 MB),
  // so taking a frame costs its own size, not the size of everything read ahead.
  const take = (): Buffer => {
    const frame = Buffer.allocUnsafe(frameBytes);
    let filled = 0;
    while (filled < frameBytes) {
      const c = chunks[0];
      const n = Math.min(c.length, frameBytes - filled);
      c.copy(frame, filled, 0, n);
      filled += n;
      if (n === c.length) chunks.shift();
      else chunks[0] = c.subarray(n);
    }
    buffered -= frameBytes;
    return frame;
  };

  let index = 0;
  try {
    while (index < opts.maxFrames) {
      if (buffered >= frameBytes && times[index] !== undefined) {
        const data = take();
        if (buffered < frameBytes * 8) (out as unknown as { resume(): void }).resume();
        yield { width, height, channels: 3, data, index, timeSec: times[index] };
        index++;
        continue;
      }
      if (buffered >= frameBytes && ended && streamDone) {
        // ffmpeg finished but the matching showinfo line never came: estimate from the sampling rate.
        const data = take();
        yield { width, height, channels: 3, data, index, timeSec: index * gap };
        index++;
        continue;
      }
      if (ended && streamDone) break;
      await new Promise<void>((r) => (wake = r));
    }
  } finally {
    if (!ended) cmd.kill('SIGKILL');
    out.destroy();
  }
  if (ffError && index === 0) {
    const reason = stderrTail.filter((l) => /error|invalid|not found|unsupported/i.test(l)).slice(-2).join('; ');
    throw new InvalidMediaError(file, `ffmpeg could not decode it${reason ? `: ${reason}` : ''}`, { cause: ffError });
  }
  if (index === 0) throw new InvalidMediaError(file, 'no frames could be decoded');
}

/**
 * The one adapter around ffmpeg/ffprobe. Probing goes through fluent-ffmpeg (archived upstream:
 * keep every use of it in this file so it can be replaced). Sampling spawns ffmpeg itself: fluent-
 * ffmpeg runs `ffmpeg -formats` and `ffmpeg -encoders` before the first command of every process
 * (~0.26 s with Debian's ffmpeg, measured), which a one-clip CLI scan pays in full, and the command
 * line is fixed anyway.
 *
 * Binaries: an explicitly configured path wins, then `ffmpeg`/`ffprobe` on PATH (a system build is
 * usually newer), then the static builds shipped in @ffmpeg-installer / @ffprobe-installer so that
 * `npm install` alone is enough.
 */
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';
import ffmpeg from 'fluent-ffmpeg';
import { InvalidMediaError } from '../errors';
import { probeIsoVideo } from './iso-probe';
import type { Frame, VideoInfo } from './types';

export interface FfmpegBinaries {
  ffmpeg: string;
  ffprobe: string;
}

/**
 * An executable `name` on PATH, found without running it (running `ffmpeg -version` to check costs
 * ~0.1 s per binary with a dynamically linked system build, in every process).
 */
function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      if (statSync(file).isFile()) return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

function packaged(pkg: string): string | undefined {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require(pkg) as { path: string }).path;
  } catch {
    return undefined;
  }
}

/** The static builds shipped in npm packages (the fallback), if installed. */
export function packagedBinaries(): Partial<FfmpegBinaries> {
  return { ffmpeg: packaged('@ffmpeg-installer/ffmpeg'), ffprobe: packaged('@ffprobe-installer/ffprobe') };
}

/** The first line of `ffmpeg -version` (e.g. "ffmpeg version 5.1.6-0+deb12u1 …"), for reports. */
export function binaryVersion(bin: string): string {
  const r = spawnSync(bin, ['-version'], { encoding: 'utf8' });
  return r.status === 0 ? (r.stdout.split('\n')[0] ?? '').replace(/\s*Copyright.*$/, '') : 'unknown';
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

export type { VideoInfo } from './types';

/** InvalidMediaError unless `file` is a readable, non-empty file (no process started). */
export function checkMediaFile(file: string): void {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    throw new InvalidMediaError(file, 'file not found or not readable');
  }
  if (size === 0) throw new InvalidMediaError(file, 'file is empty (0 bytes)');
}

/**
 * Reads the container and first video stream; throws InvalidMediaError for anything that is not a
 * playable video. A plain MP4/MOV is read in-process (iso-probe.ts); every other file, and any MP4
 * that probe is unsure of, goes to ffprobe.
 */
export async function probeVideo(file: string, bins = resolveBinaries()): Promise<VideoInfo> {
  checkMediaFile(file);
  return probeIsoVideo(file) ?? ffprobeVideo(file, bins);
}

/** probeVideo through ffprobe alone. */
export async function ffprobeVideo(file: string, bins = resolveBinaries()): Promise<VideoInfo> {
  checkMediaFile(file);
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
  /**
   * Let the decoder skip the frames no other frame is predicted from (ffmpeg `-skip_frame noref`:
   * most B-frames of H.264/HEVC, often over half of an encode's frames; ~24 % less decoding CPU on
   * the perf bench's clip). A sampled frame is then the first decoded one of its slot, a frame or
   * two after the slot's first frame, with its own exact timestamp; the scene score compares
   * decoded frames a few frames apart. Unset: on when fps ≤ SKIP_NONREF_MAX_FPS (common encoders'
   * runs of non-reference frames are a few frames, far shorter than a 250 ms slot), off above it.
   */
  skipNonReference?: boolean;
}

/** Sampling rates up to this one let the decoder skip non-reference frames unless told otherwise. */
export const SKIP_NONREF_MAX_FPS = 4;

/** Whether a sampling run skips non-reference frames (SampleOptions.skipNonReference). */
export function skipsNonReference(opts: Pick<SampleOptions, 'fps' | 'skipNonReference'>): boolean {
  return opts.skipNonReference ?? opts.fps <= SKIP_NONREF_MAX_FPS;
}

/** The size ffmpeg will scale frames of a `w`×`h` video to, given the box (even numbers, never larger). */
export function outputSize(w: number, h: number, maxW: number, maxH: number): { width: number; height: number } {
  const s = Math.min(1, maxW / w, maxH / h);
  const even = (v: number) => Math.max(2, Math.round((v * s) / 2) * 2);
  return { width: even(w), height: even(h) };
}

/**
 * What a sampling run asks of ffmpeg besides the output: the decoder's input options (skipping
 * non-reference frames, skipsNonReference) and the `select` filter that keeps the first frame of
 * every 1/fps slot of the timeline (so 2 fps gives 0, 0.5, 1.0 s … on any source frame rate) and,
 * optionally, any frame where the scene score says the picture changed. sampleFrames and the perf
 * bench's floor both use it, so the floor decodes and keeps the same frames.
 */
export function samplingSelection(opts: SampleOptions): { inputArgs: string[]; select: string } {
  const keep = [`isnan(prev_selected_t)`, `gt(floor(t*${opts.fps})\\,floor(prev_selected_t*${opts.fps}))`];
  if (opts.sceneThreshold > 0) keep.push(`gt(scene\\,${opts.sceneThreshold})`);
  return { inputArgs: skipsNonReference(opts) ? ['-skip_frame', 'noref'] : [], select: `select='${keep.join('+')}'` };
}

export interface SampleHooks {
  /** The container's duration, from ffmpeg's input header (before the first frame; not called when unknown). */
  onDuration?: (sec: number) => void;
}

/**
 * ffmpeg binaries whose showinfo filter has no `checksum` option. Elsewhere sampling turns the
 * per-frame checksums off: they are never read, and computing them over every sampled RGB frame
 * cost ~10 % of ffmpeg's time on a 720p clip (measured with ffmpeg 5.1).
 */
const showinfoWithoutChecksum = new Set<string>();

/**
 * Decodes the sampled frames of a video straight to raw RGB over a pipe (no temporary files).
 * A frame is taken when at least 1/fps seconds passed since the last taken one, or at a scene
 * change; its timestamp and size come from ffmpeg's own `showinfo` for that frame, so they are
 * exact. ffmpeg fits frames into the box itself (outputSize()'s rule as an ffmpeg expression), so
 * sampling needs no probe first and can run while the caller probes. Frames are yielded in order;
 * stopping the iteration stops ffmpeg.
 */
export async function* sampleFrames(file: string, opts: SampleOptions, bins = resolveBinaries(), hooks: SampleHooks = {}): AsyncGenerator<Frame> {
  const gap = 1 / opts.fps;
  const { inputArgs, select } = samplingSelection(opts);
  const fit = `min(1\\,min(${opts.maxWidth}/iw\\,${opts.maxHeight}/ih))`;
  const scale = `scale=w='max(2\\,2*round(iw*${fit}/2))':h='max(2\\,2*round(ih*${fit}/2))':flags=area`;
  const noChecksum = !showinfoWithoutChecksum.has(bins.ffmpeg);
  const filter = [select, scale, 'format=rgb24', noChecksum ? 'showinfo=checksum=0' : 'showinfo'].join(',');
  const args = ['-nostdin', '-hide_banner', ...inputArgs, '-i', file, '-t', String(opts.maxDurationSec), '-vf', filter, '-vsync', '0', '-an', '-sn', '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1'];

  const shown: Array<{ timeSec: number; width: number; height: number }> = [];
  const stderrTail: string[] = [];
  let ffError: Error | undefined;
  let ended = false;
  let streamDone = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };

  const proc = spawn(bins.ffmpeg, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let partial = '';
  let durationSeen = false;
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (text: string) => {
    const lines = (partial + text).split(/\r\n|\r|\n/);
    partial = lines.pop() ?? '';
    for (const line of lines) {
      const m = /\bn:\s*(\d+).*\bpts_time:\s*([-\d.e]+).*\bs:(\d+)x(\d+)/.exec(line);
      if (m && line.includes('Parsed_showinfo')) {
        shown[Number(m[1])] = { timeSec: Number(m[2]), width: Number(m[3]), height: Number(m[4]) };
        notify();
        continue;
      }
      const d = /^\s*Duration:\s*(\d+):(\d\d):(\d\d(?:\.\d+)?)/.exec(line);
      if (d && !durationSeen) {
        durationSeen = true;
        hooks.onDuration?.(Number(d[1]) * 3600 + Number(d[2]) * 60 + Number(d[3]));
      } else {
        stderrTail.push(line);
        if (stderrTail.length > 20) stderrTail.shift();
      }
    }
  });
  proc.on('error', (err: Error) => {
    ffError = err;
    ended = true;
    streamDone = true;
    notify();
  });
  proc.on('close', (code, signal) => {
    if (code !== 0 && signal === null) ffError ??= new Error(`ffmpeg exited with code ${code}`);
    ended = true;
    notify();
  });

  const out = proc.stdout;
  const chunks: Buffer[] = [];
  let buffered = 0;
  /** Read-ahead limit: about 8 frames of the last size seen (frames of 960x540 before any is seen). */
  let lastBytes = 960 * 540 * 3;
  out.on('data', (c: Buffer) => {
    chunks.push(c);
    buffered += c.length;
    if (buffered > lastBytes * 8) out.pause();
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
  const take = (frameBytes: number): Buffer => {
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
    if (buffered < lastBytes * 8) out.resume();
    return frame;
  };

  let index = 0;
  try {
    while (index < opts.maxFrames) {
      const info = shown[index];
      if (info) lastBytes = info.width * info.height * 3;
      if (info && buffered >= lastBytes) {
        yield { width: info.width, height: info.height, channels: 3, data: take(lastBytes), index, timeSec: info.timeSec };
        index++;
        continue;
      }
      const prev = shown[index - 1];
      if (!info && prev && ended && streamDone && buffered >= lastBytes) {
        // ffmpeg finished but the matching showinfo line never came: the previous frame's size, the
        // time estimated from the sampling rate.
        yield { width: prev.width, height: prev.height, channels: 3, data: take(lastBytes), index, timeSec: index * gap };
        index++;
        continue;
      }
      if (ended && streamDone) break;
      await new Promise<void>((r) => (wake = r));
    }
  } finally {
    if (!ended) proc.kill('SIGKILL');
    out.destroy();
  }
  if (ffError && index === 0 && noChecksum && stderrTail.some((l) => /option 'checksum' not found/i.test(l))) {
    // An ffmpeg older than showinfo's checksum option: run it again with the checksums it computes.
    showinfoWithoutChecksum.add(bins.ffmpeg);
    yield* sampleFrames(file, opts, bins, hooks);
    return;
  }
  if (ffError && index === 0) {
    const reason = stderrTail.filter((l) => /error|invalid|not found|unsupported|no such file/i.test(l)).slice(-2).join('; ');
    throw new InvalidMediaError(file, `ffmpeg could not decode it${reason ? `: ${reason}` : ''}`, { cause: ffError });
  }
  if (index === 0 && skipsNonReference(opts)) {
    // A stream whose every frame the decoder calls non-reference would give nothing: decode it all.
    yield* sampleFrames(file, { ...opts, skipNonReference: false }, bins, hooks);
    return;
  }
  if (index === 0) throw new InvalidMediaError(file, 'no frames could be decoded');
}

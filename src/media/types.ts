/** An 8-bit image, rows top to bottom, pixels interleaved (RGB: 3 bytes, RGBA: 4 bytes per pixel). */
export interface RawImage {
  width: number;
  height: number;
  channels: 3 | 4;
  data: Uint8Array;
}

/** A decoded video frame: always RGB, at the size it was sampled at. */
export interface Frame extends RawImage {
  channels: 3;
  /** 0-based position among the sampled frames. */
  index: number;
  /** Presentation time in seconds from the start of the video. */
  timeSec: number;
}

/** What a probe reads from a video's container and first video stream. */
export interface VideoInfo {
  durationSec: number;
  width: number;
  height: number;
  /** Average frame rate, frames per second (0 when unknown). */
  fps: number;
  /** ffprobe's name of the codec (h264, hevc, av1, vp9, ...). */
  codec: string;
  frameCount?: number;
}

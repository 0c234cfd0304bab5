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

import type { RawImage } from '../media/types';
import type { BackgroundBank } from './embedding/background-bank';
import type { ObjectnessProbe } from './embedding/objectness';

/** A square region of an image, in its pixels. */
export interface Region {
  x: number;
  y: number;
  size: number;
}

/**
 * Turns images into L2-normalised vectors; cosine similarity (dot product) compares them.
 * Images must already be at inputWidth × inputHeight (RGB, or RGBA whose alpha is ignored).
 * Not covered: resizing, cropping, which parts of a frame to embed.
 */
export interface Embedder {
  readonly modelId: string;
  /** sha256 of the weights file that runs (ONNX models: checked against the manifest on load). */
  readonly sha256?: string;
  readonly dimension: number;
  /** Int8 models with two weights files (manifest `weights8`): the ones this embedder runs. */
  readonly weightBits?: 7 | 8;
  readonly inputWidth: number;
  readonly inputHeight: number;
  /** `frame`: the model describes a whole frame; `crop`: one character in a crop (the scanner slides windows). */
  readonly usage: 'frame' | 'crop';
  /** Brings a frame to the model's input size with the model's own resize policy. */
  prepare(image: RawImage): Promise<RawImage>;
  /** Cosine between unrelated images (→ score 0) and the same character (→ 1), when the model knows it. */
  readonly calibration?: { floor: number; ceil: number; background?: { floor: number; ceil: number }; review?: number };
  /**
   * Crop models whose calibration has `background`: the character-free crops that the likeness tier
   * normalises against (background-bank.ts), loaded by `loadBackgroundBank`.
   */
  backgroundBank?(): Promise<BackgroundBank>;
  /** One vector per image, in order. */
  embed(images: RawImage[]): Promise<Float32Array[]>;
  /**
   * Crop models with a dense form (manifest `dense`): one vector per square region of `frame`, as
   * `embed` would give for the region's crop but with the region's surroundings in view; regions of
   * one size share one pass of the network over the whole frame, scaled so that they measure the
   * model's input size.
   */
  embedRegions?(frame: RawImage, regions: readonly Region[]): Promise<Float32Array[]>;
  /** With embedRegions: the windows up to this fraction of the frame height that a scan sends through it unless told otherwise (manifest `dense.upTo`). */
  readonly denseUpTo?: number;
  /** Crop models: the objectness probe of its manifest (a window scoring under `floor` shows scenery). */
  readonly objectness?: ObjectnessProbe;
  /** Frees what it holds (an inference thread); it is not used afterwards. */
  dispose?(): Promise<void>;
}

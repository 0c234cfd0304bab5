/**
 * The objectness probe of a crop model (manifest `objectness`, trained by training/objectness.js):
 * a logistic regression on a window's vector that tells a window holding a character, any
 * character, from one showing only scenery. It reads the vector the likeness tier has anyway, so
 * it costs one dot product a window.
 */
export interface ObjectnessProbe {
  weights: Float32Array;
  bias: number;
  /** Windows scoring under this are scenery (the scan's default; KAGAMI_OBJECTNESS_FLOOR overrides it). */
  floor: number;
}

/** The probability, in (0, 1), that the window whose vector is `v` holds a character. */
export function objectnessOf(probe: ObjectnessProbe, v: Float32Array): number {
  let z = probe.bias;
  const w = probe.weights;
  for (let i = 0; i < w.length; i++) z += w[i] * v[i];
  return 1 / (1 + Math.exp(-z));
}

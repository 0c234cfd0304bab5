/**
 * The project's seeded PRNG. Seeded streams make the synthetic art, the keypoint index's hashing
 * tables and the scanner's warm-up frame the same on every run and machine; they are not for
 * anything that must be unpredictable.
 */

export type Rng = () => number;

/** mulberry32 (a 32-bit state, one multiply-xorshift per draw): floats in [0, 1). */
export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

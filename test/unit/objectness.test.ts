/**
 * The objectness probe of a crop model (manifest `objectness`): read and checked with the manifest,
 * and scored as a logistic regression on a window's vector.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseManifest } from '../../src/signals/embedding/manifest';
import { objectnessOf } from '../../src/signals/embedding/objectness';

const file = path.join(__dirname, '../../models/kagami-descriptor-v11-int8.json');
const committed = JSON.parse(fs.readFileSync(file, 'utf8'));

test('the default descriptor ships a probe with one weight per dimension and a floor inside (0, 1)', () => {
  const m = parseManifest(committed, file, { int8Weights: 7 });
  expect(m.objectness?.weights).toHaveLength(m.output.dimension);
  expect(m.objectness!.floor).toBeGreaterThan(0);
  expect(m.objectness!.floor).toBeLessThan(1);
  expect(m.objectness!.trainedOn).toMatch(/training\/objectness\.js/);
});

test('a probe of the wrong length, on a frame model, or without its floor is refused with the field named', () => {
  const probe = committed.objectness;
  expect(() => parseManifest({ ...committed, objectness: { ...probe, weights: probe.weights.slice(1) } }, file)).toThrow(/objectness/);
  expect(() => parseManifest({ ...committed, usage: 'frame', objectness: probe }, file)).toThrow(/objectness/);
  const { floor: _floor, ...noFloor } = probe;
  expect(() => parseManifest({ ...committed, objectness: noFloor }, file)).toThrow(/objectness.floor/);
  expect(() => parseManifest({ ...committed, objectness: { ...probe, floor: 1.5 } }, file)).toThrow(/objectness.floor/);
});

test('the score is the logistic of the weighted sum plus the bias', () => {
  const probe = { weights: Float32Array.from([2, -1, 0.5]), bias: -0.25, floor: 0.5 };
  const v = Float32Array.from([0.5, 0.25, 1]);
  // z = 1 - 0.25 + 0.5 - 0.25 = 1
  expect(objectnessOf(probe, v)).toBeCloseTo(1 / (1 + Math.exp(-1)), 6);
  expect(objectnessOf(probe, Float32Array.from([0, 0, 0]))).toBeCloseTo(1 / (1 + Math.exp(0.25)), 6);
  expect(objectnessOf({ ...probe, bias: -40 }, v)).toBeLessThan(1e-12);
});

/**
 * A model manifest's likeness calibration: the review point (calibration.review) is read with the
 * rest and checked against the scale it is measured on.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseManifest } from '../../src/signals/embedding/manifest';

const file = path.join(__dirname, '../../models/kagami-descriptor-v11-int8.json');
const committed = JSON.parse(fs.readFileSync(file, 'utf8'));
const withCalibration = (calibration: unknown) => ({ ...committed, calibration });

test('the default descriptor names a review point between its floor and ceiling', () => {
  const m = parseManifest(committed, file, { int8Weights: 7 });
  const c = m.calibration!;
  expect(c.review).toBeGreaterThan(c.floor);
  expect(c.review).toBeLessThan(c.ceil);
});

test('a review point at or below the floor it is measured against is refused with the field named', () => {
  expect(() => parseManifest(withCalibration({ floor: 0.25, ceil: 0.9, review: 0.2 }), file)).toThrow(/calibration: calibration.review must lie above the floor/);
  // with a background margin, the margin's floor is the one that counts
  expect(() => parseManifest(withCalibration({ floor: 0.25, ceil: 0.9, background: { floor: 0.05, ceil: 0.3 }, review: 0.1 }), file)).not.toThrow();
  expect(() => parseManifest(withCalibration({ floor: 0.25, ceil: 0.9, background: { floor: 0.05, ceil: 0.3 }, review: 0.04 }), file)).toThrow(/review/);
  expect(() => parseManifest(withCalibration({ floor: 0.25, ceil: 0.9, review: 'high' }), file)).toThrow(/calibration.review/);
});

test('a manifest without a review point still loads (likeness alone then never reaches review)', () => {
  expect(parseManifest(withCalibration({ floor: 0.25, ceil: 0.9 }), file).calibration?.review).toBeUndefined();
});

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { modelManifestPath, readEnv } from '../../src/config';
import { hasInt8Dot, int8WeightBits, readCpuinfo, weightsForLibrary } from '../../src/signals/embedding/int8-weights';
import { parseManifest } from '../../src/signals/embedding/manifest';

/** A /proc/cpuinfo entry, cut down to the lines around `flags`. */
const cpuinfo = (flags: string) => `processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: test\nflags\t\t: ${flags}\nbugs\t\t: sysret_ss_attrs\n`;
const AVX2 = 'fpu vme de pse sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2';

describe('hasInt8Dot', () => {
  test('x86-64: VNNI (AVX512 or AVX) or AMX-INT8 in the flags', () => {
    expect(hasInt8Dot('x64', cpuinfo(`${AVX2} avx512f avx512bw avx512_vnni`))).toBe(true);
    expect(hasInt8Dot('x64', cpuinfo(`${AVX2} avx_vnni`))).toBe(true);
    expect(hasInt8Dot('x64', cpuinfo(`${AVX2} amx_bf16 amx_tile amx_int8`))).toBe(true);
  });

  test('x86-64 without them (AVX2, AVX512 before VNNI), or flags that cannot be read: no', () => {
    expect(hasInt8Dot('x64', cpuinfo(AVX2))).toBe(false);
    expect(hasInt8Dot('x64', cpuinfo(`${AVX2} avx512f avx512bw avx512vl`))).toBe(false);
    // a flag's name inside another's does not count
    expect(hasInt8Dot('x64', cpuinfo(`${AVX2} avx512_vnnix`))).toBe(false);
    expect(hasInt8Dot('x64', 'processor\t: 0\n')).toBe(false);
    expect(hasInt8Dot('x64', undefined)).toBe(false);
    expect(hasInt8Dot('ia32', cpuinfo(`${AVX2} avx512_vnni`))).toBe(false);
  });

  test('arm64 always (its int8 kernels accumulate in 32 bits)', () => {
    expect(hasInt8Dot('arm64', undefined)).toBe(true);
  });
});

describe('int8WeightBits and KAGAMI_INT8_WEIGHTS', () => {
  test('7 or 8 forces the weights; auto (the default) asks the CPU', () => {
    expect(int8WeightBits('7')).toBe(7);
    expect(int8WeightBits('8')).toBe(8);
    expect(int8WeightBits('auto')).toBe(hasInt8Dot(process.arch, readCpuinfo()) ? 8 : 7);
    expect(readEnv({} as NodeJS.ProcessEnv).KAGAMI_INT8_WEIGHTS).toBe('auto');
  });

  test('anything else is a configuration error', () => {
    expect(() => readEnv({ KAGAMI_INT8_WEIGHTS: '16' } as NodeJS.ProcessEnv)).toThrow(/KAGAMI_INT8_WEIGHTS/);
  });
});

describe('weightsForLibrary: the weights that embedded a library\'s references', () => {
  const vnni = () => true;
  const avx2 = () => false;

  test('are run again where the CPU allows, whatever it would pick for itself', () => {
    expect(weightsForLibrary(7, 'auto', vnni)).toEqual({ bits: 7 });
    expect(weightsForLibrary(8, 'auto', vnni)).toEqual({ bits: 8 });
    expect(weightsForLibrary(7, 'auto', avx2)).toEqual({ bits: 7 });
  });

  test('8-bit ones on a CPU that would saturate on them: 7-bit, with a note saying how to make them agree', () => {
    const w = weightsForLibrary(8, 'auto', avx2);
    expect(w.bits).toBe(7);
    expect(w.note).toMatch(/8-bit.*saturate.*7-bit.*kagami library reembed/);
  });

  test('KAGAMI_INT8_WEIGHTS, or a library that recorded none, leave the choice to the process', () => {
    expect(weightsForLibrary(8, '7', vnni)).toEqual({});
    expect(weightsForLibrary(7, '8', avx2)).toEqual({});
    expect(weightsForLibrary(undefined, 'auto', avx2)).toEqual({});
    expect(weightsForLibrary(undefined, 'auto', vnni)).toEqual({});
  });
});

describe('a manifest\'s weights8 variant', () => {
  const file = modelManifestPath('kagami-descriptor-v10-int8');
  const m = JSON.parse(readFileSync(file, 'utf8'));

  test('replaces the file, its sha256 and the dense form\'s when 8-bit weights are asked for', () => {
    const m7 = parseManifest(m, file, { int8Weights: 7 });
    const m8 = parseManifest(m, file, { int8Weights: 8 });
    expect(m7).toMatchObject({ file: m.file, sha256: m.sha256, weightBits: 7, dense: { file: m.dense.file, sha256: m.dense.sha256 } });
    expect(m8).toMatchObject({ file: m.weights8.file, sha256: m.weights8.sha256, weightBits: 8, dense: { file: m.weights8.dense.file, sha256: m.weights8.dense.sha256, stride: m.dense.stride } });
    expect(m8.modelPath).toBe(path.join(path.dirname(file), m.weights8.file));
    expect(m8.densePath).toBe(path.join(path.dirname(file), m.weights8.dense.file));
    expect(m8.lockPath).toBe(m7.lockPath);
  });

  test('a model without one loads as it is', () => {
    const f = parseManifest({ ...m, weights8: undefined }, file, { int8Weights: 8 });
    expect(f.file).toBe(m.file);
    expect(f.weightBits).toBeUndefined();
  });

  test('only for quantised models, with a dense form exactly when the model has one', () => {
    expect(() => parseManifest({ ...m, quantised: undefined }, file)).toThrow(/weights8: an 8-bit weights variant is for quantised models/);
    expect(() => parseManifest({ ...m, weights8: { file: m.weights8.file, sha256: m.weights8.sha256 } }, file)).toThrow(/weights8.dense/);
    expect(() => parseManifest({ ...m, weights8: { ...m.weights8, file: '../x.onnx' } }, file)).toThrow(/weights8.file/);
  });
});

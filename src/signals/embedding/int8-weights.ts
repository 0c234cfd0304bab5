/**
 * Which weights an int8 model runs with on this CPU.
 *
 * onnxruntime's u8 x s8 convolutions on x86-64 CPUs without VNNI multiply with VPMADDUBSW, which adds
 * two u8 x s8 products into an int16 and saturates: full 8-bit weights (up to 127) overflow there,
 * so Kagami's int8 descriptors hold 7-bit weights ([-63, 63], training/quantise.py). CPUs with
 * int8 dot-product instructions accumulate in int32 and cannot saturate: x86-64 with AVX-VNNI,
 * AVX512-VNNI or AMX-INT8 (measured on AVX512-VNNI), and arm64, whose kernels widen the products
 * (from onnxruntime's design; not measured, no arm64 machine here). There a manifest's `weights8`
 * variant (the same model and activation ranges, twice the weight resolution) runs instead: on
 * `kagami-descriptor-v10-int8` its vectors sit at a median cosine of 0.994 to the float model's,
 * against 0.982 for the 7-bit ones.
 */
import { readFileSync } from 'node:fs';
import { readEnv } from '../../config';

export type WeightBits = 7 | 8;

/** x86 cpuinfo flags of int8 dot products that accumulate in int32 (Linux names). */
const X86_INT8_DOT = ['avx512_vnni', 'avx_vnni', 'amx_int8'];

/**
 * Whether this CPU's int8 kernels take full 8-bit weights without saturating: arm64 always; x86-64
 * when the `flags` line of /proc/cpuinfo names VNNI or AMX-INT8; anything else (another OS, where
 * the flags cannot be read) is assumed not to.
 */
export function hasInt8Dot(arch: string, cpuinfo: string | undefined): boolean {
  if (arch === 'arm64') return true;
  if (arch !== 'x64' || !cpuinfo) return false;
  const line = cpuinfo.split('\n').find((l) => /^flags\s*:/.test(l));
  if (!line) return false;
  const flags = new Set(line.slice(line.indexOf(':') + 1).trim().split(/\s+/));
  return X86_INT8_DOT.some((f) => flags.has(f));
}

/** /proc/cpuinfo, or undefined where there is none (not Linux). */
export function readCpuinfo(): string | undefined {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return undefined;
  }
}

let detected: boolean | undefined;

/** hasInt8Dot for this process's CPU, read once. */
function thisCpuHasInt8Dot(): boolean {
  return (detected ??= hasInt8Dot(process.arch, readCpuinfo()));
}

/** The weights this process runs int8 models with: KAGAMI_INT8_WEIGHTS (7 or 8), else by the CPU. */
export function int8WeightBits(setting: string | undefined = readEnv().KAGAMI_INT8_WEIGHTS): WeightBits {
  if (setting === '7') return 7;
  if (setting === '8') return 8;
  return thisCpuHasInt8Dot() ? 8 : 7;
}

/**
 * The weights to run a library's int8 model with, so that scans compare vectors computed alike:
 * those that embedded its references (`recorded`, LibraryModel.weightBits), unless
 * KAGAMI_INT8_WEIGHTS says otherwise or this CPU would saturate on them (8-bit weights without
 * int8 dot products: then 7-bit, with a `note` for the operator; their vectors sit at a median
 * cosine of ~0.98 to the 8-bit ones on kagami-descriptor-v11-int8). A library that recorded none
 * (built before the weights were recorded, or with a model that has one weights file) gets the
 * process's own choice, as before.
 */
export function weightsForLibrary(
  recorded: WeightBits | undefined,
  setting: string | undefined = readEnv().KAGAMI_INT8_WEIGHTS,
  canRun8: () => boolean = thisCpuHasInt8Dot,
): { bits?: WeightBits; note?: string } {
  if (setting === '7' || setting === '8' || recorded === undefined) return {};
  if (recorded === 8 && !canRun8()) {
    return {
      bits: 7,
      note: "the library's references were embedded with 8-bit int8 weights, which this CPU's int8 kernels would saturate: scanning with the 7-bit ones (`kagami library reembed` on this machine makes the references agree)",
    };
  }
  return { bits: recorded };
}

/**
 * Model manifests (models/*.json): where an embedding model comes from, how it is built, and how
 * to feed it. The ONNX file is generated locally from the source package and checked against
 * `sha256`, so a manifest pins the exact bytes that produce the embeddings.
 */
import * as fs from 'fs';
import * as path from 'path';
import { z } from 'zod';

const rgbTriple = z.tuple([z.number(), z.number(), z.number()]);

export const ModelManifestSchema = z
  .object({
    id: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, 'lower-case id: letters, digits, . _ -'),
    description: z.string(),
    source: z.object({
      package: z.string().min(1),
      version: z.string().min(1),
      /** Paths relative to the package root: the layers-model module and its weight shards. */
      files: z.array(z.string().min(1)).min(2),
      licence: z.string().min(1),
    }),
    trunk: z.object({
      architecture: z.string().min(1),
      cutAfter: z.string().min(1),
    }),
    head: z.object({
      type: z.literal('gem-grid'),
      grid: z.number().int().min(1),
      p: z.number().positive(),
      eps: z.number().positive().optional(),
    }),
    /** ONNX file name, relative to the manifest's folder. */
    file: z.string().regex(/^[^/\\]+\.onnx$/, 'a plain *.onnx file name'),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'lower-case hex sha256'),
    input: z.object({
      name: z.string().min(1),
      width: z.number().int().positive(),
      height: z.number().int().positive(),
      layout: z.literal('NHWC'),
      channels: z.literal('RGB'),
      mean: rgbTriple,
      std: rgbTriple.refine((s) => s.every((v) => v > 0), 'std must be positive'),
    }),
    output: z.object({
      name: z.string().min(1),
      dimension: z.number().int().positive(),
      normalized: z.boolean(),
    }),
    licence: z.string().min(1),
  })
  .refine((m) => m.output.dimension % (m.head.grid * m.head.grid) === 0, {
    message: 'output.dimension must be grid*grid*channels',
    path: ['output', 'dimension'],
  });

export type ModelManifest = z.infer<typeof ModelManifestSchema>;

/** A validated manifest plus where it was read from. */
export interface LoadedManifest extends ModelManifest {
  /** Absolute path of the manifest file. */
  manifestPath: string;
  /** Absolute path of the ONNX file (manifest folder + `file`). */
  modelPath: string;
}

export function parseManifest(json: unknown, manifestPath: string): LoadedManifest {
  const r = ModelManifestSchema.safeParse(json);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new Error(`invalid model manifest ${manifestPath}: ${issues}`);
  }
  const abs = path.resolve(manifestPath);
  return { ...r.data, manifestPath: abs, modelPath: path.join(path.dirname(abs), r.data.file) };
}

export function loadManifest(manifestPath: string): LoadedManifest {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(manifestPath, 'utf8'));
  } catch (e) {
    throw new Error(`cannot read model manifest ${manifestPath}: ${(e as Error).message}`);
  }
  return parseManifest(json, manifestPath);
}

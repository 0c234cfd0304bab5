/**
 * Request and response schemas of API v1. Requests are validated with them, and the OpenAPI
 * document (openapi.ts) is generated from the same objects, so the two cannot drift apart.
 */
import { z } from 'zod';

export const ErrorBody = z.object({ error: z.object({ code: z.string(), message: z.string() }) }).meta({ id: 'Error' });

export const CharacterId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/, 'letters, digits, . _ : - (max 128), starting with a letter or digit');

export const CreateCharacter = z
  .object({
    id: CharacterId,
    name: z.string().trim().min(1).max(200),
    franchise: z.string().trim().min(1).max(200).optional(),
    owner: z.string().min(1).max(100).optional().describe('admins only: register on behalf of this rightsholder'),
  })
  .strict()
  .meta({ id: 'CreateCharacter' });

export const UpdateCharacter = z
  .object({ name: z.string().trim().min(1).max(200).optional(), franchise: z.string().trim().min(1).max(200).optional() })
  .strict()
  .meta({ id: 'UpdateCharacter' });

export const ReferenceView = z
  .object({
    id: z.string(),
    status: z.enum(['pending', 'ready', 'failed']),
    fileName: z.string(),
    width: z.number().int(),
    height: z.number().int(),
    createdAt: z.string(),
    error: z.string().optional(),
    warnings: z
      .array(z.string())
      .describe('quality warnings, `code: explanation`; codes: too_small, mostly_background, duplicate, conflicts_with_negative, conflicts_with_reference'),
    negative: z
      .boolean()
      .describe('a negative example: a look-alike this character is not; where it matches as well as the character, the character is not reported'),
  })
  .meta({ id: 'Reference' });

export const CharacterView = z
  .object({
    id: z.string(),
    name: z.string(),
    owner: z.string(),
    franchise: z.string().optional(),
    createdAt: z.string(),
    references: z.array(ReferenceView),
  })
  .meta({ id: 'Character' });

export const Segment = z.object({ startSec: z.number(), endSec: z.number() });

export const Verdict = z.enum(['match', 'review', 'clear']);
export const EffectiveVerdict = z
  .enum(['match', 'review', 'clear', 'allowed'])
  .describe('the verdict after decisions: licensed → allowed; false_match or dismissed → clear; confirmed → match');

const decision = <T extends readonly [string, ...string[]]>(values: T) =>
  z.object({ decision: z.enum(values), by: z.string().describe('tenant name'), at: z.string(), note: z.string().optional() });
export const MatchDecisions = z
  .object({
    owner: decision(['licensed', 'false_match'] as const)
      .extend({
        negativeReferenceId: z
          .string()
          .optional()
          .describe(
            'false_match with addNegative: the negative example it added to the character (a reference id; remove it with DELETE /v1/references/{id}). It stays when the decision is undone or changed, and may have been removed since',
          ),
      })
      .optional(),
    platform: decision(['confirmed', 'dismissed'] as const).optional(),
  })
  .meta({ id: 'MatchDecisions' });

export const DecideMatch = z
  .object({
    decision: z
      .enum(['licensed', 'false_match', 'confirmed', 'dismissed'])
      .describe('rightsholders: licensed (allowed use; later scans of the same video come out clear) or false_match; platforms: confirmed or dismissed'),
    note: z.string().trim().max(1000).optional(),
    addNegative: z
      .boolean()
      .optional()
      .describe(
        'false_match only: also register the evidence region (the evidence frame cut at evidence.box plus 10 % on each side; the whole frame without a box) as a negative example of the character, exactly like an upload to /v1/characters/{id}/references?negative=true. The reference id is returned as decisions.owner.negativeReferenceId; deciding again with the same evidence finds the same reference',
      ),
  })
  .strict()
  .refine((d) => !d.addNegative || d.decision === 'false_match', { message: 'only with the decision false_match', path: ['addNegative'] })
  .meta({ id: 'DecideMatch' });

export const ReportMatch = z
  .object({
    characterId: z.string(),
    name: z.string(),
    owner: z.string(),
    verdict: z.enum(['match', 'review', 'clear']),
    score: z.number().min(0).max(1),
    kind: z.enum(['copy', 'likeness']),
    segments: z.array(Segment),
    evidence: z.object({
      timeSec: z.number(),
      referenceImage: z.string(),
      referenceId: z.string(),
      similarity: z.number(),
      inliers: z.number().optional(),
      mirrored: z.boolean().optional(),
      box: z.object({ x: z.number(), y: z.number(), width: z.number(), height: z.number() }).optional(),
    }),
    framesMatched: z.number().int(),
    reason: z.string().describe('why; `licensed` when the rightsholder allowed this character in this video'),
    matchId: z.string().optional().describe('API only: the recorded match (for decisions and /v1/matches/{id}/frame)'),
    decisions: MatchDecisions.optional(),
    effectiveVerdict: EffectiveVerdict.optional(),
  })
  .meta({ id: 'ReportMatch' });

export const Report = z
  .object({
    video: z.string(),
    durationSec: z.number(),
    framesSampled: z.number().int(),
    verdict: z.enum(['match', 'review', 'clear']),
    effectiveVerdict: Verdict.optional().describe('API only: the clip verdict after decisions on its matches'),
    matches: z.array(ReportMatch),
    model: z.string(),
    modelSha256: z.string().optional().describe('sha256 of the model file that ran (an int8 model runs its 7-bit or 8-bit weights by the CPU)'),
    elapsedSec: z.number(),
  })
  .meta({ id: 'Report', description: 'Exactly the report `kagami scan --json` prints.' });

export const ScanView = z
  .object({
    id: z.string(),
    status: z.enum(['queued', 'running', 'done', 'failed']),
    progress: z.number().min(0).max(1),
    report: Report.nullable(),
    error: z.string().optional(),
    fileName: z.string(),
    batchId: z.string().optional(),
    createdAt: z.string(),
    startedAt: z.string().optional(),
    finishedAt: z.string().optional(),
  })
  .meta({ id: 'Scan' });

export const ScanByPath = z.object({ path: z.string().min(1).max(4096) }).strict().meta({ id: 'ScanByPath' });

export const WaitQuery = z.object({ wait: z.coerce.number().min(0).max(3600).optional() });
export const ReferenceUploadQuery = z.object({
  negative: z
    .enum(['true', 'false'])
    .optional()
    .transform((v) => v === 'true')
    .describe('true: the images are negative examples (look-alikes the character is not)'),
});
export const ListQuery = z.object({
  limit: z.coerce.number().int().min(1).max(1000).optional(),
  status: z.enum(['queued', 'running', 'done', 'failed']).optional(),
});

export const CreateBatch = z
  .object({ paths: z.array(z.string().min(1).max(4096)).min(1).max(100_000).optional(), directory: z.string().max(4096).optional() })
  .strict()
  .refine((b) => (b.paths ? 1 : 0) + (b.directory !== undefined ? 1 : 0) === 1, 'give exactly one of "paths" or "directory"')
  .meta({ id: 'CreateBatch' });

export const BatchView = z
  .object({
    id: z.string(),
    status: z.enum(['running', 'done']),
    total: z.number().int(),
    counts: z.object({ queued: z.number(), running: z.number(), done: z.number(), failed: z.number() }),
    progress: z.number(),
    createdAt: z.string(),
    finishedAt: z.string().optional(),
  })
  .meta({ id: 'Batch' });

export const ReportFormatQuery = z.object({ format: z.enum(['jsonl', 'csv']).default('jsonl') });

export const MatchView = z
  .object({
    id: z.string(),
    scanId: z.string(),
    platform: z.string().optional(),
    characterId: z.string(),
    owner: z.string(),
    verdict: z.enum(['match', 'review', 'clear']),
    score: z.number(),
    kind: z.enum(['copy', 'likeness']),
    segments: z.array(Segment),
    evidence: z.record(z.string(), z.unknown()),
    video: z.string(),
    createdAt: z.string(),
    characterName: z.string().optional(),
    decisions: MatchDecisions.optional(),
    effectiveVerdict: EffectiveVerdict,
  })
  .meta({ id: 'Match' });

export const MatchQuery = z.object({
  characterId: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
  before: z.string().optional(),
});

export const ReviewQuery = z.object({
  limit: z.coerce.number().int().min(1).max(1000).optional(),
  before: z.string().optional(),
});

export const SetWebhook = z
  .object({ url: z.url({ protocol: /^https?$/ }), secret: z.string().min(16).max(200).optional() })
  .strict()
  .meta({ id: 'SetWebhook' });

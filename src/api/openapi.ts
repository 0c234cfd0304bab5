/** The OpenAPI 3 document, generated from the zod schemas the routes validate with. */
import { z } from 'zod';
import * as S from './schemas';

const ref = (id: string) => ({ $ref: `#/components/schemas/${id}` });
const json = (schema: object) => ({ content: { 'application/json': { schema } } });
const errors = (...codes: number[]) =>
  Object.fromEntries(codes.map((c) => [String(c), { description: { 400: 'invalid request', 401: 'missing or unknown API key', 403: 'role not allowed', 404: 'not found (or another tenant’s)', 409: 'conflict', 413: 'too large', 422: 'unusable media' }[c] ?? 'error', ...json(ref('Error')) }]));
const idParam = (name: string) => ({ name, in: 'path', required: true, schema: { type: 'string' } });
const queryParams = (schema: z.ZodObject) =>
  Object.entries(z.toJSONSchema(schema, { target: 'openapi-3.0', io: 'input' }).properties ?? {}).map(([name, s]) => ({ name, in: 'query', required: false, schema: s }));

export function buildOpenApi(version: string): object {
  // Touch the schemas so their ids are registered before the registry is rendered.
  void [S.ErrorBody, S.CreateCharacter, S.UpdateCharacter, S.CharacterView, S.ScanView, S.ScanByPath, S.CreateBatch, S.BatchView, S.MatchView, S.SetWebhook, S.DecideMatch, S.MatchDecisions];
  const { schemas } = z.toJSONSchema(z.globalRegistry, { target: 'openapi-3.0', uri: (id) => `#/components/schemas/${id}`, io: 'input', unrepresentable: 'any' }) as { schemas: Record<string, object> };
  for (const s of Object.values(schemas)) delete (s as Record<string, unknown>).$schema;
  const multipart = (field: string, many: boolean) => ({
    content: {
      'multipart/form-data': {
        schema: { type: 'object', properties: { [field]: many ? { type: 'array', items: { type: 'string', format: 'binary' } } : { type: 'string', format: 'binary' } }, required: [field] },
      },
    },
  });
  return {
    openapi: '3.0.3',
    info: { title: 'Kagami API', version, description: 'Screen video clips for registered characters. Authenticate with `Authorization: Bearer <key>` (keys from `kagami keys create`).' },
    components: { schemas, securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    security: [{ bearer: [] }],
    paths: {
      '/v1/characters': {
        get: { summary: 'Your characters (rightsholder)', responses: { 200: { description: 'list', ...json({ type: 'object', properties: { characters: { type: 'array', items: ref('Character') } } }) }, ...errors(401) } },
        post: { summary: 'Register a character', requestBody: json(ref('CreateCharacter')), responses: { 201: { description: 'created', ...json(ref('Character')) }, ...errors(400, 401, 403, 409) } },
      },
      '/v1/characters/{id}': {
        parameters: [idParam('id')],
        get: { summary: 'A character with its references and their processing status', responses: { 200: { description: 'ok', ...json(ref('Character')) }, ...errors(401, 404) } },
        patch: { summary: 'Rename', requestBody: json(ref('UpdateCharacter')), responses: { 200: { description: 'ok', ...json(ref('Character')) }, ...errors(400, 401, 404) } },
        delete: { summary: 'Delete with its references', responses: { 204: { description: 'deleted' }, ...errors(401, 404) } },
      },
      '/v1/characters/{id}/references': {
        parameters: [idParam('id')],
        post: {
          summary: 'Upload reference images, or with ?negative=true negative examples (look-alikes the character is not); processed in the background',
          parameters: queryParams(S.ReferenceUploadQuery),
          requestBody: multipart('image', true),
          responses: { 202: { description: 'accepted', ...json(ref('Character')) }, ...errors(400, 401, 404, 409, 413, 422) },
        },
      },
      '/v1/references/{id}/image': { parameters: [idParam('id')], get: { summary: 'The reference file', responses: { 200: { description: 'image' }, ...errors(401, 404) } } },
      '/v1/references/{id}': { parameters: [idParam('id')], delete: { summary: 'Remove a reference', responses: { 204: { description: 'deleted' }, ...errors(401, 404) } } },
      '/v1/scans': {
        get: { summary: 'Your scans, newest first', parameters: queryParams(S.ListQuery), responses: { 200: { description: 'list', ...json({ type: 'object', properties: { scans: { type: 'array', items: ref('Scan') } } }) }, ...errors(401) } },
        post: {
          summary: 'Screen a clip (upload, or a path under the media root)',
          parameters: queryParams(S.WaitQuery),
          requestBody: { content: { ...multipart('video', false).content, ...json(ref('ScanByPath')).content } },
          responses: { 200: { description: 'finished within ?wait', ...json(ref('Scan')) }, 202: { description: 'queued', ...json(ref('Scan')) }, ...errors(400, 401, 403, 413, 422) },
        },
      },
      '/v1/scans/{id}': { parameters: [idParam('id')], get: { summary: 'Status, progress and report', parameters: queryParams(S.WaitQuery), responses: { 200: { description: 'ok', ...json(ref('Scan')) }, ...errors(401, 404) } } },
      '/v1/scans/{id}/evidence/{characterId}': { parameters: [idParam('id'), idParam('characterId')], get: { summary: 'The evidence frame (JPEG)', responses: { 200: { description: 'image/jpeg' }, ...errors(401, 404) } } },
      '/v1/batches': { post: { summary: 'Scan many files under the media root', requestBody: json(ref('CreateBatch')), responses: { 202: { description: 'accepted', ...json(ref('Batch')) }, ...errors(400, 401, 403) } } },
      '/v1/batches/{id}': { parameters: [idParam('id')], get: { summary: 'Batch progress', responses: { 200: { description: 'ok', ...json(ref('Batch')) }, ...errors(401, 404) } } },
      '/v1/batches/{id}/report': { parameters: [idParam('id')], get: { summary: 'Reports as JSONL or CSV', parameters: queryParams(S.ReportFormatQuery), responses: { 200: { description: 'application/x-ndjson or text/csv' }, ...errors(401, 404) } } },
      '/v1/matches': { get: { summary: 'Every match against your characters (rightsholder transparency)', parameters: queryParams(S.MatchQuery), responses: { 200: { description: 'list', ...json({ type: 'object', properties: { matches: { type: 'array', items: ref('Match') } } }) }, ...errors(401, 403) } } },
      '/v1/matches/{id}': { parameters: [idParam('id')], get: { summary: "A match (its character's rightsholder, or the platform whose scan found it)", responses: { 200: { description: 'ok', ...json(ref('Match')) }, ...errors(401, 404) } } },
      '/v1/matches/{id}/decision': {
        parameters: [idParam('id')],
        put: {
          summary: 'Decide on a match: rightsholders mark it licensed or false_match, platforms confirmed or dismissed (who and when are recorded)',
          description:
            'A rightsholder marking a match false_match can add `"addNegative": true`: the evidence region becomes a negative example of the character (processed in the background like an uploaded one; listed with the character\'s references, `negative: true`), so the look-alike stops hiding behind this character in later scans. Its id is in `decisions.owner.negativeReferenceId`. The negative example is a library item of its own: undoing or changing the decision does not remove it (use DELETE /v1/references/{id}). Errors: 400 `invalid_request` for addNegative with another decision; 403 `forbidden` for platforms; 409 `no_evidence_frame` when the match kept no evidence frame; 409 `conflict` when that image is already a (positive) reference of the character. Nothing is recorded when it fails.',
          requestBody: json(ref('DecideMatch')),
          responses: { 200: { description: 'the match with its effective verdict', ...json(ref('Match')) }, ...errors(400, 401, 403, 404, 409) },
        },
        delete: {
          summary: "Undo your side's decision",
          description: 'A negative example added with the decision (decisions.owner.negativeReferenceId) stays in the library; remove it with DELETE /v1/references/{id}.',
          responses: { 200: { description: 'the match', ...json(ref('Match')) }, ...errors(401, 404) },
        },
      },
      '/v1/reviews': {
        get: { summary: 'Review queue (platforms): matches in your scans with verdict review and no decision yet', parameters: queryParams(S.ReviewQuery), responses: { 200: { description: 'list', ...json({ type: 'object', properties: { reviews: { type: 'array', items: ref('Match') } } }) }, ...errors(401, 403) } },
      },
      '/v1/scans/{id}/reference/{characterId}': { parameters: [idParam('id'), idParam('characterId')], get: { summary: 'The reference image the match was found with', responses: { 200: { description: 'image' }, ...errors(401, 404) } } },
      '/v1/matches/{id}/frame': { parameters: [idParam('id')], get: { summary: 'The evidence frame of a match (JPEG)', responses: { 200: { description: 'image/jpeg' }, ...errors(401, 404) } } },
      '/v1/webhook': {
        get: { summary: 'Your webhook', responses: { 200: { description: 'ok' }, ...errors(401, 404) } },
        put: { summary: 'Set your webhook (HMAC-SHA256 signed POSTs)', requestBody: json(ref('SetWebhook')), responses: { 200: { description: 'ok' }, ...errors(400, 401) } },
        delete: { summary: 'Remove your webhook', responses: { 204: { description: 'deleted' }, ...errors(401, 404) } },
      },
      '/v1/webhook/deliveries': { get: { summary: 'Delivery log', responses: { 200: { description: 'ok' }, ...errors(401) } } },
      '/healthz': { get: { security: [], summary: 'Liveness', responses: { 200: { description: 'ok' } } } },
      '/readyz': { get: { security: [], summary: 'Readiness (database and Redis reachable)', responses: { 200: { description: 'ready' }, 503: { description: 'not ready' } } } },
      '/metrics': { get: { security: [], summary: 'Prometheus metrics', responses: { 200: { description: 'text/plain' } } } },
    },
  };
}

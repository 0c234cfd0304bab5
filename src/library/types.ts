/** Records of the reference library: who owns which character, and the art it is recognised by. */

export interface CharacterRecord {
  id: string;
  name: string;
  owner: string;
  franchise?: string;
  createdAt: string;
}

export type ReferenceStatus = 'pending' | 'ready' | 'failed';

export interface ReferenceRecord {
  id: string;
  characterId: string;
  /** sha256 of the file's bytes: the key of its blob. */
  sha256: string;
  /** The name the file was registered under (for people reading a report). */
  fileName: string;
  width: number;
  height: number;
  status: ReferenceStatus;
  error?: string;
  createdAt: string;
}

/** What the matchers need of a reference, computed once when it is added. */
export interface ReferenceFeatures {
  referenceId: string;
  characterId: string;
  /** Embedding by the library's model (L2-normalised). */
  embedding: Float32Array;
  /** Serialised keypoint sets (normal and mirrored), see signals/keypoints. */
  keypoints: Buffer;
}

/** The embedding model a library's vectors were made with; a library never mixes two. */
export interface LibraryModel {
  modelId: string;
  dimension: number;
}

/** One entry of the library's change log (see LibraryStore.changesSince). */
export type LibraryChange =
  | { seq: number; kind: 'reference_ready'; features: ReferenceFeatures }
  | { seq: number; kind: 'reference_removed'; referenceId: string; characterId: string }
  | { seq: number; kind: 'character_updated'; characterId: string }
  | { seq: number; kind: 'character_removed'; characterId: string };

export type TenantRole = 'rightsholder' | 'platform' | 'admin';

export interface TenantRecord {
  id: string;
  name: string;
  role: TenantRole;
  createdAt: string;
}

export interface ApiKeyRecord {
  id: string;
  tenantId: string;
  prefix: string;
  createdAt: string;
  revokedAt?: string;
}

export type ScanStatus = 'queued' | 'running' | 'done' | 'failed';

export interface ScanRecord {
  id: string;
  tenantId: string;
  batchId?: string;
  /** Where the video is: a blob key (uploaded) or a path under the media root. */
  source: { kind: 'blob'; key: string } | { kind: 'path'; path: string };
  /** The name people know the video by (upload file name or path). */
  fileName: string;
  status: ScanStatus;
  /** 0..1 */
  progress: number;
  /** The CLI report, once done. */
  report?: unknown;
  error?: string;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
}

export interface MatchRecord {
  id: string;
  scanId: string;
  /** The platform tenant whose scan found it. */
  tenantId: string;
  characterId: string;
  /** The character's owner at the time (a rightsholder's name). */
  owner: string;
  verdict: 'match' | 'review' | 'clear';
  score: number;
  kind: 'copy' | 'likeness';
  segments: Array<{ startSec: number; endSec: number }>;
  evidence: Record<string, unknown>;
  video: string;
  createdAt: string;
}

export interface BatchRecord {
  id: string;
  tenantId: string;
  status: 'running' | 'done';
  total: number;
  createdAt: string;
  finishedAt?: string;
}

export interface WebhookRecord {
  tenantId: string;
  url: string;
  /** Shared secret for the HMAC-SHA256 signature. */
  secret: string;
  createdAt: string;
}

export interface WebhookDeliveryRecord {
  id: string;
  tenantId: string;
  event: string;
  payload: unknown;
  status: 'pending' | 'delivered' | 'failed';
  attempts: number;
  lastError?: string;
  responseStatus?: number;
  createdAt: string;
}

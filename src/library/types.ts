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
  /**
   * Quality warnings found when the reference was processed (`code: explanation`, e.g.
   * `too_small: …`, `mostly_background: …`, `duplicate: …`); absent when there are none.
   */
  warnings?: string[];
  /**
   * A negative example: art of a look-alike that this character is NOT (another studio's character,
   * a generic design). Matched like a reference; in a frame where it matches, the character's hits
   * that are no stronger than it are dropped.
   */
  negative?: boolean;
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

/** A ready reference's features computed again (MetadataStore.replaceModel): its new embedding and, when given, new keypoints. */
export interface ReferenceReplacement {
  referenceId: string;
  embedding: Float32Array;
  keypoints?: Buffer;
}

/** The embedding model a library's vectors were made with; a library never mixes two. */
export interface LibraryModel {
  modelId: string;
  dimension: number;
  /**
   * Int8 models with two weights files (manifest `weights8`): those the references were embedded
   * with. Processes that load the library's model run these where the CPU allows
   * (weightsForLibrary), so a fleet of mixed CPUs compares vectors computed alike. Absent for
   * other models and for libraries from before it was recorded.
   */
  weightBits?: 7 | 8;
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
  /** What people decided about the match, per side; absent while nobody has. */
  decisions?: MatchDecisions;
}

/** A rightsholder's decision on a match of its character. */
export type OwnerDecision = 'licensed' | 'false_match';
/** A platform reviewer's decision on a match in its scan. */
export type PlatformDecision = 'confirmed' | 'dismissed';
export type DecisionSide = 'owner' | 'platform';

export interface MatchDecision<D extends string = string> {
  decision: D;
  /** The tenant name of who decided. */
  by: string;
  /** ISO timestamp of the decision. */
  at: string;
  note?: string;
  /**
   * Owner's `false_match` only: the negative example of the character that the decision added from
   * the evidence frame (a reference id). The reference is a library item of its own: undoing or
   * changing the decision leaves it, and it may have been removed since.
   */
  negativeReferenceId?: string;
}

export interface MatchDecisions {
  owner?: MatchDecision<OwnerDecision>;
  platform?: MatchDecision<PlatformDecision>;
}

/**
 * A video a character may appear in without being reported (its rightsholder licensed the use):
 * scans of the same video come out `clear` for that character with reason `licensed`.
 */
export interface ExclusionRecord {
  characterId: string;
  /** The video's identity: `sha256:<hex>` of an uploaded file, or `path:<real path>` under the media root. */
  video: string;
  reason: 'licensed';
  /** The match the decision was made on. */
  matchId?: string;
  /** Tenant name of who licensed it. */
  createdBy: string;
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

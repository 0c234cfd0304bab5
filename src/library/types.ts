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

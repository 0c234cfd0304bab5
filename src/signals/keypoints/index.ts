/** Verification tier: ORB local features + similarity-RANSAC geometric verification. */
export { getCv, withMats } from './opencv';
export type { Cv, Deletable } from './opencv';
export {
  extractFrameFeatures,
  extractGrayFeatures,
  frameLuma,
  extractReferenceFeatures,
  referenceMask,
  serializeKeypointSet,
  deserializeKeypointSet,
  DESCRIPTOR_BYTES,
  FRAME_ORB_DEFAULTS,
  REFERENCE_ORB_DEFAULTS,
  DEFAULT_FRAME_KEYPOINTS,
  DEFAULT_REFERENCE_KEYPOINTS,
} from './features';
export type { Box, KeypointSet, OrbParams, FrameFeatureOptions, ReferenceFeatureOptions } from './features';
export { compareAppearance, buildTemplate, mirrorTemplate, TEMPLATE_LONG_SIDE } from './appearance';
export type { AppearanceTemplate, AppearanceResult, GrayImage } from './appearance';
export { KeypointIndex, QUERY_DEFAULTS } from './keypoint-index';
export type { KeypointHit, QueryOptions, SimilarityTransform, ReferenceFeatures } from './keypoint-index';

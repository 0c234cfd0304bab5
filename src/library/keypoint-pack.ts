import { deserializeKeypointSet, serializeKeypointSet, type KeypointSet } from '../signals/keypoints';

/** Packs the normal and mirrored keypoint sets of a reference into one stored value. */
export function packKeypoints(normal: KeypointSet, mirrored: KeypointSet): Buffer {
  const a = serializeKeypointSet(normal);
  const b = serializeKeypointSet(mirrored);
  const head = Buffer.alloc(4);
  head.writeUInt32LE(a.length, 0);
  return Buffer.concat([head, a, b]);
}

export function unpackKeypoints(buf: Buffer): { normal: KeypointSet; mirrored: KeypointSet } {
  const n = buf.readUInt32LE(0);
  return { normal: deserializeKeypointSet(buf.subarray(4, 4 + n)), mirrored: deserializeKeypointSet(buf.subarray(4 + n)) };
}

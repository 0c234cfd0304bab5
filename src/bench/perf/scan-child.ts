/**
 * Child process of the bench's core-split measurement: loads the model (with `threads` intra-op
 * threads) and the library once, then scans the clips it is given, `concurrency` at a time, with
 * `scanThreads` keypoint threads, and prints one JSON line { ms } with the time spent scanning
 * (after loading; the pool's threads are started by a first scan before that).
 * argv: libraryDir threads concurrency scanThreads clip...
 */
import { openLibrary } from '../../library/library';
import { ReferenceSet } from '../../scan/reference-set';
import { DEFAULT_SCAN_OPTIONS, Scanner } from '../../scan/scanner';
import { loadProductEmbedder as loadEmbedder } from './fixtures';

async function main(): Promise<void> {
  const [lib, threads, concurrency, scanThreads, ...clips] = process.argv.slice(2);
  const embedder = await loadEmbedder(Number(threads));
  const l = await openLibrary(lib, { create: false });
  const refs = await ReferenceSet.load(l.store, embedder);
  await l.store.close();
  const scanner = new Scanner(embedder, refs, { ...DEFAULT_SCAN_OPTIONS, scanThreads: Number(scanThreads) });
  await scanner.scan({ file: clips[0], minScore: 0.35, top: 10 }); // warm-up: opencv-js in this thread or the pool's
  // tell the parent we are ready, wait for its go (so all children start together)
  process.stdout.write('ready\n');
  await new Promise<void>((r) => process.stdin.once('data', () => r()));
  const t0 = performance.now();
  const queue = [...clips];
  const lane = async () => {
    for (let c = queue.shift(); c; c = queue.shift()) await scanner.scan({ file: c, minScore: 0.35, top: 10 });
  };
  await Promise.all(Array.from({ length: Number(concurrency) }, lane));
  process.stdout.write(JSON.stringify({ ms: performance.now() - t0 }) + '\n');
  await scanner.dispose();
  await embedder.dispose();
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);

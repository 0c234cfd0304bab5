import { existsSync } from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from '../config';

/**
 * The compiled script of a worker thread, `dist/<relPath>`: beside the calling module when it runs
 * from dist/, else under the package's dist/ (ts-jest runs src/, but a Worker needs JavaScript).
 */
export function compiledWorkerScript(callerDir: string, relPath: string): string {
  const here = path.join(callerDir, path.basename(relPath));
  if (existsSync(here)) return here;
  const built = path.join(PACKAGE_ROOT, 'dist', relPath);
  if (existsSync(built)) return built;
  throw new Error(`worker script ${relPath} not found (${here}, ${built}); run \`npm run build\``);
}

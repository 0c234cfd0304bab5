import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { KagamiError } from '../errors';

const VIDEO_EXT = new Set(['.mp4', '.m4v', '.mov', '.mkv', '.webm', '.avi', '.mpg', '.mpeg', '.ts', '.flv', '.wmv', '.3gp', '.gif']);

/** Expands directories into the video files under them (sorted, recursive); files are kept as given. */
export function collectVideos(inputs: string[]): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && VIDEO_EXT.has(path.extname(e.name).toLowerCase())) out.push(p);
    }
  };
  for (const input of inputs) {
    let st;
    try {
      st = statSync(input);
    } catch {
      throw new KagamiError('file_not_found', `${input}: no such file or directory`);
    }
    if (st.isDirectory()) walk(input);
    else out.push(input);
  }
  return out;
}


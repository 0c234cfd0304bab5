/**
 * One-time loader for @techstark/opencv-js (OpenCV 4.12 compiled to WASM by emscripten).
 *
 * How the package signals readiness: `require()` returns the emscripten Module object
 * synchronously; its WASM runtime is initialised asynchronously (~0.1-0.2 s in Node).
 * Readiness is visible as `Module.calledRun === true`; otherwise `Module.onRuntimeInitialized`
 * is invoked when it finishes. The Module also carries an emscripten-style `then(cb)` method,
 * which makes it a *thenable* whose `then` passes the Module itself (still thenable) back:
 * `await`ing or returning it from an async function therefore recurses forever. We wait via the
 * callback and then delete the `then` property before the module is ever handed to a Promise.
 *
 * Memory: every cv.Mat / cv.KeyPointVector / algorithm object lives on the WASM heap and must
 * be released with `.delete()`; use {@link withMats} or try/finally.
 */
import type * as CvTypes from '@techstark/opencv-js';

export type Cv = typeof CvTypes;

let loading: Promise<Cv> | null = null;

/** Resolve once OpenCV's WASM runtime is ready. Loads the module on the first call only. */
export function getCv(): Promise<Cv> {
  if (!loading) {
    loading = new Promise<Cv>((resolve, reject) => {
      let mod: any;
      try {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        mod = require('@techstark/opencv-js');
      } catch (err) {
        reject(err);
        return;
      }
      const finish = (): void => {
        // Drop the self-referential thenable so the module can pass through promises.
        if (typeof mod.then === 'function') {
          try {
            delete mod.then;
          } catch {
            mod.then = undefined;
          }
        }
        resolve(mod as Cv);
      };
      if (mod instanceof Promise) {
        // Some builds export a real Promise of the module instead.
        (mod as Promise<any>).then((m) => {
          mod = m;
          finish();
        }, reject);
      } else if (mod.calledRun === true) {
        finish();
      } else {
        const prev = mod.onRuntimeInitialized;
        mod.onRuntimeInitialized = () => {
          if (typeof prev === 'function') prev();
          finish();
        };
        if (typeof mod.onAbort === 'undefined') mod.onAbort = (what: unknown) => reject(new Error(`opencv-js aborted: ${String(what)}`));
      }
    });
    loading.catch(() => {
      loading = null; // allow a retry after a failed load
    });
  }
  return loading;
}

/** Anything with a WASM-side destructor (cv.Mat, cv.KeyPointVector, cv.ORB, ...). */
export interface Deletable {
  delete(): void;
  isDeleted?: () => boolean;
}

/**
 * Run `fn` with a tracker that collects WASM objects; all of them are deleted afterwards,
 * whether `fn` returns or throws.
 */
export function withMats<T>(fn: (track: <M extends Deletable>(m: M) => M) => T): T {
  const owned: Deletable[] = [];
  const track = <M extends Deletable>(m: M): M => {
    owned.push(m);
    return m;
  };
  try {
    return fn(track);
  } finally {
    for (let i = owned.length - 1; i >= 0; i--) {
      const m = owned[i];
      try {
        if (!m.isDeleted || !m.isDeleted()) m.delete();
      } catch {
        /* already freed */
      }
    }
  }
}

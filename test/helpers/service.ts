/**
 * The service as the API suites run it, in process: the PostgreSQL store in a schema of its own,
 * the runtime with BullMQ on the real Redis, the API on port 0 and one worker.
 */
import { readEnv } from '../../src/config';
import { PostgresStore } from '../../src/library/postgres-store';
import { createRuntime, startApi, startWorker, type Runtime } from '../../src/service/runtime';

export const TEST_PG = process.env.KAGAMI_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const TEST_REDIS = process.env.KAGAMI_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export interface TestService {
  rt: Runtime;
  store: PostgresStore;
  /** http://127.0.0.1:<port> of the API. */
  base: string;
  /** Ends the worker, the API, the queues and the runtime (dropTestSchema removes the data). */
  stop(): Promise<void>;
}

/** Starts the service on `schema`; `vars` are environment settings on top of Redis, quiet logs and a 200 ms refresh. */
export async function startTestService(schema: string, vars: Record<string, string>): Promise<TestService> {
  const env = readEnv({ REDIS_URL: TEST_REDIS, KAGAMI_LOG_LEVEL: 'warn', KAGAMI_REFRESH_MS: '200', ...vars } as NodeJS.ProcessEnv);
  const store = await PostgresStore.connect(TEST_PG, { schema });
  const rt = await createRuntime(env, { store, queuePrefix: `test-${schema}` });
  const api = await startApi(rt, 0);
  const worker = startWorker(rt);
  await worker.ready; // the engine loaded and warmed up, as a deployed worker's before its first job
  return {
    rt,
    store,
    base: `http://127.0.0.1:${api.port}`,
    stop: async () => {
      await worker.close();
      await api.close();
      await rt.queues.obliterate().catch(() => undefined);
      await rt.close();
    },
  };
}

/** Drops a test schema and everything in it (also after a start that failed half-way). */
export async function dropTestSchema(schema: string): Promise<void> {
  const { Client } = await import('pg');
  const c = new Client({ connectionString: TEST_PG });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await c.end();
}

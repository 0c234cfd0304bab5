/** The queue dashboard (bull-board) as an Express router; the API mounts it for admins only. */
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Router } from 'express';
import type { JobQueues } from './job-queues';

export function queueBoard(queues: JobQueues, basePath = '/admin/queues'): Router {
  const adapter = new ExpressAdapter();
  adapter.setBasePath(basePath);
  createBullBoard({ queues: queues.all().map((q) => new BullMQAdapter(q, { readOnlyMode: false })), serverAdapter: adapter });
  return adapter.getRouter() as Router;
}

import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { ValidationError } from '../errors';
import type { TenantStore } from '../library/metadata-store';
import type { TenantRecord, TenantRole } from '../library/types';

export const ROLES: readonly TenantRole[] = ['rightsholder', 'platform', 'admin'];

export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/**
 * Creates an API key for the tenant `owner` (created with `role` if new). The key is returned once
 * and only its sha256 is stored, so a lost key cannot be recovered, only replaced.
 */
export async function createApiKey(store: TenantStore, owner: string, role: string): Promise<{ key: string; tenant: TenantRecord }> {
  if (!ROLES.includes(role as TenantRole)) throw new ValidationError(`unknown role '${role}': use one of ${ROLES.join(', ')}`);
  if (!/^[\p{L}\p{N}][\p{L}\p{N} ._-]{0,99}$/u.test(owner)) throw new ValidationError(`invalid owner name '${owner}'`);
  const tenant = await store.ensureTenant(owner, role as TenantRole);
  const key = `kgm_${randomBytes(24).toString('base64url')}`;
  await store.addApiKey({ id: randomUUID(), tenantId: tenant.id, hash: hashKey(key), prefix: key.slice(0, 8) });
  return { key, tenant };
}

export async function authenticate(store: TenantStore, key: string): Promise<TenantRecord | undefined> {
  if (!/^kgm_[A-Za-z0-9_-]{20,64}$/.test(key)) return undefined;
  return store.findTenantByKeyHash(hashKey(key));
}

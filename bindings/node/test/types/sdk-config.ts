// `tsc --noEmit` proves the package's types fit the Vana SDK's interface:
// `IAtomicStore` below is copied from the SDK v2.2.2 documentation
// (../shared/seed/IAtomicStore-v2.2.2.txt), and `Vana` has its config shape.
import { AtomicStore, type FencedLock } from '../../index.js';

interface IAtomicStore {
  incr(key: string): Promise<number>;
  acquireLock(key: string, ttlSeconds: number): Promise<string | null>;
  releaseLock(key: string, lockId: string): Promise<void>;
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<void>;
  setWithTTL?(key: string, value: string, ttlSeconds: number): Promise<void>;
  delete?(key: string): Promise<void>;
  eval?(script: string, keys: string[], args: string[]): Promise<any>;
}

// The SDK's fast path looks for this method on the store (`RedisAtomicStore`).
interface WithAtomicAssignNonce {
  atomicAssignNonce(lastUsedKey: string, pendingCount: number): Promise<number>;
}

declare function Vana(config: { privateKey: string | undefined; atomicStore?: IAtomicStore }): unknown;

const store = AtomicStore.open(process.env.ATOMIC_STORE_URL);
const asInterface: IAtomicStore = store;
const everyMethod: Required<IAtomicStore> & WithAtomicAssignNonce = store;
Vana({ privateKey: process.env.RELAYER_PRIVATE_KEY, atomicStore: store });

async function extras(): Promise<bigint | undefined> {
  const lock: FencedLock | null = await store.acquireFencedLock('k', 1.5);
  const outcome: 'released' | 'not_held' | 'held_by_other' = await store.releaseLockOutcome('k', lock?.id ?? '');
  void outcome;
  const big: bigint = await store.incrBig('n');
  void big;
  return lock?.fencingToken;
}

// @ts-expect-error: a TTL is a number of seconds, not a string.
void store.acquireLock('k', '5');

void asInterface;
void everyMethod;
void extras;

// The IAtomicStore interface's meaning, as the original documents it, on
// every backend the package compiles in.
import assert from 'node:assert/strict';
import { describe, test, after } from 'node:test';
import { AtomicStore, backends, freshKey, sleep } from './support.mjs';

/** Expect `promise` to reject with an Error whose code is `code`. */
async function rejectsWith(promise, code, backend) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof Error, 'a rejection is an Error');
    assert.equal(error.code, code, error.message);
    assert.equal(typeof error.operation, 'string');
    assert.equal(typeof error.temporary, 'boolean');
    if (backend) assert.equal(error.backend, backend);
    assert.doesNotMatch(error.message, /\{|Error \{|kind:/, 'a message, not a debug dump');
    return true;
  });
}

for (const [name, url] of backends) {
  describe(name, () => {
    const store = AtomicStore.open(url());
    const caps = store.capabilities();
    // Past a TTL, a key is gone once the backend's resolution has passed too.
    const afterTtl = (seconds) => sleep((seconds + caps.ttlResolutionSeconds) * 1000 + 250);
    after(() => store.close());

    test('incr starts at 1 and counts up', async () => {
      const key = freshKey('incr');
      assert.equal(await store.incr(key), 1);
      assert.equal(await store.incr(key), 2);
      assert.equal(await store.incrBig(key), 3n);
      assert.equal(await store.get(key), '3');
    });

    test('acquireLock returns null while held, and only its id releases it', async () => {
      const key = freshKey('lock');
      const id = await store.acquireLock(key, 30);
      assert.equal(typeof id, 'string');
      assert.ok(id.length >= 16, id);
      assert.equal(await store.acquireLock(key, 30), null, 'held: null');
      await store.releaseLock(key, 'not-the-holder');
      assert.equal(await store.acquireLock(key, 30), null, 'a wrong id left it held');
      assert.equal(await store.releaseLockOutcome(key, 'not-the-holder'), 'held_by_other');
      await store.releaseLock(key, id);
      const next = await store.acquireLock(key, 30);
      assert.notEqual(next, null, 'free again after its holder released it');
      assert.notEqual(next, id, 'every acquisition has its own id');
      assert.equal(await store.releaseLockOutcome(key, next), 'released');
      assert.equal(await store.releaseLockOutcome(key, next), 'not_held');
    });

    test('a lock expires after its TTL (fractions of a second allowed)', async () => {
      const key = freshKey('ttl-lock');
      assert.notEqual(await store.acquireLock(key, 0.4), null);
      assert.equal(await store.acquireLock(key, 0.4), null);
      await afterTtl(0.4);
      assert.notEqual(await store.acquireLock(key, 5), null, 'expired, so free');
    });

    test('fenced locks carry rising tokens; extendLock keeps a lock alive', async () => {
      const key = freshKey('fenced');
      const first = await store.acquireFencedLock(key, 30);
      assert.equal(typeof first.fencingToken, 'bigint');
      assert.equal(await store.extendLock(key, first.id, 60), 'extended');
      assert.equal(await store.extendLock(key, 'someone-else', 60), 'held_by_other');
      await store.releaseLock(key, first.id);
      const second = await store.acquireFencedLock(key, 30);
      assert.ok(second.fencingToken > first.fencingToken, `${second.fencingToken} > ${first.fencingToken}`);
      assert.equal(await store.extendLock(key, first.id, 60), 'held_by_other');
    });

    test('get, set, setWithTTL, delete', async () => {
      const key = freshKey('kv');
      assert.equal(await store.get(key), null);
      await store.set(key, 'one');
      assert.equal(await store.get(key), 'one');
      await store.setWithTTL(key, 'two', 0.4);
      assert.equal(await store.get(key), 'two');
      assert.ok((await store.inspect(key)).ttlSeconds > 0, 'setWithTTL gave it a TTL');
      await afterTtl(0.4);
      assert.equal(await store.get(key), null, 'expired');
      await store.setWithTTL(key, 'three', 60);
      await store.set(key, 'four');
      assert.equal((await store.inspect(key)).ttlSeconds, undefined, 'set clears the TTL');
      await store.delete(key);
      assert.equal(await store.get(key), null);
      await store.delete(key); // deleting a missing key is fine
    });

    test('compareAndSet', async () => {
      const key = freshKey('cas');
      assert.equal(await store.compareAndSet(key, null, 'a'), true);
      assert.equal(await store.compareAndSet(key, null, 'b'), false);
      assert.equal(await store.compareAndSet(key, 'x', 'b'), false);
      assert.equal(await store.compareAndSet(key, 'a', 'b', 60), true);
      assert.equal(await store.get(key), 'b');
    });

    test("atomicAssignNonce follows the original's rule", async () => {
      const key = freshKey('nonce');
      assert.equal(await store.atomicAssignNonce(key, 0), 0, 'missing key: the pending count');
      assert.equal(await store.atomicAssignNonce(key, 0), 1);
      assert.equal(await store.atomicAssignNonce(key, 7), 7, 'the chain is ahead');
      assert.equal(await store.atomicAssignNonce(key, 7), 8);
      await store.set(key, '900');
      assert.equal(await store.atomicAssignNonce(key, 7), 7, 'more than 500 ahead: back to pending');
    });

    test('eval runs where the backend has scripting, else rejects UNSUPPORTED', async () => {
      const key = freshKey('eval');
      if (caps.evalLanguage === 'lua') {
        const script = "return {redis.call('INCRBY', KEYS[1], ARGV[1]), ARGV[2]}";
        assert.deepEqual(await store.eval(script, [key], ['5', 'x']), [5, 'x']);
        assert.equal(await store.get(key), '5', 'the key was prefixed like every other');
      } else if (caps.evalLanguage === 'sql') {
        // One statement: $1 is the prefixed key, then the args; rows of columns.
        const rows = await store.eval('SELECT $1::text, $2::text, 7::int8, NULL::text', [key], ['x']);
        assert.deepEqual(rows, [[`atomic:${key}`, 'x', 7, null]]);
      } else {
        assert.equal(caps.eval, false);
        await rejectsWith(store.eval('return 1', [key], []), 'UNSUPPORTED', name);
      }
      await rejectsWith(store.eval('return 1', key, []), 'INVALID_ARGUMENT', name);
      await rejectsWith(store.eval('return 1', [key, 5], []), 'INVALID_ARGUMENT', name);
      await rejectsWith(store.eval('return 1', [], new Array(5000).fill('a')), 'INVALID_ARGUMENT', name);
    });

    test('bad input rejects with a typed error and changes nothing', async () => {
      const key = freshKey('bad');
      await store.set(key, 'kept');
      const lock = freshKey('bad-lock');
      await rejectsWith(store.incr(''), 'INVALID_ARGUMENT', name);
      await rejectsWith(store.set('', 'v'), 'INVALID_ARGUMENT', name);
      await rejectsWith(store.set(key, 42), 'INVALID_ARGUMENT', name);
      await rejectsWith(store.set(key, null), 'INVALID_ARGUMENT', name);
      await rejectsWith(store.set(42, 'v'), 'INVALID_ARGUMENT', name);
      await rejectsWith(store.setWithTTL(key, 'changed', 0), 'INVALID_ARGUMENT', name);
      await rejectsWith(store.setWithTTL(key, 'changed', -1), 'INVALID_ARGUMENT', name);
      await rejectsWith(store.setWithTTL(key, 'changed', Number.NaN), 'INVALID_ARGUMENT', name);
      await rejectsWith(store.setWithTTL(key, 'changed', '5'), 'INVALID_ARGUMENT', name);
      for (const ttl of [-0, Infinity, -Infinity, 1e300, null, undefined, 0.0000001]) {
        await rejectsWith(store.setWithTTL(key, 'changed', ttl), 'INVALID_ARGUMENT', name);
      }
      await rejectsWith(store.compareAndSet(key, 'kept', 'changed', null), 'INVALID_ARGUMENT', name);
      await rejectsWith(store.compareAndSet(key, undefined, 'changed'), 'INVALID_ARGUMENT', name);
      await rejectsWith(store.acquireLock(lock, 0), 'INVALID_ARGUMENT', name);
      await rejectsWith(store.acquireLock(lock, -5), 'INVALID_ARGUMENT', name);
      const nonceKey = freshKey('bad-nonce');
      for (const pending of [-1, 1.5, NaN, 2 ** 53, '3', null]) {
        await rejectsWith(store.atomicAssignNonce(nonceKey, pending), 'INVALID_ARGUMENT', name);
      }
      assert.equal(await store.get(nonceKey), null, 'no refused nonce call wrote');
      await rejectsWith(store.incr(key), 'NOT_AN_INTEGER', name);
      await rejectsWith(store.atomicAssignNonce(key, 0), 'NOT_AN_INTEGER', name);
      assert.equal(await store.get(key), 'kept', 'every refusal left the value alone');
      assert.equal((await store.inspect(key)).ttlSeconds, undefined, 'and its TTL');
      assert.notEqual(await store.acquireLock(lock, 30), null, 'no refused acquire took the lock');
      await rejectsWith(store.get(''), 'INVALID_ARGUMENT', name);
    });

    test('a counter past Number.MAX_SAFE_INTEGER rejects, never returns a wrong number', async () => {
      const key = freshKey('big');
      await store.set(key, String(Number.MAX_SAFE_INTEGER - 1));
      assert.equal(await store.incr(key), Number.MAX_SAFE_INTEGER);
      await assert.rejects(store.incr(key), (error) => {
        assert.equal(error.code, 'UNSAFE_INTEGER');
        assert.equal(error.applied, true, 'the increment was applied');
        assert.equal(error.temporary, false);
        assert.equal(error.value, 2n ** 53n, 'the value it reached, exactly');
        assert.match(error.message, /WAS applied, so do not call again/);
        return true;
      });
      assert.equal(await store.get(key), String(2n ** 53n), 'applied once');
      assert.equal(await store.incrBig(key), 2n ** 53n + 1n);
      await store.set(key, '9223372036854775807');
      await rejectsWith(store.incrBig(key), 'OVERFLOW', name);
      assert.equal(await store.get(key), '9223372036854775807', 'unchanged');
    });

    test('capabilities name the backend', () => {
      assert.equal(caps.backend, name);
      assert.equal(typeof caps.ttlResolutionSeconds, 'number');
    });
  });
}

describe('open and close', () => {
  test('a bad URL throws a typed error at once', () => {
    for (const [url, code] of [
      ['ftp://somewhere', 'INVALID_ARGUMENT'],
      ['not a url', 'INVALID_ARGUMENT'],
      ['sqlite://', 'INVALID_ARGUMENT'],
      ['redis://127.0.0.1:6379?colour=blue', 'INVALID_ARGUMENT'],
      [undefined, 'INVALID_ARGUMENT'],
      [42, 'INVALID_ARGUMENT'],
    ]) {
      assert.throws(
        () => AtomicStore.open(url),
        (error) => error instanceof Error && error.code === code && error.operation === 'open',
        String(url),
      );
    }
  });

  test('a password in the URL never appears in an error', () => {
    const url = 'postgres://user:s3cret-pw@127.0.0.1:1/db?colour=blue';
    assert.throws(
      () => AtomicStore.open(url),
      (error) => !error.message.includes('s3cret-pw') && error.code === 'INVALID_ARGUMENT',
    );
  });

  test('after close, calls in flight finish and later calls reject', async () => {
    const store = AtomicStore.open('memory://');
    const key = freshKey('close');
    const inFlight = store.incr(key);
    store.close();
    assert.equal(await inFlight, 1);
    await assert.rejects(store.get(key), (error) => {
      assert.equal(error.code, 'CLOSED');
      assert.equal(error.backend, 'memory');
      assert.equal(error.operation, 'get');
      assert.equal(error.temporary, false);
      return /closed/.test(error.message);
    });
    await rejectsWith(store.incr(''), 'CLOSED');
    assert.throws(() => store.capabilities(), (error) => error.code === 'CLOSED');
    store.close(); // twice is harmless
  });
});

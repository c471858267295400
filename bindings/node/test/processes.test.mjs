// Many OS processes on one store: Node processes alone, and Node processes
// beside the Rust CLI. Also: a process exits by itself once its work is done.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { AtomicStore, cliPath, freshKey, run, runNode, serverUrl, sqliteUrl } from './support.mjs';

const shared = [
  ['sqlite', sqliteUrl],
  ['redis', () => serverUrl('REDIS')],
];

/** A Node process that assigns `count` nonces on `key` and prints them as JSON. */
const nonceWorker = `
  import { createRequire } from 'node:module';
  const { AtomicStore } = createRequire(import.meta.url)(process.env.PACKAGE);
  const store = AtomicStore.open(process.env.URL);
  const nonces = [];
  for (let i = 0; i < Number(process.env.COUNT); i++) {
    nonces.push(await store.atomicAssignNonce(process.env.KEY, 0));
  }
  console.log(JSON.stringify(nonces));
`;

function nodeNonces(url, key, count) {
  return runNode(nonceWorker, { env: { URL: url, KEY: key, COUNT: String(count) } }).then((r) => {
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  });
}

function cli(url, ...args) {
  const binary = cliPath();
  assert.ok(existsSync(binary), `${binary} is missing: build it with cargo build -p atomic-store-cli`);
  return run(binary, ['--url', url, '--json', ...args]);
}

async function cliNonces(url, key, count) {
  const r = await cli(url, 'nonce', key, '--pending', '0', '--count', String(count));
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout).nonces;
}

const range = (n) => Array.from({ length: n }, (_, i) => i);
const sorted = (values) => [...values].sort((a, b) => a - b);

for (const [name, url] of shared) {
  describe(name, () => {
    test('4 Node processes × 100 atomicAssignNonce: exactly 0..399', async () => {
      const target = url();
      const key = freshKey('nonce-fleet');
      const all = (await Promise.all(range(4).map(() => nodeNonces(target, key, 100)))).flat();
      assert.deepEqual(sorted(all), range(400), 'no duplicate, no gap');
    });

    test('Node processes and the Rust CLI share nonces: exactly 0..399', async () => {
      const target = url();
      const key = freshKey('nonce-mixed');
      const parts = await Promise.all([
        nodeNonces(target, key, 100),
        cliNonces(target, key, 100),
        nodeNonces(target, key, 100),
        cliNonces(target, key, 100),
      ]);
      assert.deepEqual(sorted(parts.flat()), range(400), 'no duplicate, no gap');
    });

    test('a lock taken on one side is seen and released by its id on the other', async () => {
      const target = url();
      const key = freshKey('lock-mixed');
      const store = AtomicStore.open(target);
      try {
        const nodeId = await store.acquireLock(key, 30);
        assert.notEqual(nodeId, null);
        const refused = await cli(target, 'lock', key, '--ttl', '30s');
        assert.equal(refused.code, 3, `the CLI sees the lock held: ${refused.stdout}${refused.stderr}`);
        const unlocked = await cli(target, 'unlock', key, nodeId);
        assert.equal(unlocked.code, 0, unlocked.stdout + unlocked.stderr);
        const taken = await cli(target, 'lock', key, '--ttl', '30s');
        assert.equal(taken.code, 0, taken.stderr);
        const cliId = JSON.parse(taken.stdout).id;
        assert.equal(await store.acquireLock(key, 30), null, 'Node sees the CLI holding it');
        assert.equal(await store.releaseLockOutcome(key, nodeId), 'held_by_other');
        assert.equal(await store.releaseLockOutcome(key, cliId), 'released');
      } finally {
        store.close();
      }
    });
  });
}

describe('a process exits by itself', () => {
  const once = `
    import { createRequire } from 'node:module';
    const { AtomicStore } = createRequire(import.meta.url)(process.env.PACKAGE);
    const store = AtomicStore.open(process.env.URL);
    await store.set(process.env.KEY, 'v');
    console.log(await store.get(process.env.KEY));
  `;
  for (const [name, url] of [...shared, ['postgres', () => serverUrl('POSTGRES')]]) {
    test(`${name}: after its last call, without close()`, async () => {
      const r = await runNode(once, { env: { URL: url(), KEY: freshKey('exit') }, timeoutMs: 20_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), 'v');
      assert.ok(r.ms < 10_000, `exited after ${r.ms} ms`);
    });
  }
});

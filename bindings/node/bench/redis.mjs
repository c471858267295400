// The package next to ioredis sending the TypeScript original's own
// commands, on one Redis, in the same run: INCR; SET NX EX plus the release
// script; the nonce script by EVALSHA. Prints ops/s and the ratio.
//
//   ATOMIC_STORE_BENCH_REDIS=redis://127.0.0.1:16379 npm run bench
//   (BENCH_SECONDS per measurement, default 2; BENCH_ROUNDS, default 3)
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { AtomicStore } = require('..');
const Redis = require('ioredis');

const url = process.env.ATOMIC_STORE_BENCH_REDIS ?? process.env.ATOMIC_STORE_TEST_REDIS_URL;
if (!url) {
  console.error('set ATOMIC_STORE_BENCH_REDIS to a Redis URL, e.g. redis://127.0.0.1:6379');
  process.exit(2);
}
const seconds = Number(process.env.BENCH_SECONDS ?? 2);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const prefix = 'vana-sdk:atomic';

// The original's two scripts, as vana-sdk-behaviour.md describes them.
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;
const ASSIGN_NONCE = `
local last = tonumber(redis.call('get', KEYS[1]) or '-1')
local pending = tonumber(ARGV[1])
local candidate = last + 1
if pending > candidate or candidate - pending > 500 then candidate = pending end
redis.call('set', KEYS[1], tostring(candidate))
return candidate`;

const ours = AtomicStore.open(url);
const ioredis = new Redis(url, { lazyConnect: false, enableOfflineQueue: true });
const nonceSha = await ioredis.script('LOAD', ASSIGN_NONCE);
const run = randomBytes(4).toString('hex');

const workloads = {
  incr: {
    ours: (k) => ours.incr(k),
    ioredis: (k) => ioredis.incr(`${prefix}:${k}`),
  },
  'lock-cycle': {
    ours: async (k) => ours.releaseLock(k, await ours.acquireLock(k, 5)),
    ioredis: async (k) => {
      const id = `${Date.now()}-${Math.random().toString(36).slice(2, 13)}`;
      await ioredis.set(`${prefix}:${k}`, id, 'EX', 5, 'NX');
      await ioredis.eval(RELEASE, 1, `${prefix}:${k}`, id);
    },
  },
  'assign-nonce': {
    ours: (k) => ours.atomicAssignNonce(k, 0),
    ioredis: (k) => ioredis.evalsha(nonceSha, 1, `${prefix}:${k}`, 0),
  },
};

/**
 * Operations per second of `inFlight` loops calling `op` for `seconds`, and
 * the CPU time this process spent per operation (every thread: Node's and,
 * for ours, the addon's Tokio threads).
 */
async function measure(op, inFlight, keyOf) {
  const cpu = process.cpuUsage();
  const until = Date.now() + seconds * 1000;
  let done = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async (_, loop) => {
      const key = keyOf(loop);
      while (Date.now() < until) {
        await op(key);
        done += 1;
      }
    }),
  );
  const used = process.cpuUsage(cpu);
  return { rate: done / seconds, cpuMicros: (used.user + used.system) / done };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`redis ${url.replace(/\/\/[^@]*@/, '//')}, ${seconds} s per measurement, median of ${rounds} alternating rounds`);
console.log('workload       in-flight   ours ops/s   ioredis ops/s   ours/ioredis   CPU µs/op ours   ioredis');
for (const [name, clients] of Object.entries(workloads)) {
  for (const inFlight of [1, 16, 64]) {
    const figures = { ours: [], ioredis: [] };
    for (let round = 0; round < rounds; round++) {
      for (const client of ['ours', 'ioredis']) {
        // Locks: one key per loop (uncontended); counters: one shared key.
        const keyOf = (loop) => `bench:${run}:${client}:${name}:${name === 'lock-cycle' ? loop : 'shared'}`;
        figures[client].push(await measure(clients[client], inFlight, keyOf));
      }
    }
    const rate = (client) => median(figures[client].map((f) => f.rate));
    const cpu = (client) => median(figures[client].map((f) => f.cpuMicros));
    const [a, b] = [rate('ours'), rate('ioredis')];
    console.log(
      `${name.padEnd(14)} ${String(inFlight).padStart(9)} ${a.toFixed(0).padStart(12)} ${b.toFixed(0).padStart(15)} ${(a / b).toFixed(2).padStart(14)}` +
        `${cpu('ours').toFixed(1).padStart(17)} ${cpu('ioredis').toFixed(1).padStart(9)}`,
    );
  }
}
// The binding's own cost: the same calls on memory:// (about 0.1 µs of
// store work), so what is left is the napi and Tokio hop per call.
const floor = AtomicStore.open('memory://');
console.log('binding floor: incr on memory://');
for (const inFlight of [1, 16, 64]) {
  const f = await measure((k) => floor.incr(k), inFlight, () => `floor:${run}`);
  console.log(`${'incr memory'.padEnd(14)} ${String(inFlight).padStart(9)} ${f.rate.toFixed(0).padStart(12)}${''.padStart(32)}${f.cpuMicros.toFixed(1).padStart(17)}`);
}
floor.close();
ours.close();
ioredis.disconnect();

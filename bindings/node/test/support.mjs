// Shared by the package's tests: the stores under test, fresh keys, and
// child processes. Every server URL comes from scripts/test-servers; a
// missing one fails the test that needs it, never skips it.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
export const packageDir = join(dirname(fileURLToPath(import.meta.url)), '..');
export const { AtomicStore } = require(packageDir);

const scratch = mkdtempSync(join(tmpdir(), 'atomic-store-node-'));

/** A fresh SQLite file's URL. */
export function sqliteUrl() {
  return `sqlite://${join(scratch, `${randomBytes(6).toString('hex')}.db`)}`;
}

/** The URL of a server started by scripts/test-servers. */
export function serverUrl(name) {
  const variable = `ATOMIC_STORE_TEST_${name}_URL`;
  const url = process.env[variable];
  if (!url) {
    throw new Error(`${variable} is not set: start the servers with scripts/test-servers (scripts/test does)`);
  }
  return url;
}

/** Every backend the package compiles in, by name and a URL to reach it. */
export const backends = [
  ['sqlite', sqliteUrl],
  ['memory', () => 'memory://'],
  ['redis', () => serverUrl('REDIS')],
  ['postgres', () => serverUrl('POSTGRES')],
  ['etcd', () => serverUrl('ETCD')],
  ['zookeeper', () => serverUrl('ZK')],
  ['dynamodb', () => serverUrl('DYNAMODB')],
  ['mongodb', () => serverUrl('MONGODB')],
  ['mysql', () => serverUrl('MYSQL')],
];

/** A key no earlier run used. */
export function freshKey(name) {
  return `node-test:${name}:${randomBytes(8).toString('hex')}`;
}

export const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** The Rust CLI built by `cargo build -p atomic-store-cli` (scripts/test builds it). */
export function cliPath() {
  if (process.env.ATOMIC_STORE_CLI) return process.env.ATOMIC_STORE_CLI;
  const target = process.env.CARGO_TARGET_DIR ?? join(packageDir, '..', '..', 'target');
  return join(target, 'debug', 'atomic-store');
}

/**
 * Run a command; resolves { code, stdout, stderr, ms } once it exits, or
 * rejects when it outlives `timeoutMs` (it is killed).
 */
export function run(command, args, { env = {}, timeoutMs = 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(command, args, { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} did not exit within ${timeoutMs} ms\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** Run a Node script given as text, with the package importable as `atomic-store`'s path in `PACKAGE`. */
export function runNode(source, { env = {}, timeoutMs } = {}) {
  return run(process.execPath, ['--input-type=module', '-e', source], {
    env: { PACKAGE: packageDir, ...env },
    timeoutMs,
  });
}

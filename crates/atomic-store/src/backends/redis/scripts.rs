//! The server-side scripts. Each runs atomically on the server; `KEYS[1]` is
//! the prefixed key and, for locks, `KEYS[2]` its fencing counter.

use std::sync::OnceLock;

use redis::Script;

/// `SET key id PX ttl NX`, and on success `INCR` of the fencing counter.
/// ARGV: id, ttl in ms. Returns the token, or nil when the key is held.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then
  return redis.call('INCR', KEYS[2])
end
return false
";

/// Compare-and-delete. ARGV: id. Returns 1 released, 0 not held, 2 other.
const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if v == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 2
";

/// Compare-and-expire. ARGV: id, ttl in ms. Returns 1 extended, 0 not held, 2 other.
const EXTEND: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 2
";

/// ARGV: '1' if a value is expected (else absence), expected, new, ttl in ms
/// or '0'. Returns 1 when the value was replaced.
const COMPARE_AND_SET: &str = r"
local v = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if v ~= ARGV[2] then return 0 end
elseif v then
  return 0
end
if ARGV[4] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
";

/// The original SDK's nonce rule. ARGV: pending. Lua numbers are doubles, so
/// stored values beyond 15 digits are refused instead of rounded.
const ASSIGN_NONCE: &str = r"
local v = redis.call('GET', KEYS[1])
local last = -1
if v then
  if not (v == '0' or string.match(v, '^%-?[1-9]%d*$')) then
    return redis.error_reply('ATOMIC_NOTINT stored nonce is not a decimal integer')
  end
  if string.len(string.gsub(v, '-', '')) > 15 then
    return redis.error_reply('ATOMIC_OVERFLOW stored nonce is beyond the 15 digits assign_nonce supports on Redis')
  end
  last = tonumber(v)
end
local pending = tonumber(ARGV[1])
local candidate = last + 1
if pending > candidate or candidate - pending > 500 then
  candidate = pending
end
redis.call('SET', KEYS[1], string.format('%d', candidate), 'KEEPTTL')
return candidate
";

/// Value, milliseconds left (-1 without TTL, -2 missing) and fencing
/// counter of a key, in one step.
const INSPECT: &str = r"
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2])}
";

/// A waiter's step in a lock's fair queue. KEYS: lock, fence, queue (ZSET
/// waiter → ticket), presence (ZSET waiter → deadline in server ms), ticket
/// counter. ARGV: waiter id, lock TTL ms, presence ms ('0': take a free
/// lock only, never queue), ms the queue keys outlive their last use.
/// Returns {1, token} when the waiter holds the lock, else {0, waiters
/// ahead}.
const QUEUE_ENTER: &str = r"
local lock, fence, queue, presence, tickets = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local waiter = ARGV[1]
local holder = redis.call('GET', lock)
if holder == waiter then
  redis.call('PEXPIRE', lock, ARGV[2])
  redis.call('ZREM', queue, waiter)
  redis.call('ZREM', presence, waiter)
  return {1, redis.call('GET', fence) or 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', presence, '-inf', now, 'LIMIT', 0, 256)) do
  redis.call('ZREM', queue, dead)
  redis.call('ZREM', presence, dead)
end
if not holder then
  local head = redis.call('ZRANGE', queue, 0, 0)[1]
  if (not head) or head == waiter then
    redis.call('SET', lock, waiter, 'PX', ARGV[2])
    redis.call('ZREM', queue, waiter)
    redis.call('ZREM', presence, waiter)
    return {1, redis.call('INCR', fence)}
  end
end
if ARGV[3] == '0' then
  return {0, redis.call('ZCARD', queue)}
end
if not redis.call('ZSCORE', queue, waiter) then
  redis.call('ZADD', queue, redis.call('INCR', tickets), waiter)
end
redis.call('ZADD', presence, now + tonumber(ARGV[3]), waiter)
for _, k in ipairs({queue, presence, tickets}) do
  if redis.call('PTTL', k) < tonumber(ARGV[4]) then
    redis.call('PEXPIRE', k, ARGV[4])
  end
end
return {0, redis.call('ZRANK', queue, waiter)}
";

/// Release (or leave the queue) and hand the lock to the first waiter
/// whose presence is live, in one step. KEYS: lock, fence, queue,
/// presence. ARGV: id, hand-over TTL ms, the wake-up channel's prefix (''
/// for none). Returns {code, waiter or nil, token}: code 1 released, 0 not
/// held, 2 held by another (nothing done but leaving the queue).
const QUEUE_RELEASE: &str = r"
local lock, fence, queue, presence = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]
redis.call('ZREM', queue, id)
redis.call('ZREM', presence, id)
local holder = redis.call('GET', lock)
local code = 0
if holder == id then code = 1 elseif holder then return {2, false, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _ = 1, 256 do
  local next = redis.call('ZRANGE', queue, 0, 0)[1]
  if not next then break end
  local live = tonumber(redis.call('ZSCORE', presence, next) or '0') > now
  redis.call('ZREM', queue, next)
  redis.call('ZREM', presence, next)
  if live then
    redis.call('SET', lock, next, 'PX', ARGV[2])
    local token = redis.call('INCR', fence)
    if ARGV[3] ~= '' then
      -- Best effort: a refused PUBLISH (an ACL without channels) must not
      -- fail a release that is already done; the waiter polls.
      redis.pcall('PUBLISH', ARGV[3] .. string.sub(next, 1, 16), '')
    end
    return {code, next, token}
  end
end
if code == 1 then redis.call('DEL', lock) end
return {code, false, 0}
";

/// The scripts, with their SHA1 computed once.
pub struct Scripts {
    pub acquire: Script,
    pub release: Script,
    pub extend: Script,
    pub compare_and_set: Script,
    pub assign_nonce: Script,
    pub inspect: Script,
    pub queue_enter: Script,
    pub queue_release: Script,
}

pub fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        acquire: Script::new(ACQUIRE),
        release: Script::new(RELEASE),
        extend: Script::new(EXTEND),
        compare_and_set: Script::new(COMPARE_AND_SET),
        assign_nonce: Script::new(ASSIGN_NONCE),
        inspect: Script::new(INSPECT),
        queue_enter: Script::new(QUEUE_ENTER),
        queue_release: Script::new(QUEUE_RELEASE),
    })
}

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

/// The scripts, with their SHA1 computed once.
pub struct Scripts {
    pub acquire: Script,
    pub release: Script,
    pub extend: Script,
    pub compare_and_set: Script,
    pub assign_nonce: Script,
    pub inspect: Script,
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
    })
}

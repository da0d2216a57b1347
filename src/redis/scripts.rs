//! The Lua scripts of the session store: each one atomic step in Redis.
//! They only keep the books (indexes, expiries, the revoked set and its
//! stream); whether a refresh token rotates, replays or is reuse is decided
//! in Rust by [`Family::rotate`](crate::session::Family::rotate), and a
//! script only writes the result if the family is still what was read.
//!
//! Every script takes the key prefix as `ARGV[1]` and computes its keys
//! from it (one Redis, not Cluster); `ARGV[2]` is the caller's Unix time
//! in seconds and `ARGV[3]` how long the revocation stream keeps entries,
//! in milliseconds.

use std::sync::LazyLock;

use redis::Script;

/// What every writing script shares: `revoke` and `forget_family`.
const PRELUDE: &str = r"
local prefix = ARGV[1]

-- Forgets family `sid`: its JSON, its token index, the list of its tokens.
-- (The subject's list drops it lazily, when the subject next logs in.)
local function forget_family(sid)
  local tokens = prefix .. ':family-tokens:' .. sid
  for _, hash in ipairs(redis.call('SMEMBERS', tokens)) do
    redis.call('DEL', prefix .. ':token:' .. hash)
  end
  redis.call('DEL', tokens, prefix .. ':family:' .. sid)
end

-- The oldest stream entry id to keep: the stream's ids are Redis's own
-- clock in milliseconds, so this is that clock minus the retention.
local function min_id()
  local time = redis.call('TIME')
  return string.format('%d', tonumber(time[1]) * 1000
    + math.floor(tonumber(time[2]) / 1000) - tonumber(ARGV[3]))
end

-- Revokes session `sid` until `until_` (Unix seconds): kept in the revoked
-- set (never shortened), announced on the stream, its family forgotten.
local function revoke(sid, until_, minid)
  redis.call('ZADD', prefix .. ':revoked', 'GT', until_, sid)
  redis.call('XADD', prefix .. ':revocations', 'MINID', '~', minid, '*',
    'sid', sid, 'until', until_)
  forget_family(sid)
end

-- Drops revocations that have run out.
local function trim_revoked()
  redis.call('ZREMRANGEBYSCORE', prefix .. ':revoked', '-inf', ARGV[2])
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// Revokes sessions: `ARGV[4..]` are `sid, until` pairs.
pub(super) static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local minid = min_id()
for i = 4, #ARGV, 2 do
  revoke(ARGV[i], ARGV[i + 1], minid)
end
trim_revoked()
return 1
",
    )
});

/// Keeps a new family. `ARGV[4..]`: sid, subject, JSON, expires at, the
/// first token's hash, absolute expiry, the most families a subject keeps,
/// until when an evicted family's session stays revoked. Returns the
/// evicted session ids.
pub(super) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local sid, json, expires_at = ARGV[4], ARGV[6], ARGV[7]
local hash, absolute, max, revoke_until = ARGV[8], ARGV[9], tonumber(ARGV[10]), ARGV[11]
local subject = prefix .. ':subject:' .. ARGV[5]
-- The subject's sessions whose families are gone (expired, revoked).
for _, other in ipairs(redis.call('ZRANGE', subject, 0, -1)) do
  if redis.call('EXISTS', prefix .. ':family:' .. other) == 0 then
    redis.call('ZREM', subject, other)
  end
end
-- Oldest first, by Redis's clock in microseconds (one clock for every
-- instance).
local time = redis.call('TIME')
redis.call('ZADD', subject, time[1] .. string.format('%06d', tonumber(time[2])), sid)
if redis.call('EXPIRETIME', subject) < tonumber(absolute) then
  redis.call('EXPIREAT', subject, absolute)
end
redis.call('SET', prefix .. ':family:' .. sid, json, 'EXAT', expires_at)
redis.call('SET', prefix .. ':token:' .. hash, sid, 'EXAT', absolute)
local tokens = prefix .. ':family-tokens:' .. sid
redis.call('SADD', tokens, hash)
redis.call('EXPIREAT', tokens, absolute)
-- Beyond the most families a subject keeps: end the oldest.
local excess = redis.call('ZCARD', subject) - max
local evicted = {}
if excess > 0 then
  evicted = redis.call('ZRANGE', subject, 0, excess - 1)
  local minid = min_id()
  for _, old in ipairs(evicted) do
    revoke(old, revoke_until, minid)
    redis.call('ZREM', subject, old)
  end
end
trim_revoked()
return evicted
",
    )
});

/// Compare-and-set on a family: acts only if `PREFIX:family:SID` still
/// holds exactly the JSON the caller read (`ARGV[5]`). `ARGV[4]` is the sid,
/// `ARGV[6]` the action:
/// - `keep`: store `ARGV[7]` (the new JSON), expiring at `ARGV[8]`, and
///   index the successor `ARGV[9]` until the absolute expiry `ARGV[10]`;
/// - `revoke`: revoke the session until `ARGV[7]` (refresh-token reuse);
/// - `forget`: forget the family (it expired).
///
/// Returns 1 when it acted, 0 when the family had changed (read again).
pub(super) static COMPARE_AND_SET: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local sid = ARGV[4]
local key = prefix .. ':family:' .. sid
if redis.call('GET', key) ~= ARGV[5] then
  return 0
end
local action = ARGV[6]
if action == 'keep' then
  local absolute = ARGV[10]
  redis.call('SET', key, ARGV[7], 'EXAT', ARGV[8])
  redis.call('SET', prefix .. ':token:' .. ARGV[9], sid, 'EXAT', absolute)
  local tokens = prefix .. ':family-tokens:' .. sid
  redis.call('SADD', tokens, ARGV[9])
  redis.call('EXPIREAT', tokens, absolute)
elseif action == 'revoke' then
  revoke(sid, ARGV[7], min_id())
  trim_revoked()
else
  forget_family(sid)
end
return 1
",
    )
});

/// The JSON of the family that holds token `ARGV[2]` (nil: none). Reads
/// only.
pub(super) static FIND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local sid = redis.call('GET', ARGV[1] .. ':token:' .. ARGV[2])
if not sid then
  return false
end
return redis.call('GET', ARGV[1] .. ':family:' .. sid)
",
    )
});

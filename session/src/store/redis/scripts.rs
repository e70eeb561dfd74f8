//! The server-side scripts: each write is one atomic step on the session's
//! hash. A call goes in the groups like any command, as `EVALSHA`, and
//! again as `EVAL` with the source when a server answers `NOSCRIPT` (a
//! restart, a failover, `SCRIPT FLUSH`).
//!
//! Index sets are one sorted set per indexed value: members are session
//! ids, scores their expiry in ms, and the set expires with its last
//! member. On a standalone server the scripts keep them in the same step
//! (`here` = 1); on Cluster a set lives in another slot than the session,
//! so a script only reports the old and new values and the store updates
//! the sets in a second, pipelined step (`INDEX_ADD`, `ZREM`).
//!
//! With `track` = 1, `INSERT` and `UPDATE` read the session's key once more
//! at their end: with the client cache's `CLIENT TRACKING ... NOLOOP`, a connection's own
//! write ends Redis's tracking of that key for it, and the read renews it,
//! so another client's later write still sends the invalidation.

use std::sync::LazyLock;

use redis::{Cmd, Script, ToRedisArgs};

/// Shared by the scripts that keep index sets.
const INDEX_HELPERS: &str = r#"
local function index_add(set, member, score, now)
  redis.call('ZADD', set, 'GT', score, member)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
  local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', set, last[2]) end
end
local function flag(value)
  if value then return '1' end
  return '0'
end
"#;

/// Creates the hash only if absent.
/// KEYS[1] session. ARGV: pexpireat, n, n field/value pairs, here, n_idx,
/// n_idx (column, set prefix), member, now, track (1/0).
/// Reply: {created (0/1), score, per index: present, value}.
const INSERT: &str = r#"
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then return {0} end
local a = 1
local expire_ms = ARGV[a]; a = a + 1
local n_set = tonumber(ARGV[a]); a = a + 1
redis.call('HSET', key, unpack(ARGV, a, a + 2 * n_set - 1)); a = a + 2 * n_set
redis.call('PEXPIREAT', key, expire_ms)
local here = ARGV[a] == '1'; a = a + 1
local n_idx = tonumber(ARGV[a]); a = a + 1
local idx = a; a = a + 2 * n_idx
local member, now, track = ARGV[a], ARGV[a + 1], ARGV[a + 2] == '1'
local reply = {1, expire_ms}
for i = 0, n_idx - 1 do
  local value = redis.call('HGET', key, ARGV[idx + 2 * i])
  if here and value then index_add(ARGV[idx + 2 * i + 1] .. value, member, expire_ms, now) end
  table.insert(reply, flag(value)); table.insert(reply, value or '')
end
if track then redis.call('HGET', key, 'version') end
return reply
"#;

/// Writes the dirty fields of a live session, never creating one; with
/// KEYS[2], renames it first (renew on a standalone server).
/// ARGV: expected version ('' = any), bump (1/0), pexpireat ('' = keep),
/// expires_at µs, remember ('' = keep), n_set, pairs, n_del, fields, here,
/// n_idx, (column, set prefix) each, member, new member, now, track (1/0).
/// Reply: {written (0/1), score, per index: old present, old, new present, new}.
const UPDATE: &str = r#"
local key = KEYS[1]
local a = 1
local expected = ARGV[a]; a = a + 1
local bump = ARGV[a] == '1'; a = a + 1
local expire_ms = ARGV[a]; a = a + 1
local expires_at = ARGV[a]; a = a + 1
local remember = ARGV[a]; a = a + 1
local n_set = tonumber(ARGV[a]); a = a + 1
local set_from = a; a = a + 2 * n_set
local n_del = tonumber(ARGV[a]); a = a + 1
local del_from = a; a = a + n_del
local here = ARGV[a] == '1'; a = a + 1
local n_idx = tonumber(ARGV[a]); a = a + 1
local idx = a; a = a + 2 * n_idx
local member, new_member, now, track = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3] == '1'
-- One read: the version, the moved mark, the indexed values.
local wanted = {'version', 'moved-to'}
for i = 0, n_idx - 1 do wanted[3 + i] = ARGV[idx + 2 * i] end
local current = redis.call('HMGET', key, unpack(wanted))
local version = current[1]
if not version or current[2] then return {0} end
if expected ~= '' and version ~= expected then return {0} end
local renamed = KEYS[2] ~= nil
if renamed then
  if redis.call('EXISTS', KEYS[2]) == 1 then return redis.error_reply('ERR the new session id is taken') end
  redis.call('RENAME', key, KEYS[2])
  key = KEYS[2]
end
-- One write: the dirty fields and the library's.
local writes = {}
for i = set_from, set_from + 2 * n_set - 1 do writes[#writes + 1] = ARGV[i] end
if bump then
  writes[#writes + 1] = 'version'
  writes[#writes + 1] = tostring(tonumber(version) + 1)
end
if remember ~= '' then
  writes[#writes + 1] = 'remember'
  writes[#writes + 1] = remember
end
if expire_ms ~= '' then
  writes[#writes + 1] = 'expires_at'
  writes[#writes + 1] = expires_at
end
if #writes > 0 then redis.call('HSET', key, unpack(writes)) end
if n_del > 0 then redis.call('HDEL', key, unpack(ARGV, del_from, del_from + n_del - 1)) end
if expire_ms ~= '' then redis.call('PEXPIREAT', key, expire_ms) end
local score = expire_ms
if score == '' and n_idx > 0 then score = tostring(redis.call('PEXPIRETIME', key)) end
local reply = {1, score}
for i = 0, n_idx - 1 do
  local old = current[3 + i]
  local new = redis.call('HGET', key, ARGV[idx + 2 * i])
  if here then
    local prefix = ARGV[idx + 2 * i + 1]
    if old and (old ~= new or renamed) then redis.call('ZREM', prefix .. old, member) end
    if new and (old ~= new or renamed or expire_ms ~= '') then index_add(prefix .. new, new_member, score, now) end
  end
  table.insert(reply, flag(old)); table.insert(reply, old or '')
  table.insert(reply, flag(new)); table.insert(reply, new or '')
end
if track then redis.call('HGET', key, 'version') end
return reply
"#;

/// An insert without indexed fields, in as little Lua as it can be:
/// creates the hash only if absent. ARGV: pexpireat, n, n field/value
/// pairs, track (1/0), as `INSERT` begins and ends. Reply: 1 created, 0
/// the key exists.
const INSERT_FIELDS: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local last = 2 + 2 * tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3, last))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
if ARGV[last + 1] == '1' then redis.call('HGET', KEYS[1], 'version') end
return 1
"#;

/// The common update, in as little Lua as it can be (each line of a
/// script costs server time): no new id, no field removed, no indexed
/// field. Writes the pairs given (the dirty fields, and `expires_at` /
/// `remember` when they change) to a live session only, checking the
/// version when one is expected and bumping it.
/// ARGV: expected version ('' = any), bump (1/0), pexpireat ('' = keep),
/// track (1/0), then field/value pairs. Reply: 1 written, 0 no live
/// session (or another version).
const UPDATE_FIELDS: &str = r#"
local key = KEYS[1]
local current = redis.call('HMGET', key, 'version', 'moved-to')
local version = current[1]
if not version or current[2] then return 0 end
if ARGV[1] ~= '' and version ~= ARGV[1] then return 0 end
if ARGV[2] == '1' then
  redis.call('HSET', key, 'version', tostring(tonumber(version) + 1), unpack(ARGV, 5))
elseif #ARGV > 4 then
  redis.call('HSET', key, unpack(ARGV, 5))
end
if ARGV[3] ~= '' then redis.call('PEXPIREAT', key, ARGV[3]) end
if ARGV[4] == '1' then redis.call('HGET', key, 'version') end
return 1
"#;

/// Deletes a session. ARGV: here, n_idx, (column, set prefix) each, member.
/// Reply: {deleted (0/1), '', per index: present, value}.
const DELETE: &str = r#"
local key = KEYS[1]
local a = 1
local here = ARGV[a] == '1'; a = a + 1
local n_idx = tonumber(ARGV[a]); a = a + 1
local idx = a; a = a + 2 * n_idx
local member = ARGV[a]
local reply = {0, ''}
for i = 0, n_idx - 1 do
  local value = redis.call('HGET', key, ARGV[idx + 2 * i])
  if here and value then redis.call('ZREM', ARGV[idx + 2 * i + 1] .. value, member) end
  table.insert(reply, flag(value)); table.insert(reply, value or '')
end
reply[1] = redis.call('DEL', key)
return reply
"#;

/// Renew on Cluster, step 1, on the old key: checks it as an update would
/// and marks it moved (no write lands on it from now on).
/// ARGV: expected version ('' = any), new id. Reply: {0} or {1, pexpiretime, hash}.
const MOVE_OUT: &str = r#"
local key = KEYS[1]
local version = redis.call('HGET', key, 'version')
if not version or redis.call('HEXISTS', key, 'moved-to') == 1 then return {0} end
if ARGV[1] ~= '' and version ~= ARGV[1] then return {0} end
redis.call('HSET', key, 'moved-to', ARGV[2])
return {1, redis.call('PEXPIRETIME', key), redis.call('HGETALL', key)}
"#;

/// Renew on Cluster, step 2, on the new key: the moved hash, created only
/// if absent. ARGV: pexpireat, then field/value pairs. Reply: {0} or {1}.
const MOVE_IN: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('HDEL', KEYS[1], 'moved-to')
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return {1}
"#;

/// A member into an index set, on Cluster. KEYS[1] set. ARGV: member, score, now.
const INDEX_ADD: &str = r#"
index_add(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
return {1}
"#;

/// Gives a cap's turn back only if it is still ours: it may have expired
/// and gone to another writer. ARGV: the token it was taken with.
const GIVE_BACK: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// A script's source and its SHA-1. Every call goes in the groups as
/// `EVALSHA` ([`Call`]), and again as `EVAL` when the server forgot it.
pub(crate) struct ScriptText {
    source: String,
    hash: String,
}

impl ScriptText {
    fn new(body: &str) -> Self {
        Self::plain(&format!("{INDEX_HELPERS}{body}"))
    }

    /// A script that does not use the index helpers.
    fn plain(source: &str) -> Self {
        let hash = Script::new(source).get_hash().to_owned();
        Self {
            source: source.to_owned(),
            hash,
        }
    }

    /// A call of this script on `key`.
    pub(crate) fn call(&'static self, key: impl ToRedisArgs) -> Call {
        self.call_keys(&[key])
    }

    /// A call of this script on `keys` (all of them before any argument:
    /// their count comes first).
    pub(crate) fn call_keys<K: ToRedisArgs>(&'static self, keys: &[K]) -> Call {
        // Room for a common write's arguments without growing.
        let mut cmd = Cmd::with_capacity(16, 256);
        cmd.arg("EVALSHA").arg(&self.hash).arg(keys.len()).arg(keys);
        Call { script: self, cmd }
    }

    /// `evalsha`, a call of this script as `EVALSHA`, as `EVAL` with the
    /// source: the same keys and arguments.
    pub(crate) fn eval_of(&self, evalsha: &Cmd) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(&self.source);
        for arg in evalsha.args_iter().skip(2) {
            if let redis::Arg::Simple(arg) = arg {
                cmd.arg(arg);
            }
        }
        cmd
    }
}

/// One call of a script, as `EVALSHA`, built once: its arguments are
/// written into the command as they come. When the server forgot the
/// script, the group gives the command back and `EVAL` copies them
/// ([`ScriptText::eval_of`]).
pub(crate) struct Call {
    script: &'static ScriptText,
    cmd: Cmd,
}

impl Call {
    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// The call as `EVALSHA`, and its script for an `EVAL` of the same
    /// call ([`ScriptText::eval_of`]) if the server forgot it.
    pub(crate) fn into_evalsha(self) -> (Cmd, &'static ScriptText) {
        (self.cmd, self.script)
    }
}

pub(crate) static INSERT_TEXT: LazyLock<ScriptText> = LazyLock::new(|| ScriptText::new(INSERT));
pub(crate) static UPDATE_TEXT: LazyLock<ScriptText> = LazyLock::new(|| ScriptText::new(UPDATE));
pub(crate) static INSERT_FIELDS_TEXT: LazyLock<ScriptText> =
    LazyLock::new(|| ScriptText::plain(INSERT_FIELDS));
pub(crate) static UPDATE_FIELDS_TEXT: LazyLock<ScriptText> =
    LazyLock::new(|| ScriptText::plain(UPDATE_FIELDS));
pub(crate) static DELETE_TEXT: LazyLock<ScriptText> = LazyLock::new(|| ScriptText::new(DELETE));
pub(crate) static MOVE_OUT_TEXT: LazyLock<ScriptText> =
    LazyLock::new(|| ScriptText::plain(MOVE_OUT));
pub(crate) static MOVE_IN_TEXT: LazyLock<ScriptText> = LazyLock::new(|| ScriptText::plain(MOVE_IN));
pub(crate) static INDEX_ADD_TEXT: LazyLock<ScriptText> =
    LazyLock::new(|| ScriptText::new(INDEX_ADD));
pub(crate) static GIVE_BACK_TEXT: LazyLock<ScriptText> =
    LazyLock::new(|| ScriptText::plain(GIVE_BACK));

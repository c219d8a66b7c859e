//! Names across nodes, as leases that Redis keeps: the Lua scripts, and
//! how their answers read. Redis runs each script atomically and reads its
//! own clock (`TIME`), so two nodes racing for a name get one winner, and
//! a dead node's names lapse by Redis's clock, not a node's.
//!
//! | key | holds |
//! |---|---|
//! | `pc:names` | hash: folded name → `<incarnation>\|<room>\|<since>\|<Name>` |
//! | `pc:lease` | sorted set: folded name → expiry (ms, Redis time) |
//! | `pc:inc:<incarnation>:names` | set: a node's folded names, to refresh |
//! | `pc:room:<room>:names` | set: the names in a room, for `/who` |
//! | `pc:rooms` | sorted set: room → members on every node, for `/rooms` |
//! | `pc:meta` | hash: `lease_seq`, the sequence of "server lost" entries |
//!
//! Every script first purges up to 100 expired names (the refresh, 2,000); each is removed
//! once, atomically, and its room's stream gets one `leave` entry
//! (`* bob left (server lost)`) from the pseudo-sender `lease` (incarnation
//! 0), so every node announces it exactly once.

use super::resp::Frame;

/// The purge every script starts with, and the value's parser.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function parse(v)
  return string.match(v, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
end
local function forget(n, v)
  local inc, room, _, disp = parse(v)
  redis.call('HDEL', 'pc:names', n)
  redis.call('ZREM', 'pc:lease', n)
  if inc then
    if redis.call('SREM', 'pc:room:' .. room .. ':names', disp) == 1 then
      if tonumber(redis.call('ZINCRBY', 'pc:rooms', -1, room)) <= 0 then
        redis.call('ZREM', 'pc:rooms', room)
      end
    end
    redis.call('SREM', 'pc:inc:' .. inc .. ':names', n)
  end
  return room, disp
end
local function purge(now, most)
  local gone = redis.call('ZRANGEBYSCORE', 'pc:lease', '-inf', now, 'LIMIT', 0, most or 100)
  for _, n in ipairs(gone) do
    local v = redis.call('HGET', 'pc:names', n)
    redis.call('ZREM', 'pc:lease', n)
    if v then
      local holder = parse(v)
      local room, disp = forget(n, v)
      if room then
        local seq = redis.call('HINCRBY', 'pc:meta', 'lease_seq', 1)
        redis.call('XADD', 'pc:' .. room .. ':log', 'MAXLEN', '~', '10000', '*',
          'v', '1', 'n', 'lease', 'i', '0', 's', seq, 'k', 'leave', 'f', disp,
          't', '* ' .. disp .. ' left (server lost)', 'o', holder)
      end
    end
  end
end
local function mine(v, inc)
  return v and string.sub(v, 1, #inc + 1) == inc .. '|'
end
"#;

/// ARGV: incarnation, folded name, Name, room, ttl ms, old folded name
/// (or ""), since (or ""). Returns since, the Redis millisecond the holder
/// first took the name: the name is ours (in that room); 0: someone else
/// holds it. Claiming a name we hold moves it to `room`; claiming with an
/// old name renames atomically. Claiming again with `since` (after Redis
/// was emptied) wins against a holder who took the name later: that
/// holder's node hears it at its next refresh.
const CLAIM: &str = r#"
local inc, n, disp, room, ttl, old, since = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
local now = now_ms()
purge(now)
local v = redis.call('HGET', 'pc:names', n)
if v and not mine(v, inc) then
  local holder, _, theirs = parse(v)
  if since == '' or not tonumber(theirs) or tonumber(since) >= tonumber(theirs) then return 0 end
  forget(n, v)
  -- Still listed as the loser's, so that its node's refresh says it lost it.
  redis.call('SADD', 'pc:inc:' .. holder .. ':names', n)
  v = nil
end
if v then
  local _, _, kept = parse(v)
  if since == '' then since = kept end
  forget(n, v)
end
if since == '' or not tonumber(since) then since = tostring(now) end
if old ~= '' and old ~= n then
  local ov = redis.call('HGET', 'pc:names', old)
  if mine(ov, inc) then forget(old, ov) end
end
redis.call('HSET', 'pc:names', n, inc .. '|' .. room .. '|' .. since .. '|' .. disp)
redis.call('ZADD', 'pc:lease', now + ttl, n)
if redis.call('SADD', 'pc:room:' .. room .. ':names', disp) == 1 then
  redis.call('ZINCRBY', 'pc:rooms', 1, room)
end
redis.call('SADD', 'pc:inc:' .. inc .. ':names', n)
return tonumber(since)
"#;

/// ARGV: incarnation, folded name. Deletes it only if it is ours.
const RELEASE: &str = r#"
local v = redis.call('HGET', 'pc:names', ARGV[2])
if mine(v, ARGV[1]) then forget(ARGV[2], v) return 1 end
return 0
"#;

/// ARGV: incarnation, ttl ms. Extends every lease this node holds;
/// returns the names (folded) it held and no longer does.
const REFRESH: &str = r#"
local inc, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
-- More at a time here than in the other scripts: every node refreshes,
-- so a dead node of thousands is cleared within a few refreshes.
purge(now, 2000)
local key = 'pc:inc:' .. inc .. ':names'
local lost = {}
for _, n in ipairs(redis.call('SMEMBERS', key)) do
  if mine(redis.call('HGET', 'pc:names', n), inc) then
    redis.call('ZADD', 'pc:lease', now + ttl, n)
  else
    redis.call('SREM', key, n)
    table.insert(lost, n)
  end
end
return lost
"#;

/// ARGV: room, how many names. `{count, {first names, sorted}}`.
const WHO: &str = r#"
purge(now_ms())
local key = 'pc:room:' .. ARGV[1] .. ':names'
return {redis.call('SCARD', key), redis.call('SORT', key, 'ALPHA', 'LIMIT', 0, tonumber(ARGV[2]))}
"#;

/// ARGV: how many. `{rooms with members, {room, count, …}}`, biggest first.
const ROOMS: &str = r#"
purge(now_ms())
return {redis.call('ZCARD', 'pc:rooms'), redis.call('ZREVRANGE', 'pc:rooms', 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')}
"#;

/// ARGV: folded addressee, node, sender incarnation, sender, text, kind.
/// Puts a private message (or an operator's action) in the addressee's
/// node's inbox stream
/// (`pc:@<incarnation>:log`); returns the addressee's name, or 0 if nobody
/// holds it. Its `s` counts over every message sent through Redis, so it
/// only ever grows: duplicates are dropped, and no gap is inferred.
const DIRECT: &str = r#"
purge(now_ms())
local v = redis.call('HGET', 'pc:names', ARGV[1])
if not v then return 0 end
local inc, room, _, disp = parse(v)
local seq = redis.call('HINCRBY', 'pc:meta', 'msg_seq', 1)
redis.call('XADD', 'pc:@' .. inc .. ':log', 'MAXLEN', '~', '1000', '*',
  'v', '1', 'n', ARGV[2], 'i', ARGV[3], 's', seq, 'k', ARGV[6], 'f', ARGV[4], 't', ARGV[5], 'o', disp)
return disp
"#;

/// Which script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    Claim,
    Release,
    Refresh,
    Who,
    Direct,
    Rooms,
}

impl Script {
    /// The whole text sent with `EVAL`: the prelude, then the script.
    pub fn source(self) -> String {
        let body = match self {
            Script::Claim => CLAIM,
            Script::Release => RELEASE,
            Script::Refresh => REFRESH,
            Script::Who => WHO,
            Script::Direct => DIRECT,
            Script::Rooms => ROOMS,
        };
        format!("{PRELUDE}{body}")
    }
}

/// `WHO`'s answer: the count, and the first names.
pub fn parse_who(frame: &Frame) -> Option<(u64, Vec<String>)> {
    let [Frame::Integer(count), names] = frame.as_array()? else {
        return None;
    };
    let names = names
        .as_array()?
        .iter()
        .filter_map(|n| Some(crate::sanitize::sanitize(n.as_bytes()?)))
        .collect();
    Some((u64::try_from(*count).ok()?, names))
}

/// `ROOMS`'s answer: how many rooms have members, and the biggest.
pub fn parse_rooms(frame: &Frame) -> Option<(u64, Vec<(String, u64)>)> {
    let [Frame::Integer(count), list] = frame.as_array()? else {
        return None;
    };
    let rooms = list
        .as_array()?
        .chunks(2)
        .filter_map(|pair| {
            let [name, n] = pair else { return None };
            let n = std::str::from_utf8(n.as_bytes()?).ok()?.parse().ok()?;
            Some((crate::sanitize::sanitize(name.as_bytes()?), n))
        })
        .collect();
    Some((u64::try_from(*count).ok()?, rooms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_carries_the_prelude() {
        for s in [
            Script::Claim,
            Script::Release,
            Script::Refresh,
            Script::Who,
            Script::Direct,
            Script::Rooms,
        ] {
            assert!(s.source().contains("local function purge"), "{s:?}");
        }
    }

    #[test]
    fn who_answers_parse_and_others_do_not() {
        let ok = Frame::Array(Some(vec![
            Frame::Integer(3),
            Frame::Array(Some(vec![Frame::Bulk(Some(b"alice".to_vec()))])),
        ]));
        assert_eq!(parse_who(&ok), Some((3, vec!["alice".into()])));
        assert_eq!(parse_who(&Frame::Integer(1)), None);
    }
}

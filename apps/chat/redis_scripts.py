"""The Lua scripts the Redis broker runs: each is one atomic step on the shared state.

The state, under a prefix ``P`` (``reactor-chat:DB:``):

* ``P nick:NICK`` (NICK case-folded): ``"NODE DisplayNick"``, with a time to
  live that the owning node's heartbeat keeps refreshing. ``SET`` only when
  absent or already this node's: the registry that keeps nicks unique.
* ``P members:NODE``: a set of the display nicks on NODE (for ``/who``).
* ``P nodes``: a sorted set of live nodes, scored by when each expires
  (Redis's own clock, so the nodes' clocks do not matter): presence.
* channels ``P room`` (every room line, in one order for everyone) and
  ``P node:NODE`` (private messages for the users on NODE).

Nicks are ASCII, so Lua's ``string.lower`` is Python's ``casefold`` for them.
"""

from __future__ import annotations

__all__ = ["CLAIM", "GONE", "HEARTBEAT", "PRIVATE", "RELEASE", "SWEEP", "WHO"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_MINE = """
local function mine(value, node)
  return value and string.sub(value, 1, #node + 1) == node .. ' '
end
"""

#: KEYS: nick key, members set. ARGV: node, display nick, ttl (ms).
#: Returns 1 if the nick is now this node's, 0 if another node holds it.
CLAIM = (
    _MINE
    + """
local v = redis.call('GET', KEYS[1])
if v and not mine(v, ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"""
)

#: KEYS: nick key, members set. ARGV: node, display nick, "1" to keep the key
#: (a change of case only: the key is the new nick's too).
RELEASE = (
    _MINE
    + """
redis.call('SREM', KEYS[2], ARGV[2])
if ARGV[3] ~= '1' and mine(redis.call('GET', KEYS[1]), ARGV[1]) then
  redis.call('DEL', KEYS[1])
end
return 1
"""
)

#: KEYS: nodes zset, members set. ARGV: node, ttl (ms), prefix, display nicks...
#: Renews the node's presence and every nick it holds (claiming again those
#: Redis lost, say after a restart). Returns {new, lost}: 1 if the node was
#: not in the presence set (it had been declared dead, or Redis is new), and
#: the nicks another node took meanwhile.
HEARTBEAT = (
    _NOW
    + _MINE
    + """
local node, ttl, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local new = redis.call('ZADD', KEYS[1], now + ttl, node)
redis.call('DEL', KEYS[2])
local lost = {}
for i = 4, #ARGV do
  local nick = ARGV[i]
  local key = prefix .. 'nick:' .. string.lower(nick)
  local v = redis.call('GET', key)
  if v and not mine(v, node) then
    lost[#lost + 1] = nick
  else
    redis.call('SET', key, node .. ' ' .. nick, 'PX', ttl)
    redis.call('SADD', KEYS[2], nick)
  end
end
redis.call('PEXPIRE', KEYS[2], ttl * 10)
return {new, lost}
"""
)

# Removes NODE: its nicks are freed and each one's departure is published.
_GONE_FUNCTION = """
local function gone(node, prefix, room, before, after)
  local set = prefix .. 'members:' .. node
  local count = 0
  for _, nick in ipairs(redis.call('SMEMBERS', set)) do
    local key = prefix .. 'nick:' .. string.lower(nick)
    if mine(redis.call('GET', key), node) then redis.call('DEL', key) end
    redis.call('PUBLISH', room, before .. nick .. after)
    count = count + 1
  end
  redis.call('DEL', set)
  redis.call('ZREM', prefix .. 'nodes', node)
  return count
end
"""

#: KEYS: nodes zset, room channel. ARGV: prefix, line before the nick, line after it.
#: Every node whose presence expired is removed, its users' departures
#: announced once (the script is atomic: two nodes sweeping do not both announce).
SWEEP = (
    _NOW
    + _MINE
    + _GONE_FUNCTION
    + """
local count = 0
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  count = count + gone(node, ARGV[1], KEYS[2], ARGV[2], ARGV[3])
end
return count
"""
)

#: KEYS: room channel. ARGV: node, prefix, line before the nick, line after it.
#: This node is shutting down: the same as being swept, at once.
GONE = (
    _MINE
    + _GONE_FUNCTION
    + """
return gone(ARGV[1], ARGV[2], KEYS[1], ARGV[3], ARGV[4])
"""
)

#: KEYS: nodes zset. ARGV: prefix. Every nick on every live node.
WHO = (
    _NOW
    + """
local out = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  for _, nick in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'members:' .. node)) do
    out[#out + 1] = nick
  end
end
return out
"""
)

#: KEYS: the target's nick key. ARGV: prefix, sender, text, sender's node.
#: Publishes the message to the target's node and the receipt to the
#: sender's; returns the target's display nick, or nil if no live node has it.
PRIVATE = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
local space = string.find(v, ' ', 1, true)
local node, nick = string.sub(v, 1, space - 1), string.sub(v, space + 1)
local message = {k = 'pm', from = ARGV[2], to = nick, text = ARGV[3]}
if redis.call('PUBLISH', ARGV[1] .. 'node:' .. node, cjson.encode(message)) == 0 then
  return false
end
message.k = 'sent'
redis.call('PUBLISH', ARGV[1] .. 'node:' .. ARGV[4], cjson.encode(message))
return nick
"""

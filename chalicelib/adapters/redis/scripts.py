"""The queue's Lua scripts (``queue.py`` runs them).  Every key comes in KEYS."""

from __future__ import annotations

# The aging rule of ``core.model.ready_score`` in Lua, fed the head starts that
# ``core.model.head_start_ms`` computed (``head[rank + 1]``, rank 0 = critical).
# The claim script applies it to due delayed ids; a property test runs this very
# text against Python's definition on random inputs.
READY_SCORE_LUA = """
local function ready_score(at, rank, head)
  return at - head[rank + 1]
end
"""

CLAIM_CONTRACT = """
-- KEYS[1] delayed, KEYS[2] leases, KEYS[3] active tenants, KEYS[4] fair finish tags,
--   KEYS[5] fair clock, KEYS[6] tenant weights, KEYS[7] tenant max running; then, for
--   each of the L task types with limits (in ARGV order, i = 0 .. L-1): KEYS[8+3i] its
--   ready set, KEYS[9+3i] its inflight set, KEYS[10+3i] its token bucket; then, for
--   each of the T known tenants (j = 0 .. T-1): KEYS[8+3L+2j] its ready set,
--   KEYS[9+3L+2j] its running set
-- ARGV[1] how many ids to claim, ARGV[2] lease (ms), ARGV[3] most delayed ids to
--   promote in one call, ARGV[4..7] head start (ms) of priority rank 0..3,
--   ARGV[8] L, then L groups of (name, max concurrency or 0, rate per second or 0, burst),
--   then T, then the T tenant names
-- Returns a flat list in claim order: id, task type name ('' when unlimited), ...; or
--   '?' followed by tenant names when a tenant it must touch was not in KEYS (nothing
--   was changed: call again with those tenants).
"""

# Nothing is popped destructively: every id leaves a ready set only by entering
# ``leases`` in the same atomic step, so a drainer that dies after this call leaves
# a trail the sweeper follows.  Time is Redis's own clock so that every drainer
# agrees on what is due.
#
# Fair share (see README "Fair share between tenants"): each tenant has a ready set
# scored by ready_score, so a tenant's own order is exactly the aging order.  Across
# tenants each slot goes to the best head by score (priority and aging hold across
# tenants), except that among the tenants whose head has the same priority as that
# best head, and still beats every head of another priority, the slot goes to the
# one with the smallest virtual finish tag: start-time fair queueing, where a
# tenant's tag grows by 1/weight per task it is served and the virtual clock moves
# with service (the start tag of the last pick), never with wall-clock time.  A
# tenant that was idle starts at the clock, so it can bank no credit and a late
# arrival interleaves with a flood at once.  A tenant at its max_running quota is
# simply not looked at.  Limited task types keep their own ready sets (their limits
# bound every tenant's share) and compete with the tenant heads by score.
#
# One tenant, no limited types and no quota: a plain ZPOPMIN, no fairness bookkeeping
# (fair state only matters once two tenants compete).
CLAIM_BODY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = tonumber(ARGV[1])
local head = {tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])}
local limited = {}
local nlimited = tonumber(ARGV[8])
for i = 0, nlimited - 1 do
  local b = 9 + i * 4
  local k = 8 + i * 3
  limited[ARGV[b]] = {conc = tonumber(ARGV[b + 1]), rate = tonumber(ARGV[b + 2]), burst = tonumber(ARGV[b + 3]),
                      ready = KEYS[k], inflight = KEYS[k + 1], bucket = KEYS[k + 2]}
end
local tb = 9 + nlimited * 4
local kb = 8 + nlimited * 3
local known = {}
for j = 0, tonumber(ARGV[tb]) - 1 do
  known[ARGV[tb + 1 + j]] = {queue = KEYS[kb + 2 * j], running = KEYS[kb + 2 * j + 1]}
end

-- due member: "<rank>:<uuid>:<n>:<tenant (n bytes)><limited type or nothing>"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local promote = {}
local missing = {}
for i = 1, #due, 2 do
  local m = due[i]
  local colon = string.find(m, ':', 40, true)
  local n = tonumber(string.sub(m, 40, colon - 1))
  local tenant = string.sub(m, colon + 1, colon + n)
  local tname = string.sub(m, colon + n + 1)
  local rank = tonumber(string.sub(m, 1, 1))
  local p = {member = m, id = string.sub(m, 3, 38), tenant = tenant,
             score = ready_score(tonumber(due[i + 1]), rank, head), lim = limited[tname]}
  if not p.lim and not known[tenant] then
    missing[#missing + 1] = tenant
  end
  promote[#promote + 1] = p
end
local active = redis.call('SMEMBERS', KEYS[3])
for _, name in ipairs(active) do
  if not known[name] then
    missing[#missing + 1] = name
  end
end
if #missing > 0 then
  local reply = {'?'}
  for _, name in ipairs(active) do reply[#reply + 1] = name end
  for _, name in ipairs(missing) do reply[#reply + 1] = name end
  return reply
end
for _, p in ipairs(promote) do
  if p.lim then
    redis.call('ZADD', p.lim.ready, 'NX', p.score, p.id)
  else
    redis.call('ZADD', known[p.tenant].queue, 'NX', p.score, string.sub(p.member, 1, 38))
    redis.call('SADD', KEYS[3], p.tenant)
  end
  redis.call('ZREM', KEYS[1], p.member)
end
if #promote > 0 then
  active = redis.call('SMEMBERS', KEYS[3])
end

local deadline = now + tonumber(ARGV[2])
local out = {}
local maxrun = {}
if #active > 0 then
  maxrun = redis.call('HMGET', KEYS[7], unpack(active))
end
if nlimited == 0 and #active == 1 and not maxrun[1] then
  local q = known[active[1]].queue
  local popped = redis.call('ZPOPMIN', q, count)
  if #popped > 0 then
    local leased = {}
    for i = 1, #popped, 2 do
      local id = string.sub(popped[i], 3)
      out[#out + 1] = id
      out[#out + 1] = ''
      leased[#leased + 1] = deadline
      leased[#leased + 1] = id
    end
    redis.call('ZADD', KEYS[2], unpack(leased))
  end
  if #popped < count * 2 then
    redis.call('SREM', KEYS[3], active[1])
  end
  return out
end

-- Tenant heads: up to `allowed` ids of each active tenant, in its own order.
local ts = {}
if #active > 0 then
  local weights = redis.call('HMGET', KEYS[6], unpack(active))
  local finish = redis.call('HMGET', KEYS[4], unpack(active))
  local clock = tonumber(redis.call('GET', KEYS[5])) or 0
  for i, name in ipairs(active) do
    local k = known[name]
    local allowed = count
    local cap = tonumber(maxrun[i])
    if cap then
      redis.call('ZREMRANGEBYSCORE', k.running, '-inf', now)
      allowed = math.min(allowed, cap - redis.call('ZCARD', k.running))
    end
    local items = {}
    if allowed > 0 then
      items = redis.call('ZRANGE', k.queue, 0, allowed - 1, 'WITHSCORES')
    end
    if #items == 0 then
      if redis.call('ZCARD', k.queue) == 0 then
        redis.call('SREM', KEYS[3], name)
      end
    else
      ts[#ts + 1] = {name = name, k = k, items = items, pos = 1, taken = 0, capped = cap ~= nil,
                     w = tonumber(weights[i]) or 1, f = math.max(tonumber(finish[i]) or 0, clock)}
    end
  end
end

local cands = {}
for name, lim in pairs(limited) do
  local allowed = count
  if lim.conc > 0 then
    redis.call('ZREMRANGEBYSCORE', lim.inflight, '-inf', now)
    allowed = math.min(allowed, lim.conc - redis.call('ZCARD', lim.inflight))
  end
  if lim.rate > 0 then
    local state = redis.call('HMGET', lim.bucket, 'tokens', 'ts')
    local tokens = tonumber(state[1]) or lim.burst
    local last = tonumber(state[2]) or now
    tokens = math.min(lim.burst, tokens + (now - last) * lim.rate / 1000)
    lim.tokens = tokens
    allowed = math.min(allowed, math.floor(tokens))
  end
  if allowed > 0 then
    local c = redis.call('ZRANGE', lim.ready, 0, allowed - 1, 'WITHSCORES')
    for i = 1, #c, 2 do
      cands[#cands + 1] = {tonumber(c[i + 1]), c[i], name}
    end
  end
end
table.sort(cands, function(a, b) return a[1] < b[1] end)

local ci = 1
local clock = nil
local taken = {}
for _ = 1, count do
  local best, bs = nil, math.huge
  for _, s in ipairs(ts) do
    if s.pos * 2 <= #s.items then
      local sc = tonumber(s.items[s.pos * 2])
      if sc < bs then best, bs = s, sc end
    end
  end
  local c = cands[ci]
  if c and c[1] < bs then
    ci = ci + 1
    local lim = limited[c[3]]
    redis.call('ZREM', lim.ready, c[2])
    -- An id whose lease is live is running: this entry is a duplicate (the sweeper's
    -- reconcile read the row QUEUED just before a claim took it).  Handed out, its
    -- claim would fail, and its stale ack would free the running task's slot.
    local held = lim.conc > 0 and tonumber(redis.call('ZSCORE', KEYS[2], c[2]))
    if not held or held <= now then
      if lim.conc > 0 then
        redis.call('ZADD', lim.inflight, deadline, c[2])
      end
      taken[c[3]] = (taken[c[3]] or 0) + 1
      redis.call('ZADD', KEYS[2], deadline, c[2])
      out[#out + 1] = c[2]
      out[#out + 1] = c[3]
    end
  elseif best then
    local rank = string.sub(best.items[best.pos * 2 - 1], 1, 1)
    local other = math.huge
    for _, s in ipairs(ts) do
      if s.pos * 2 <= #s.items and string.sub(s.items[s.pos * 2 - 1], 1, 1) ~= rank then
        other = math.min(other, tonumber(s.items[s.pos * 2]))
      end
    end
    local pick = best
    for _, s in ipairs(ts) do
      if s.pos * 2 <= #s.items and string.sub(s.items[s.pos * 2 - 1], 1, 1) == rank then
        local sc = tonumber(s.items[s.pos * 2])
        if sc < other and (s.f < pick.f or (s.f == pick.f and sc < tonumber(pick.items[pick.pos * 2]))) then
          pick = s
        end
      end
    end
    clock = pick.f
    pick.f = pick.f + 1 / pick.w
    local id = string.sub(pick.items[pick.pos * 2 - 1], 3)
    pick.pos = pick.pos + 1
    pick.taken = pick.taken + 1
    if pick.capped then
      redis.call('ZADD', pick.k.running, deadline, id)
    end
    redis.call('ZADD', KEYS[2], deadline, id)
    out[#out + 1] = id
    out[#out + 1] = ''
  else
    break
  end
end
for _, s in ipairs(ts) do
  if s.taken > 0 then
    redis.call('ZREMRANGEBYRANK', s.k.queue, 0, s.taken - 1)
    if redis.call('ZCARD', s.k.queue) == 0 then
      redis.call('SREM', KEYS[3], s.name)
    end
    if #ts > 1 then
      redis.call('HSET', KEYS[4], s.name, s.f)
    end
  end
end
if clock and #ts > 1 then
  redis.call('SET', KEYS[5], clock)
end
for name, lim in pairs(limited) do
  if lim.rate > 0 then
    redis.call('HSET', lim.bucket, 'tokens', lim.tokens - (taken[name] or 0), 'ts', now)
    redis.call('PEXPIRE', lim.bucket, math.ceil(lim.burst / lim.rate * 1000) + 1000)
  end
end
return out
"""

CLAIM = CLAIM_CONTRACT + READY_SCORE_LUA + CLAIM_BODY

# Pushes the deadline of leases (and concurrency and running slots) still present;
# XX: an id acked meanwhile stays gone.
EXTEND = """
-- KEYS[1] leases, KEYS[2..] the inflight sets of the task types with limits, then the
--   running sets of the batch's tenants
-- ARGV[1] lease (ms), ARGV[2..] triples of (id, index in KEYS of its inflight set or 0,
--   index in KEYS of its tenant's running set or 0)
-- Returns how many leases were extended.
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV, 3 do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i])
  for j = 1, 2 do
    local slot = tonumber(ARGV[i + j])
    if slot > 0 then
      redis.call('ZADD', KEYS[slot], 'XX', deadline, ARGV[i])
    end
  end
end
return n
"""

EXPIRED = """
-- KEYS[1] leases; ARGV[1] limit
-- Returns ids whose Redis lease deadline has passed (by Redis's clock).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""

# Ready ids of one tenant, of unlimited types, into a single-partition queue (a single
# submit's push, or the few the pusher thread coalesced): the ZADD, SADD, LPUSH and LTRIM
# of ``Queue._add`` as one command.  Through redis-py a four-command pipeline cost the
# submitting process 333k instructions, this script call for one id 196k (callgrind;
# issue 14 round 6, bench/RESULTS.md); the pusher's coalesced pushes (30 % of them with
# 8 HTTP clients) took the pipeline until round 14.  In one step the SADD still follows
# the ZADD, so a claim emptying the set in between cannot strand an id.  One token an
# id, at most ARGV[2], as ``_wake`` pushes them.
PUSH_READY = """
-- KEYS[1] the tenant's ready set, KEYS[2] active tenants, KEYS[3] wake tokens
-- ARGV[1] tenant, ARGV[2] most tokens, ARGV[3..] score and member ("<rank>:<id>") pairs
redis.call('ZADD', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[2], ARGV[1])
local most = tonumber(ARGV[2])
local tokens = {}
for i = 1, math.min((#ARGV - 2) / 2, most) do
    tokens[i] = '1'
end
redis.call('LPUSH', KEYS[3], unpack(tokens))
redis.call('LTRIM', KEYS[3], 0, most - 1)
return 1
"""

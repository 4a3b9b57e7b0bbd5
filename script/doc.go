// Package script runs Redis Lua scripts (EVAL, EVALSHA, EVAL_RO,
// EVALSHA_RO, SCRIPT LOAD|EXISTS|FLUSH|KILL) with Redis 7.0's semantics, on
// github.com/yuin/gopher-lua (Lua 5.1, as Redis). It knows nothing of the
// server: a server implements Caller, which runs the Redis commands a
// script calls, and writes the Reply a run answers (Reply.AppendRESP, in
// RESP2 or RESP3). pgmirror's socket server does not use it yet.
//
// # Using it
//
//	e := script.New(script.Config{Timeout: time.Second, Logger: log})
//	keys, args, rep, ok := script.SplitKeys(argv[2:])   // EVAL body numkeys ...
//	s, rep := e.Script(body)                            // or e.Lookup(sha): NOSCRIPT if absent
//	ro := s.ReadOnly(isROCommand)                       // the Caller refuses writes when true
//	rep, err := e.Run(ctx, s, script.Request{Keys: keys, Args: args, ReadOnly: isROCommand, Caller: c})
//
// Eval and EvalSHA do Script or Lookup, then Run. Load, Exists, Flush and
// Kill are SCRIPT LOAD, EXISTS, FLUSH and KILL. Run's error is non-nil only
// when the Caller aborted the run (Caller.Call returned an error: a server
// that runs a script against its cache first and again inside a transaction
// at its first write aborts the first run that way) or ctx ended; every
// other outcome is a Reply, error replies included.
//
// # Semantics, as Redis 7.0
//
// The environment is Redis 7.0.15's: the globals are _G, _VERSION, KEYS,
// ARGV, assert, collectgarbage, error, gcinfo, getmetatable, ipairs, load,
// loadstring, next, pairs, pcall, rawequal, rawget, rawset, select,
// setmetatable, tonumber, tostring, type, unpack, xpcall, and the libraries
// string, table, math, coroutine, cjson, bit and redis. There is no os, io,
// debug, package, require, module, loadfile, dofile, print, getfenv, setfenv
// or newproxy; load and loadstring compile source text only (no
// precompiled chunks). Reading an undefined global raises "Script attempted
// to access nonexistent global variable 'x'"; assigning one, or changing any
// table reachable from the globals (string.rep = ..., rawset(_G, ...),
// setmetatable(_G, ...), table.insert(string, ...), getmetatable("").__index
// = ...), raises "Attempt to modify a readonly table", as Redis 7.0 does. So
// no run can change what a later run sees; KEYS and ARGV are set for each run.
//
// redis.call and redis.pcall convert a command's reply to Lua as Redis
// does: integer -> number, bulk string -> string, null -> false (nil after
// redis.setresp(3)), array -> table, status -> {ok=...}, error ->
// {err=...}; redis.call raises an error reply (the EVAL error reads "ERR
// ... script: <sha>, on @user_script:<line>."), redis.pcall returns it. A
// number argument is sent as %.17g, a string as it is, anything else is
// refused ("Lua redis lib command arguments must be strings or integers").
// The script's return value converts back: number -> integer (truncated),
// string -> bulk, true -> 1, false and nil -> null, table -> array of its
// elements up to the first nil, {ok=} -> status, {err=} -> error, and the
// RESP3 forms {double=}, {map=}, {set=}, {big_number=},
// {verbatim_string=}. redis.error_reply, redis.status_reply,
// redis.sha1hex, redis.log (to Config.Logger: LOG_DEBUG and LOG_VERBOSE at
// debug, LOG_NOTICE at info, LOG_WARNING at warn), redis.setresp,
// redis.set_repl (no effect), redis.replicate_commands,
// redis.acl_check_cmd (always true: pgmirror has no ACLs), redis.breakpoint
// and redis.debug (no debugger), redis.REDIS_VERSION and the LOG_* and
// REPL_* constants are there. pcall returns the message of an {err=} error,
// as Redis's does.
//
// cjson is lua-cjson 2.1.0 as Redis ships it (escaping '/', 14 significant
// digits, sparse-array and depth rules, cjson.null, cjson.new and the
// configuration functions), bit is Lua BitOp (tobit, tohex, bnot, band, bor,
// bxor, lshift, rshift, arshift, rol, ror, bswap). math.random and
// math.randomseed are Redis's (its rand48): every run starts from the state
// a Redis 7.0 server starts with, so a run that is started again draws the
// same numbers. A shebang line (#!lua flags=no-writes,...) is read as Redis
// reads it; EVAL_RO of a script without no-writes answers Redis's error.
// The script cache maps the sha1 of a body to its compiled form; EVALSHA of
// an unknown sha answers "NOSCRIPT No matching script. Please use EVAL.".
//
// A run never outlives Config.Timeout (default 1s), or Request.Deadline when
// the server sets one (to give a run started again inside a transaction the
// first run's deadline): at the limit it stops, whatever pcall it is in, and
// answers "ERR Script timed out ...". Kill
// (SCRIPT KILL) stops the runs in progress whose Caller has not written and
// answers OK; with none running it answers NOTBUSY, and UNKILLABLE when
// every run in progress has written. Runs are concurrent: each has a Lua
// state of its own, taken from a pool; it is up to the server to make them
// atomic (locks on the keys a run declares: KeySet and UndeclaredKeyError
// help it refuse the others).
//
// # Bounds
//
//   - Source: a body over Config.MaxScriptBytes (1 MiB) is refused, and so
//     is a loadstring or load chunk over it.
//   - Script cache: at most Config.MaxCacheScripts (1000) scripts and
//     Config.MaxCacheBytes (64 MiB) of bodies. Scripts loaded by SCRIPT LOAD
//     stay until SCRIPT FLUSH; to make room the cache evicts scripts it
//     learned from EVAL, least recently used first (as Redis 7.4 does). When
//     loaded scripts alone fill it, SCRIPT LOAD answers an error and EVAL
//     runs its script without caching it.
//   - Strings: every string a script makes through concatenation (a .. b
//     compiles to a checked call), string.rep, string.format (widths and
//     precisions have at most two digits, as in Lua 5.1), string.gsub,
//     string.upper, string.lower, string.reverse, table.concat and
//     cjson.encode is at most Config.MaxStringBytes (64 MiB), checked before
//     it is made: "string length overflow".
//   - Memory: what one run makes through those, plus 32 bytes an entry for
//     table.insert and cjson.decode, is counted; at every quarter of
//     Config.MaxAllocBytes (256 MiB) so counted the engine collects garbage
//     and stops the run ("not enough memory") when what it holds (the live
//     heap's growth since its first check, plus what it had made before) is
//     over MaxAllocBytes. Garbage does not count (a string built by repeated
//     concatenation runs on), but the heap is the process's: what other
//     goroutines keep meanwhile counts too, and each check is a full
//     collection.
//   - Tables: table.insert and cjson.decode build tables of at most
//     Config.MaxTableEntries (1M) entries.
//   - Stacks: at most Config.MaxCallDepth (1000) Lua call frames and
//     Config.MaxStackSlots (256K) stack slots ("stack overflow"), which also
//     bounds unpack, string.byte and select; at most Config.MaxCoroutines
//     (100) coroutines a run; cjson nests at most 1000 levels.
//   - The reply: at most Config.MaxReplyBytes (256 MiB, strings plus 16 bytes
//     an element) and 7995 levels deep ("reached lua stack limit" there, as
//     Redis).
//   - redis.log: Config.MaxLogLines (100) lines a run of at most 4 KiB each.
//   - collectgarbage never collects (it would stop the whole process).
//
// # What stays unbounded
//
// Only the time limit bounds these. Table entries made by assignment
// (t[k] = v, {...} constructors) are not counted: gopher-lua runs them as
// instructions without a hook, so a run can fill tables for its whole time
// limit (a tight loop makes a few million entries a second, a few hundred
// MB). Closures and other objects a script creates are likewise uncounted.
// Strings made by string.sub, string.char and tostring are bounded by their
// input or the stack. A single library call runs to its end: a pattern
// match (string.find, match, gmatch, gsub) with nested quantifiers over a
// long subject can run past the time limit before the run stops, as in
// Redis, where a C library call is not interrupted either. Memory is never
// measured: the bounds above are counts of what the script asked for.
//
// # Where it differs from Redis
//
// Runtime and syntax errors raised by the Lua VM itself are worded by
// gopher-lua ("attempt to call a non-function object" where Lua says
// "attempt to call local 'x' (a nil value)"; "syntax error near" where Lua
// says "unexpected symbol near"); the errors of the redis, cjson, bit,
// string and table libraries and of the sandbox are Redis's, word for word.
// cjson.encode writes an object's keys in gopher-lua's table order, not
// Lua's. A cjson configuration change lasts for its run only (Redis keeps it
// for later scripts). string.dump and the struct and cmsgpack libraries are
// not provided. A stack overflow answers "ERR Error running script <sha>,
// stack overflow" without a line number.
package script

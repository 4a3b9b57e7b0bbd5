package unixsock

import "strings"

// pgmirror stores strings only: the commands of Redis's other data types
// answer Redis's unknown-command error with a hint saying so.

// dataTypeCommands maps each command of a data type pgmirror does not
// store (in lower case) to that type's name.
var dataTypeCommands = func() map[string]string {
	types := map[string]string{
		"hash": "hset hsetnx hmset hget hmget hgetall hdel hexists hincrby hincrbyfloat hkeys hvals hlen " +
			"hstrlen hrandfield hscan",
		"list": "lpush rpush lpushx rpushx lpop rpop lrange llen lindex lset lrem ltrim linsert lpos lmove " +
			"lmpop rpoplpush blpop brpop brpoplpush blmove blmpop",
		"set": "sadd srem smembers sismember smismember scard spop srandmember smove sinter sintercard " +
			"sinterstore sunion sunionstore sdiff sdiffstore sscan",
		"sorted set": "zadd zrem zrange zrangestore zrangebyscore zrevrange zrevrangebyscore zrangebylex " +
			"zrevrangebylex zcard zscore zmscore zincrby zrank zrevrank zcount zlexcount zpopmin zpopmax " +
			"bzpopmin bzpopmax zmpop bzmpop zremrangebyrank zremrangebyscore zremrangebylex zunion " +
			"zunionstore zinter zinterstore zintercard zdiff zdiffstore zrandmember zscan " +
			"geoadd geodist geohash geopos georadius georadius_ro georadiusbymember georadiusbymember_ro " +
			"geosearch geosearchstore",
		"stream": "xadd xrange xrevrange xlen xread xreadgroup xgroup xack xpending xclaim xautoclaim " +
			"xdel xtrim xinfo xsetid",
	}
	m := map[string]string{}
	for typ, names := range types {
		for _, n := range strings.Fields(names) {
			m[n] = typ
		}
	}
	return m
}()

// dataTypeHint returns the hint added to the unknown-command error of a
// data type's command, or "" for any other name.
func dataTypeHint(name []byte) string {
	typ, ok := dataTypeCommands[strings.ToLower(string(name))]
	if !ok {
		return ""
	}
	return "(pgmirror stores strings only; " + typ + " commands are not supported)"
}

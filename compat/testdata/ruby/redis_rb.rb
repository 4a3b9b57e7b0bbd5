# redis-rb (Debian's ruby-redis) against the server on ARGV[0]: prints
# "== case" and one line per reply; keys start with ARGV[1]. The same calls
# run against redis-server and pgmirror, and compat_test.go compares what
# they print. The library is used as an application would, with only the
# socket path set.
require 'redis'
require 'json'

SOCKET, PREFIX = ARGV
$stdout.sync = true
R = Redis.new(path: SOCKET, timeout: 15)
R2 = Redis.new(path: SOCKET, timeout: 15)

def k(name) = PREFIX + name

def out(*xs)
  puts xs.map { |x| x.is_a?(Exception) ? "error: #{x.message}" : JSON.generate(x) }.join(' ')
end

def basic
  out R.set(k('a'), '1'), R.get(k('a')), R.incr(k('a')), R.incrby(k('a'), 5), R.get(k('missing'))
  out R.set(k('a'), 'x', nx: true), R.mget(k('a'), k('missing')), R.exists(k('a'), k('missing'))
  out R.set(k('t'), 'v', ex: 60), R.ttl(k('t')) > 50, R.del(k('a'), k('t'))
end

def pipelined
  out(R.pipelined { |p| p.set(k('p'), '1'); p.incr(k('p')); p.get(k('p')) })
end

def multi
  out(R.multi { |m| m.set(k('m'), '1'); m.incr(k('m')); m.get(k('m')) })
  out R.mget(k('m'))
end

def watch
  R.set(k('w'), '0')
  res = R.watch(k('w')) do |c|
    R2.set(k('w'), 'changed')
    c.multi { |m| m.set(k('w'), 'mine') }
  end
  out res, R.get(k('w'))
end

def eval_case
  out R.eval("return {KEYS[1], ARGV[1], 2.9, false, 'x'}", keys: [k('e')], argv: ['a'])
  sha = R.script(:load, "return redis.call('INCRBY', KEYS[1], ARGV[1])")
  out sha, R.evalsha(sha, keys: [k('n')], argv: ['5']), R.script(:exists, [sha, '0' * 40])
end

def scan_each
  40.times { |i| R.set(k("scan:#{i}"), 'v') }
  out R.scan_each(match: k('scan:1*'), count: 7).to_a.sort
end

def flushdb
  R.set(k('f'), 'v')
  out R.flushdb, R.exists(k('f')), R.dbsize
end

[['basic', :basic], ['pipelined', :pipelined], ['multi', :multi], ['watch', :watch], ['eval', :eval_case],
 ['scan-each', :scan_each], ['flushdb', :flushdb]].each do |name, fn|
  puts "== #{name}"
  begin
    send(fn)
  rescue StandardError => e
    out 'error', e.class.name, e.message
  end
end

// ioredis against the server on argv[2]: prints "== case" and one line per
// reply; keys start with argv[3]. The same calls run against redis-server
// and pgmirror, and compat_test.go compares what they print. The library is
// used as an application would, with only the socket path set.
'use strict';
const Redis = require('ioredis');

const [socket, prefix] = process.argv.slice(2);
const k = (name) => prefix + name;
// Errors inside replies (a pipeline's, a transaction's) print as their message.
const show = (x) => JSON.stringify(x, (_, v) => (v instanceof Error ? `error: ${v.message}` : v));
const out = (...xs) => console.log(xs.map(show).join(' '));
const connect = () => new Redis({ path: socket, maxRetriesPerRequest: 1, enableOfflineQueue: true });

async function ready(r) {
  // enableReadyCheck (the default) sends INFO and waits for loading:0.
  if (r.status !== 'ready') await new Promise((resolve, reject) => { r.once('ready', resolve); r.once('error', reject); });
  out('status', r.status);
}

async function basic(r) {
  out(await r.set(k('a'), '1'), await r.get(k('a')), await r.incr(k('a')), await r.incrby(k('a'), 5), await r.get(k('missing')));
  out(await r.set(k('a'), 'x', 'NX'), await r.mget(k('a'), k('missing')), await r.exists(k('a'), k('missing')));
  out(await r.set(k('t'), 'v', 'EX', 60), (await r.ttl(k('t'))) > 50, await r.del(k('a'), k('t')), await r.getdel(k('missing')));
}

async function pipeline(r) {
  out(await r.pipeline().set(k('p'), '1').incr(k('p')).get(k('p')).set(k('p2'), 'abc').incr(k('p2')).exec());
}

async function multi(r) {
  out(await r.multi().set(k('m'), '1').incr(k('m')).get(k('m')).set(k('m2'), 'abc').incr(k('m2')).exec());
  out(await r.mget(k('m'), k('m2')));
}

// A command refused at queue time: EXEC answers EXECABORT and nothing of the
// block applies (the half-applied block).
async function multiQueueError(r) {
  try {
    out(await r.multi().set(k('q'), '1').call('NOSUCHCOMMAND', 'x').incr(k('q')).exec());
  } catch (e) {
    out('exec error', e.message);
  }
  out(await r.exists(k('q')));
}

async function watch(r, r2) {
  await r.set(k('w'), '0');
  await r.watch(k('w'));
  await r2.set(k('w'), 'changed');
  out(await r.multi().set(k('w'), 'mine').exec(), await r.get(k('w')));
  await r.watch(k('w'));
  out(await r.multi().set(k('w'), 'mine').exec(), await r.get(k('w')));
}

async function evalCase(r) {
  out(await r.eval("return {KEYS[1], ARGV[1], 2.9, false, 'x'}", 1, k('e'), 'a'));
  r.defineCommand('incrByScript', { numberOfKeys: 1, lua: "return redis.call('INCRBY', KEYS[1], ARGV[1])" });
  out(await r.incrByScript(k('n'), 5), await r.incrByScript(k('n'), 6));
  const sha = await r.script('LOAD', 'return 42');
  out(sha, await r.evalsha(sha, 0), await r.script('EXISTS', sha, '0'.repeat(40)));
}

async function scanStream(r) {
  for (let i = 0; i < 40; i++) await r.set(k('scan:' + i), 'v');
  const keys = [];
  await new Promise((resolve, reject) => {
    r.scanStream({ match: k('scan:1*'), count: 7 }).on('data', (ks) => keys.push(...ks)).on('end', resolve).on('error', reject);
  });
  out(keys.sort());
}

async function flushdb(r) {
  await r.set(k('f'), 'v');
  out(await r.flushdb(), await r.exists(k('f')), await r.dbsize());
}

const cases = [
  ['ready', ready], ['basic', basic], ['pipeline', pipeline], ['multi', multi], ['multi-queue-error', multiQueueError],
  ['watch', watch], ['eval', evalCase], ['scan-stream', scanStream], ['flushdb', flushdb],
];

(async () => {
  const r = connect();
  const r2 = connect();
  for (const [name, fn] of cases) {
    console.log('== ' + name);
    try {
      await fn(r, r2);
    } catch (e) {
      out('error', e.constructor.name, e.message);
    }
  }
  r.disconnect();
  r2.disconnect();
})();

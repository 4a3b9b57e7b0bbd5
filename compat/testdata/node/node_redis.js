// node-redis (package redis) against the server on argv[2]: prints "== case"
// and one line per reply; keys start with argv[3]. The same calls run
// against redis-server and pgmirror, and compat_test.go compares what they
// print. The library is used as an application would, with only the socket
// path set.
'use strict';
const { createClient } = require('redis');

const [socket, prefix] = process.argv.slice(2);
const k = (name) => prefix + name;
// Errors inside replies (a pipeline's, a transaction's) print as their message.
const show = (x) => JSON.stringify(x, (_, v) => (v instanceof Error ? `error: ${v.message}` : v));
const out = (...xs) => console.log(xs.map(show).join(' '));

async function basic(c) {
  out(await c.set(k('a'), '1'), await c.get(k('a')), await c.incr(k('a')), await c.incrBy(k('a'), 5), await c.get(k('missing')));
  out(await c.set(k('a'), 'x', { NX: true }), await c.mGet([k('a'), k('missing')]), await c.exists([k('a'), k('missing')]));
  out(await c.set(k('t'), 'v', { EX: 60 }), (await c.ttl(k('t'))) > 50, await c.del([k('a'), k('t')]));
}

async function pipeline(c) {
  // Commands sent together without awaiting each: node-redis pipelines them.
  out(await Promise.all([c.set(k('p'), '1'), c.incr(k('p')), c.get(k('p'))]));
  out(await c.multi().set(k('p'), '5').incr(k('p')).execAsPipeline());
}

async function multi(c) {
  try {
    out(await c.multi().set(k('m'), '1').incr(k('m')).get(k('m')).exec());
  } catch (e) {
    out('exec error', e.constructor.name, e.message);
  }
  out(await c.mGet([k('m')]));
}

async function watch(c, c2) {
  await c.set(k('w'), '0');
  await c.executeIsolated(async (iso) => {
    await iso.watch(k('w'));
    await c2.set(k('w'), 'changed');
    try {
      out(await iso.multi().set(k('w'), 'mine').exec());
    } catch (e) {
      out('exec error', e.constructor.name, e.message);
    }
  });
  out(await c.get(k('w')));
}

async function evalCase(c) {
  out(await c.eval("return {KEYS[1], ARGV[1], 2.9, false, 'x'}", { keys: [k('e')], arguments: ['a'] }));
  const sha = await c.scriptLoad("return redis.call('INCRBY', KEYS[1], ARGV[1])");
  out(sha, await c.evalSha(sha, { keys: [k('n')], arguments: ['5'] }), await c.scriptExists([sha, '0'.repeat(40)]));
}

async function scanIterator(c) {
  for (let i = 0; i < 40; i++) await c.set(k('scan:' + i), 'v');
  const keys = [];
  for await (const key of c.scanIterator({ MATCH: k('scan:1*'), COUNT: 7 })) keys.push(key);
  out(keys.sort());
}

async function flushdb(c) {
  await c.set(k('f'), 'v');
  out(await c.flushDb(), await c.exists(k('f')), await c.dbSize());
}

const cases = [
  ['basic', basic], ['pipeline', pipeline], ['multi', multi], ['watch', watch], ['eval', evalCase],
  ['scan-iterator', scanIterator], ['flushdb', flushdb],
];

(async () => {
  const c = createClient({ socket: { path: socket }, isolationPoolOptions: { max: 2 } });
  const c2 = createClient({ socket: { path: socket } });
  c.on('error', (e) => console.error('client error', e.message));
  c2.on('error', (e) => console.error('client error', e.message));
  await c.connect();
  await c2.connect();
  for (const [name, fn] of cases) {
    console.log('== ' + name);
    try {
      await fn(c, c2);
    } catch (e) {
      out('error', e.constructor.name, e.message);
    }
  }
  await c.quit();
  await c2.quit();
})();

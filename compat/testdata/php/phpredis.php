<?php
// phpredis (Debian's php-redis) against the server on argv[1]: prints
// "== case" and one line per reply; keys start with argv[2]. The same calls
// run against redis-server and pgmirror, and compat_test.go compares what
// they print. The library is used as an application would, with only the
// socket path set. phpredis answers false on a command error and keeps the
// message in getLastError().
[, $socket, $prefix] = $argv;
function k($name) { global $prefix; return $prefix . $name; }
function out(...$xs) { echo implode(' ', array_map('json_encode', $xs)), "\n"; }
function conn($socket) { $r = new Redis(); $r->connect($socket); return $r; }
$r = conn($socket);
$r2 = conn($socket);

$cases = [
    'basic' => function ($r) {
        out($r->set(k('a'), '1'), $r->get(k('a')), $r->incr(k('a')), $r->incrBy(k('a'), 5), $r->get(k('missing')));
        out($r->set(k('a'), 'x', ['nx']), $r->mget([k('a'), k('missing')]), $r->exists(k('a'), k('missing')));
        out($r->set(k('t'), 'v', ['ex' => 60]), $r->ttl(k('t')) > 50, $r->del(k('a'), k('t')));
    },
    'pipeline' => function ($r) {
        out($r->pipeline()->set(k('p'), '1')->incr(k('p'))->get(k('p'))->exec());
    },
    'multi' => function ($r) {
        out($r->multi()->set(k('m'), '1')->incr(k('m'))->get(k('m'))->exec(), $r->getLastError());
        out($r->mget([k('m')]));
    },
    'watch' => function ($r, $r2) {
        $r->set(k('w'), '0');
        $r->watch(k('w'));
        $r2->set(k('w'), 'changed');
        out($r->multi()->set(k('w'), 'mine')->exec(), $r->getLastError(), $r->get(k('w')));
    },
    'eval' => function ($r) {
        out($r->eval("return {KEYS[1], ARGV[1], 2.9, false, 'x'}", [k('e'), 'a'], 1), $r->getLastError());
        $r->clearLastError();
        $sha = $r->script('load', "return redis.call('INCRBY', KEYS[1], ARGV[1])");
        out($sha, $r->evalSha($sha, [k('n'), '5'], 1), $r->script('exists', $sha), $r->getLastError());
    },
    'scan' => function ($r) {
        for ($i = 0; $i < 40; $i++) $r->set(k("scan:$i"), 'v');
        $r->setOption(Redis::OPT_SCAN, Redis::SCAN_RETRY);
        $keys = [];
        $it = null;
        for ($calls = 0; ($batch = $r->scan($it, k('scan:1*'), 7)) !== false; $calls++) {
            if ($calls == 10000) { out('SCAN did not finish: cursor', $it); return; }
            $keys = array_merge($keys, $batch);
        }
        sort($keys);
        out($keys);
    },
    'flushdb' => function ($r) {
        $r->set(k('f'), 'v');
        out($r->flushDB(), $r->exists(k('f')), $r->dbSize(), $r->getLastError());
    },
];
foreach ($cases as $name => $fn) {
    echo "== $name\n";
    try {
        $r->clearLastError();
        $fn($r, $r2);
    } catch (Throwable $e) {
        out('error', get_class($e), $e->getMessage());
    }
}

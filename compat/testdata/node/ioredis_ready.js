// ioredis's ready check against the server on argv[2]: prints "connect" once
// connected, then, on "ready", the reply of a GET, which a server still
// loading would answer with LOADING. ready_test.go holds the server in its
// first load until ioredis has asked INFO twice.
'use strict';
const Redis = require('ioredis');

const r = new Redis({ path: process.argv[2], maxRetriesPerRequest: 0 });
r.once('connect', () => console.log('connect'));
r.once('ready', async () => {
  try {
    console.log('ready', JSON.stringify(await r.get('k')));
  } catch (e) {
    console.log('ready', 'error: ' + e.message);
  }
  r.disconnect();
});

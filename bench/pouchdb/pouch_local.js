'use strict';
/* pouch_local.js — the anchor for bench/p2p_bench.sh: PouchDB 9 replicating N sensor docs
 * local to local, PouchDB.replicate between two memory-adapter dbs in one process (no
 * network, default options: batch_size 100, batches_limit 10). The docs are the shape
 * p2p_bench.sh loads into barrel. Prints one JSON line with the time and docs/s.
 * usage: NODE_PATH=<npm dir>/node_modules node pouch_local.js N */
const assert = require('assert');
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-replication'));

const n = Number(process.argv[2] || 100000);
const TAGS = ['a', 'b', 'c', 'd'];

function sensor(i) {
  return {
    _id: `doc-${String(i).padStart(8, '0')}`,
    type: 'sensor',
    site: `site-${i % 50}`,
    value: Math.round(((i * 7919) % 65000) - 20000) / 1000,
    ts: 1700000000 + i,
    tags: [0, 1, 2].map((k) => TAGS[(i + k) % 4] + String((i * (k + 3)) % 10)),
  };
}

async function main() {
  const src = new PouchDB(`src-${process.pid}`, { adapter: 'memory' });
  for (let i = 0; i < n; i += 5000) {
    const docs = [];
    for (let k = i; k < Math.min(n, i + 5000); k++)
      docs.push(sensor(k));
    await src.bulkDocs(docs);
  }
  const dst = new PouchDB(`dst-${process.pid}`, { adapter: 'memory' });
  const t = process.hrtime.bigint();
  const r = await PouchDB.replicate(src, dst);
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  assert.strictEqual(r.docs_written, n, `replicate wrote ${r.docs_written}`);
  assert.strictEqual((await dst.info()).doc_count, n);
  console.log(JSON.stringify({ docs: n, seconds: +s.toFixed(2), docs_s: Math.round(n / s) }));
}

main().catch((e) => {
  console.error(`bench failed: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});

'use strict';
/* pouch_bench.js — one PouchDB 9 client (memory adapter) against one server URL: push N sensor
 * docs from a prefilled local db, then pull them into a fresh local db; default replication
 * options (batch_size 100, batches_limit 10). Prints one JSON line with docs/s each way, and
 * with BENCH_SERVER_PID set (Linux), the server process's CPU time per doc each way.
 * usage: [BENCH_SERVER_PID=pid] NODE_PATH=<npm dir>/node_modules node pouch_bench.js URL N */
const assert = require('assert');
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-replication'));

const base = process.argv[2].replace(/\/$/, '');
const n = Number(process.argv[3] || 100000);
const serverPid = process.env.BENCH_SERVER_PID; /* optional: report the server's CPU per phase */
const TAGS = ['red', 'blue', 'green', 'hot', 'cold', 'wet', 'dry', 'east', 'west'];

/* The server's user+system CPU so far, in ms (0 without BENCH_SERVER_PID). */
function serverCpuMs() {
  if (!serverPid)
    return 0;
  const f = require('fs').readFileSync(`/proc/${serverPid}/stat`, 'utf8');
  const v = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(v[11]) + Number(v[12])) * 10; /* utime, stime in USER_HZ (100) ticks */
}

function sensor(i) {
  return {
    _id: `doc-${String(i).padStart(8, '0')}`,
    type: 'sensor',
    site: `site-${i % 50}`,
    value: Math.round(((i * 7919) % 100000) / 0.1) / 1000,
    ts: 1700000000000 + i * 1000,
    tags: [TAGS[i % 9], TAGS[(i * 3) % 9], TAGS[(i * 7) % 9]],
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
  const remote = new PouchDB(`${base}/bench`, { adapter: 'http' });
  let c = serverCpuMs();
  let t = process.hrtime.bigint();
  const push = await src.replicate.to(remote);
  const pushS = Number(process.hrtime.bigint() - t) / 1e9;
  const pushCpu = serverCpuMs() - c;
  assert.strictEqual(push.docs_written, n, `push wrote ${push.docs_written}`);
  const info = await remote.info();
  assert.strictEqual(info.doc_count, n, `server holds ${info.doc_count}`);

  const dst = new PouchDB(`dst-${process.pid}`, { adapter: 'memory' });
  c = serverCpuMs();
  t = process.hrtime.bigint();
  const pull = await dst.replicate.from(remote);
  const pullS = Number(process.hrtime.bigint() - t) / 1e9;
  const pullCpu = serverCpuMs() - c;
  assert.strictEqual(pull.docs_written, n, `pull wrote ${pull.docs_written}`);
  const check = await dst.get('doc-00000042');
  assert.deepStrictEqual(check.tags, sensor(42).tags);
  console.log(JSON.stringify({
    docs: n, push_s: +pushS.toFixed(2), pull_s: +pullS.toFixed(2),
    push_docs_s: Math.round(n / pushS), pull_docs_s: Math.round(n / pullS),
    ...(serverPid ? {
      server_push_us_doc: +(pushCpu * 1000 / n).toFixed(1),
      server_pull_us_doc: +(pullCpu * 1000 / n).toFixed(1),
    } : {}),
  }));
}

main().catch((e) => {
  console.error(`bench failed: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});

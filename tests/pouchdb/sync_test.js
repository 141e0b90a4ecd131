'use strict';
/* sync_test.js — PouchDB 9 (memory adapter, pinned in package.json) against a real
 * `barrel serve`: 10,000-doc push and pull, live sync both ways, deletes, a conflict made
 * on both sides while disconnected, attachments (small and 5 MiB), and a node restart in
 * the middle of a push and of a pull that must resume from the checkpoint.
 *
 * usage: NODE_PATH=<npm dir>/node_modules node sync_test.js BARREL_BINARY
 * Exit status: 0 pass, 1 fail. Every check prints one line. */

const assert = require('assert');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');

const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-replication'));

const BARREL = process.argv[2];
const N_DOCS = 10000;
const N_RESUME = 4000;
const T0 = Date.now();

/* While the node is deliberately stopped, PouchDB's own requests fail and some of its
 * promises reject with nobody listening; any other unhandled rejection is a failure. */
let nodeDown = false;
process.on('unhandledRejection', (e) => {
  if (nodeDown && e && /ECONNRESET|ECONNREFUSED|socket hang up/.test(String(e.message)))
    return;
  console.error(`FAIL: unhandled rejection: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});

function log(msg) {
  console.log(`[${((Date.now() - T0) / 1000).toFixed(1)}s] ${msg}`);
}

/* ---- the node ---- */

class Node {
  constructor(dir) {
    this.dir = dir;
    this.port = 0;
    this.proc = null;
    this.out = '';
  }

  start() {
    return new Promise((resolve, reject) => {
      const p = spawn(BARREL, ['--data', this.dir, 'serve', '--port', String(this.port)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      this.proc = p;
      let first = '';
      const onData = (d) => {
        this.out += d.toString();
        if (this.out.length > 1 << 20)
          this.out = this.out.slice(-(1 << 19));
        first += d.toString();
        const m = first.match(/http:\/\/127\.0\.0\.1:(\d+)/);
        if (m && !this.port) {
          this.port = Number(m[1]);
        }
        if (m)
          resolve();
      };
      p.stdout.on('data', onData);
      p.stderr.on('data', onData);
      p.on('exit', (code, sig) => {
        this.exit = { code, sig };
        reject(new Error(`barrel exited early (${code}/${sig}): ${this.out}`));
      });
    });
  }

  /* SIGTERM and wait; the exit status must be 0 (under ASan: no leak, no error). */
  stop() {
    return new Promise((resolve, reject) => {
      const p = this.proc;
      if (p.exitCode !== null || p.signalCode !== null)
        return reject(new Error(`barrel already exited: ${p.exitCode}/${p.signalCode}`));
      p.removeAllListeners('exit');
      p.on('exit', (code, sig) => {
        if (code === 0)
          resolve();
        else
          reject(new Error(`barrel exit status ${code}/${sig}; output tail:\n${this.out.slice(-4000)}`));
      });
      p.kill('SIGTERM');
    });
  }

  url(p) {
    return `http://127.0.0.1:${this.port}/${p}`;
  }
}

async function http(node, method, p, body) {
  const opt = { method, headers: { accept: 'application/json' } };
  if (body !== undefined) {
    opt.headers['content-type'] = 'application/json';
    opt.body = JSON.stringify(body);
  }
  const r = await fetch(node.url(p), opt);
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch (e) {
    json = undefined;
  }
  return { status: r.status, json, text, headers: r.headers };
}

let memSeq = 0;
function mem(name) {
  return new PouchDB(`${name}-${process.pid}-${memSeq++}`, { adapter: 'memory' });
}

function remote(node, db) {
  return new PouchDB(node.url(db), { adapter: 'http' });
}

async function waitFor(what, fn, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    let ok = false;
    try {
      ok = await fn();
    } catch (e) {
      ok = false;
    }
    if (ok)
      return;
    if (Date.now() > end)
      throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function allDocs(db) {
  const r = await db.allDocs({ include_docs: true });
  return r.rows.map((row) => row.doc);
}

function sensor(i) {
  return {
    _id: `doc-${String(i).padStart(8, '0')}`,
    type: 'sensor',
    site: `site-${i % 17}`,
    value: Math.round(Math.sin(i) * 1e6) / 1e3,
    ts: 1700000000000 + i * 1000,
    tags: ['red', 'blue', `t${i % 5}`],
  };
}

async function fill(db, n, mk) {
  for (let i = 0; i < n; i += 1000) {
    const docs = [];
    for (let k = i; k < Math.min(n, i + 1000); k++)
      docs.push(mk(k));
    const res = await db.bulkDocs(docs);
    for (const r of res)
      assert.ok(r.ok, `local write failed: ${JSON.stringify(r)}`);
  }
}

/* ---- the checks ---- */

async function bulkPushPull(node) {
  const a = mem('a');
  await fill(a, N_DOCS, sensor);
  const push = await a.replicate.to(remote(node, 'bulk'));
  assert.strictEqual(push.ok, true, 'push ok');
  assert.strictEqual(push.docs_written, N_DOCS, 'push docs_written');
  assert.strictEqual(push.doc_write_failures, 0);
  log(`push of ${N_DOCS} docs: ok, docs_written ${push.docs_written}`);

  const info = await http(node, 'GET', 'bulk');
  assert.strictEqual(info.json.doc_count, N_DOCS, 'barrel doc_count after push');

  const b = mem('b');
  const pull = await b.replicate.from(remote(node, 'bulk'));
  assert.strictEqual(pull.ok, true, 'pull ok');
  assert.strictEqual(pull.docs_written, N_DOCS, 'pull docs_written');
  log(`pull of ${N_DOCS} docs: ok, docs_written ${pull.docs_written}`);

  const da = await allDocs(a);
  const db = await allDocs(b);
  assert.strictEqual(da.length, N_DOCS);
  assert.deepStrictEqual(db, da, 'pulled docs (bodies and revs) equal the pushed ones');
  const srv = await http(node, 'GET', 'bulk/_all_docs?include_docs=true');
  assert.strictEqual(srv.status, 200);
  assert.deepStrictEqual(srv.json.rows.map((r) => r.doc), da, 'barrel _all_docs equals PouchDB');
  log('every doc and rev equal on A, B and barrel');
  return { a, b };
}

async function liveSync(node, a, b) {
  const r = remote(node, 'bulk');
  const sa = a.sync(r, { live: true, retry: true });
  const sb = b.sync(r, { live: true, retry: true });
  const errors = [];
  sa.on('error', (e) => errors.push(e));
  sb.on('error', (e) => errors.push(e));
  try {
    /* update on A, seen on B; update on B, seen on A */
    const d1 = await a.get('doc-00000001');
    d1.value = 1111;
    const w1 = await a.put(d1);
    await waitFor('A update on B', async () => (await b.get('doc-00000001'))._rev === w1.rev);
    assert.strictEqual((await b.get('doc-00000001')).value, 1111);
    log('live: update on A reached B');

    const d2 = await b.get('doc-00000002');
    d2.value = 2222;
    const w2 = await b.put(d2);
    await waitFor('B update on A', async () => (await a.get('doc-00000002'))._rev === w2.rev);
    assert.strictEqual((await a.get('doc-00000002')).value, 2222);
    log('live: update on B reached A');

    const n1 = await a.put({ _id: 'live-new-a', v: 1 });
    await waitFor('new doc from A on B', async () => (await b.get('live-new-a'))._rev === n1.rev);
    log('live: new doc on A reached B');

    /* deletes both ways */
    const x3 = await a.get('doc-00000003');
    const del3 = await a.remove(x3);
    await waitFor('A delete on B', async () => {
      try {
        await b.get('doc-00000003');
        return false;
      } catch (e) {
        return e.status === 404;
      }
    });
    const g3 = await b.get('doc-00000003', { rev: del3.rev });
    assert.strictEqual(g3._deleted, true);
    const s3 = await http(node, 'GET', 'bulk/doc-00000003');
    assert.strictEqual(s3.status, 404, 'deleted on barrel');
    log('live: delete on A reached B and barrel');

    const x4 = await b.get('doc-00000004');
    const del4 = await b.remove(x4);
    await waitFor('B delete on A', async () => {
      try {
        await a.get('doc-00000004');
        return false;
      } catch (e) {
        return e.status === 404;
      }
    });
    assert.strictEqual((await a.get('doc-00000004', { rev: del4.rev }))._deleted, true);
    log('live: delete on B reached A');
    assert.strictEqual(errors.length, 0, `live sync errors: ${errors.map(String)}`);
  } finally {
    sa.cancel();
    sb.cancel();
  }
  await new Promise((r) => setTimeout(r, 100));
}

async function conflict(node, a, b) {
  /* A and B are disconnected (no live sync): both edit the same doc. */
  const id = 'doc-00000005';
  const base = await a.get(id);
  assert.strictEqual((await b.get(id))._rev, base._rev);
  const ea = { ...base, value: 'from-a-1' };
  const ra1 = await a.put(ea);
  const ra2 = await a.put({ ...ea, _rev: ra1.rev, value: 'from-a-2' });
  const rb1 = await b.put({ ...base, value: 'from-b-1' });
  const r = remote(node, 'bulk');
  await a.sync(r);
  await b.sync(r);
  await a.sync(r);
  const ga = await a.get(id, { conflicts: true });
  const gb = await b.get(id, { conflicts: true });
  const gs = await http(node, 'GET', `bulk/${id}?conflicts=true`);
  assert.strictEqual(gs.status, 200);
  const show = (d) => JSON.stringify({ rev: d._rev, conflicts: d._conflicts, value: d.value });
  log(`conflict: A ${show(ga)} B ${show(gb)} barrel ${show(gs.json)}`);
  assert.strictEqual(ga._rev, ra2.rev, 'the longer branch wins on A');
  assert.strictEqual(gb._rev, ga._rev, 'same winner on B');
  assert.strictEqual(gs.json._rev, ga._rev, 'same winner on barrel');
  assert.deepStrictEqual(ga._conflicts, [rb1.rev]);
  assert.deepStrictEqual(gb._conflicts, ga._conflicts, 'same _conflicts on B');
  assert.deepStrictEqual(gs.json._conflicts, ga._conflicts, 'same _conflicts on barrel');
  assert.strictEqual(gs.json.value, 'from-a-2');
  log('conflict: same winner and _conflicts on A, B and barrel');
}

function md5b64(buf) {
  return 'md5-' + crypto.createHash('md5').update(buf).digest('base64');
}

async function attachments(node) {
  const small = Buffer.from('hello attachment\n');
  const big = crypto.randomBytes(5 * 1024 * 1024);
  const a = mem('att-a');
  await a.put({
    _id: 'att-doc',
    kind: 'blob',
    _attachments: {
      'note.txt': { content_type: 'text/plain', data: small },
      'big.bin': { content_type: 'application/octet-stream', data: big },
    },
  });
  const push = await a.replicate.to(remote(node, 'att'));
  assert.strictEqual(push.docs_written, 1);
  const b = mem('att-b');
  const pull = await b.replicate.from(remote(node, 'att'));
  assert.strictEqual(pull.docs_written, 1);

  const da = await a.get('att-doc');
  const db = await b.get('att-doc');
  const ds = (await http(node, 'GET', 'att/att-doc')).json;
  for (const [name, buf] of [['note.txt', small], ['big.bin', big]]) {
    const want = md5b64(buf);
    assert.strictEqual(da._attachments[name].digest, want, `A digest ${name}`);
    assert.strictEqual(db._attachments[name].digest, want, `B digest ${name}`);
    assert.strictEqual(ds._attachments[name].digest, want, `barrel digest ${name}`);
    assert.strictEqual(ds._attachments[name].length, buf.length, `barrel length ${name}`);
    const gotB = await b.getAttachment('att-doc', name);
    assert.ok(Buffer.compare(gotB, buf) === 0, `B bytes of ${name}`);
    const r = await fetch(node.url(`att/att-doc/${name}`));
    assert.strictEqual(r.status, 200);
    const gotS = Buffer.from(await r.arrayBuffer());
    assert.ok(Buffer.compare(gotS, buf) === 0, `barrel bytes of ${name}`);
  }
  assert.strictEqual(db._rev, da._rev);
  log('attachments: 17 B and 5 MiB round-trip, digests and bytes match');
}

/* Stop the node when the replication has written `at` docs; start it again on the same data
 * dir and port; a second replication must read only what the first did not checkpoint.
 * `landed()` counts the docs the first run really wrote once it has ended: a batch already in
 * flight when the node was told to stop may still land after the 'change' event that stopped
 * it (it did under AddressSanitizer, where the node takes longer to stop). */
async function interrupted(node, rep, total, at, landed) {
  let written = 0;
  let killed = null;
  await new Promise((resolve) => {
    const r = rep();
    r.on('change', (info) => {
      written = info.docs_written;
      if (!killed && written >= at) {
        nodeDown = true;
        killed = node.stop();
      }
    });
    r.on('complete', resolve);
    r.on('error', resolve);
    r.on('denied', resolve);
  });
  assert.ok(killed, `the node was stopped mid-way (written ${written} of ${total})`);
  await killed;
  assert.ok(written < total, `stopped before the end (${written} of ${total})`);
  await node.start();
  await new Promise((r) => setTimeout(r, 200));
  nodeDown = false;
  written = await landed();
  const second = await new Promise((resolve, reject) => {
    const r = rep();
    r.on('complete', resolve);
    r.on('error', reject);
  });
  return { first: written, second };
}

async function restartResume(node) {
  const src = mem('res-src');
  await fill(src, N_RESUME, sensor);
  const push = await interrupted(
    node, () => src.replicate.to(remote(node, 'resume'), { batch_size: 100 }), N_RESUME, N_RESUME / 2,
    async () => (await http(node, 'GET', 'resume')).json.doc_count);
  log(`restart mid-push: first run wrote ${push.first}, resumed run read ` +
    `${push.second.docs_read} wrote ${push.second.docs_written}`);
  assert.strictEqual(push.second.ok, true);
  assert.strictEqual(push.first + push.second.docs_written, N_RESUME, 'no doc sent twice, none lost');
  /* the checkpoint is at most one batch behind what the first run wrote */
  assert.ok(push.second.docs_read <= N_RESUME - push.first + 100,
    `resumed push read ${push.second.docs_read}: not from the checkpoint`);
  assert.strictEqual((await http(node, 'GET', 'resume')).json.doc_count, N_RESUME);

  const dst = mem('res-dst');
  const pull = await interrupted(
    node, () => dst.replicate.from(remote(node, 'resume'), { batch_size: 100 }), N_RESUME, N_RESUME / 2,
    async () => (await dst.info()).doc_count);
  log(`restart mid-pull: first run wrote ${pull.first}, resumed run read ` +
    `${pull.second.docs_read} wrote ${pull.second.docs_written}`);
  assert.strictEqual(pull.second.ok, true);
  assert.strictEqual(pull.first + pull.second.docs_written, N_RESUME, 'no doc fetched twice');
  assert.ok(pull.second.docs_read <= N_RESUME - pull.first + 100,
    `resumed pull read ${pull.second.docs_read}: not from the checkpoint`);
  assert.deepStrictEqual(await allDocs(dst), await allDocs(src));
  log('restart: both resumed from their checkpoints, all docs equal');
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'barrel-pouch-'));
  const node = new Node(dir);
  let ok = false;
  try {
    await node.start();
    log(`barrel serve on port ${node.port}, data ${dir}`);
    const { a, b } = await bulkPushPull(node);
    await liveSync(node, a, b);
    await conflict(node, a, b);
    await attachments(node);
    await restartResume(node);
    await node.stop();
    ok = true;
  } catch (e) {
    console.error(`FAIL: ${e && e.stack ? e.stack : e}`);
    if (node.out)
      console.error(`barrel output tail:\n${node.out.slice(-3000)}`);
    try {
      node.proc.kill('SIGKILL');
    } catch (e2) {
      /* already gone */
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
  log(ok ? 'PASS' : 'FAILED');
  process.exit(ok ? 0 : 1);
}

main();

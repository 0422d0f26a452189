// Open-loop enqueue generator for the latency part of `./dev bench worker`.
//
// Job i is due at start + i / LG_RATE seconds, whatever happened to earlier
// jobs: it goes out on the next free connection of LG_CONNS (autocommit, one
// statement, LG_SQL, whose first column is the job's id). The commit time is
// taken when the server's reply arrives. One line per job to LG_OUT:
// "id<TAB>mono_ns<TAB>wall_ms" (see lib.cjs for the clocks). A summary JSON
// line goes to stdout: offered and achieved rates, how late the generator
// ran behind its schedule (a late generator would flatter the peers' and our
// latency alike by offering less load), and the enqueue round trip.
//
// Environment: LG_URL, LG_SQL, LG_RATE (500), LG_SECONDS (20), LG_CONNS (8), LG_OUT.
"use strict";

const fs = require("fs");
const { Client } = require("pg");
const { env, envInt, monoNs, wallMs } = require("./lib.cjs");

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

async function main() {
  const rate = envInt("LG_RATE", 500);
  const total = Math.round(rate * envInt("LG_SECONDS", 20));
  const sql = env("LG_SQL");
  const clients = [];
  for (let i = 0; i < envInt("LG_CONNS", 8); i++) {
    const c = new Client({ connectionString: env("LG_URL") });
    await c.connect();
    await c.query({ name: "enqueue", text: sql, rowMode: "array" }); // prepare, and warm up
    clients.push(c);
  }
  // The warm-up jobs are not ours to time: the caller counts them out.
  const free = [...clients];
  const rows = [];
  const late = [];
  const rtt = [];
  const stepNs = BigInt(Math.round(1e9 / rate));
  const t0 = monoNs() + 5_000_000n;
  let next = 0;
  let done = 0;
  const due = [];
  await new Promise((resolve, reject) => {
    const send = () => {
      while (due.length && free.length) {
        const i = due.shift();
        const c = free.pop();
        const sent = monoNs();
        late.push(Number(sent - (t0 + BigInt(i) * stepNs)) / 1e6);
        c.query({ name: "enqueue", text: sql, rowMode: "array" }).then((r) => {
          const at = monoNs();
          rows.push(`${r.rows[0][0]}\t${at}\t${wallMs().toFixed(3)}`);
          rtt.push(Number(at - sent) / 1e6);
          free.push(c);
          if (++done === total) resolve();
          else send();
        }, reject);
      }
    };
    const tick = () => {
      const now = monoNs();
      while (next < total && t0 + BigInt(next) * stepNs <= now) due.push(next++);
      send();
      if (next < total) setTimeout(tick, 0);
    };
    tick();
  });
  const seconds = Number(monoNs() - t0) / 1e9;
  for (const c of clients) await c.end();
  fs.writeFileSync(env("LG_OUT"), rows.join("\n") + "\n");
  late.sort((a, b) => a - b);
  rtt.sort((a, b) => a - b);
  console.log(JSON.stringify({
    jobs: total,
    warmup_jobs: clients.length,
    offered_rate: rate,
    achieved_rate: Math.round(total / seconds),
    late_p99_ms: Number(pct(late, 99).toFixed(2)),
    late_max_ms: Number(late[late.length - 1].toFixed(2)),
    enqueue_p50_ms: Number(pct(rtt, 50).toFixed(2)),
    enqueue_p99_ms: Number(pct(rtt, 99).toFixed(2)),
  }));
}

main().catch((e) => {
  console.error(`loadgen: ${e.stack || e}`);
  process.exit(1);
});

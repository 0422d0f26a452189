// The peers of `./dev bench worker`: graphile-worker and pg-boss running the
// same no-op job ("noop", payload {}), configured from the environment.
//
//   node peer.cjs graphile|pgboss setup      install the schema (and pg-boss's queue)
//   node peer.cjs graphile|pgboss fill N     enqueue N jobs in bulk (each peer's own bulk API)
//   node peer.cjs graphile|pgboss run        work until SIGTERM; prints "ready" once started
//   node peer.cjs ftqueue run                FlowTrack's queue through this harness (see ftqueue)
//   node peer.cjs pgboss send-sql            print the SQL pg-boss's send('noop', {}) runs, as
//                                            a pgbench script line (for the enqueue benchmark)
//
// Environment: PEER_URL (connection string); TRACE (file for handler starts, optional);
// PEER_PROCS (worker processes, default 1).
// graphile: GW_CONCURRENCY, GW_LOCAL_QUEUE (size, -1 = off), GW_COMPLETE_DELAY,
//   GW_FAIL_DELAY (ms, -1 = off), GW_POOL (connections), GW_POLL_MS.
// pgboss: PB_WORKERS (work() loops), PB_BATCH (jobs per fetch), PB_POLL_S (>= 0.5), PB_POOL.
// ftqueue: FQ_LOOPS (claim loops, one connection each), FQ_BATCH (n), FQ_WAIT_MS (wait_ms).
"use strict";

const { env, envInt, startTrace, stopSignal } = require("./lib.cjs");

const QUEUE = "noop";
const [system, mode, arg] = process.argv.slice(2);
const url = () => env("PEER_URL");

async function graphile() {
  const gw = require("graphile-worker");
  const logger = new gw.Logger(() => (level, message) => {
    if (level === "error" || level === "warning") console.error(`graphile-worker ${level}: ${message}`);
  });
  if (mode === "setup") {
    await gw.runMigrations({ connectionString: url(), logger });
    return;
  }
  if (mode === "fill") {
    const utils = await gw.makeWorkerUtils({ connectionString: url(), logger });
    try {
      const n = Number(arg);
      for (let done = 0; done < n; ) {
        const k = Math.min(10000, n - done);
        // addJobs is add_jobs(): one statement and one notification per call.
        await utils.addJobs(Array.from({ length: k }, () => ({ identifier: QUEUE, payload: {} })));
        done += k;
      }
    } finally {
      await utils.release();
    }
    return;
  }
  if (mode !== "run") throw new Error(`unknown mode ${mode}`);
  const trace = startTrace(process.env.TRACE);
  const concurrency = envInt("GW_CONCURRENCY", 10);
  const runner = await gw.run({
    connectionString: url(),
    logger,
    noHandleSignals: true,
    taskList: {
      [QUEUE]: async (_payload, helpers) => {
        trace.record(helpers.job.id);
      },
    },
    preset: {
      worker: {
        concurrentJobs: concurrency,
        maxPoolSize: envInt("GW_POOL", Math.max(10, Math.min(concurrency + 2, 24))),
        pollInterval: envInt("GW_POLL_MS", 2000),
        localQueue: { size: envInt("GW_LOCAL_QUEUE", -1) },
        completeJobBatchDelay: envInt("GW_COMPLETE_DELAY", -1),
        failJobBatchDelay: envInt("GW_FAIL_DELAY", -1),
        crontabFile: "/nonexistent/crontab",
      },
    },
  });
  console.log("ready");
  await stopSignal();
  await runner.stop();
  trace.flush();
}

async function pgboss() {
  const PgBoss = require("pg-boss");
  if (mode === "send-sql") {
    // pg-boss accepts a caller's db ({ executeSql }); this one records what
    // send() would run instead of running it.
    let captured;
    const boss = new PgBoss({
      db: { executeSql: async (text, values) => ((captured = { text, values }), { rows: [{ id: "x" }] }) },
    });
    await boss.send(QUEUE, {});
    const lit = (v) =>
      v === null || v === undefined ? "NULL" : typeof v === "number" || typeof v === "boolean" ? String(v)
        : `'${(typeof v === "object" ? JSON.stringify(v) : String(v)).replace(/'/g, "''")}'`;
    const sql = captured.text.replace(/\$(\d+)/g, (_, i) => lit(captured.values[Number(i) - 1]));
    console.log(sql.replace(/\s+/g, " ").trim() + ";");
    return;
  }
  const boss = new PgBoss({
    connectionString: url(),
    max: envInt("PB_POOL", 10),
    // Cron scheduling is not part of the job path; maintenance (archiving,
    // expiry) is, so it stays on with its defaults.
    schedule: false,
  });
  boss.on("error", (e) => console.error(`pg-boss error: ${e.message}`));
  await boss.start();
  if (mode === "setup") {
    await boss.createQueue(QUEUE);
    await boss.stop({ graceful: false, wait: true });
    return;
  }
  if (mode === "fill") {
    const n = Number(arg);
    for (let done = 0; done < n; ) {
      const k = Math.min(10000, n - done);
      await boss.insert(Array.from({ length: k }, () => ({ name: QUEUE, data: {} })));
      done += k;
    }
    await boss.stop({ graceful: false, wait: true });
    return;
  }
  if (mode !== "run") throw new Error(`unknown mode ${mode}`);
  const trace = startTrace(process.env.TRACE);
  const options = { batchSize: envInt("PB_BATCH", 1), pollingIntervalSeconds: Number(env("PB_POLL_S", "0.5")) };
  for (let i = 0; i < envInt("PB_WORKERS", 1); i++) {
    await boss.work(QUEUE, options, async (jobs) => {
      for (const job of jobs) trace.record(job.id);
    });
  }
  console.log("ready");
  await stopSignal();
  await boss.stop({ graceful: true, wait: true, timeout: 10000 });
  trace.flush();
}

// PEER_PROCS > 1: that many worker processes (Node runs JavaScript on one
// core), each with its own trace file TRACE.<i>.
async function processes(n) {
  const { fork } = require("child_process");
  const children = [];
  let ready = 0;
  for (let i = 0; i < n; i++) {
    const trace = process.env.TRACE ? { TRACE: `${process.env.TRACE}.${i}` } : {};
    const child = fork(__filename, process.argv.slice(2), {
      env: { ...process.env, ...trace, PEER_PROCS: "1" },
      stdio: ["ignore", "pipe", "inherit", "ipc"],
    });
    child.stdout.on("data", (d) => {
      if (String(d).includes("ready") && ++ready === n) console.log("ready");
    });
    children.push(new Promise((resolve, reject) =>
      child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`worker process ${i} exited ${code}`))))));
    children[i].child = child;
  }
  await stopSignal();
  for (const c of children) c.child.kill("SIGTERM");
  await Promise.all(children);
}

// FlowTrack's queue driven by the same Node harness as the peers, without
// the Rust service: claim_jobs (parking wait_ms when idle) and complete_jobs
// over the interface the worker uses. It isolates the queue and its wake-ups
// from the service in the latency figures.
async function ftqueue() {
  if (mode !== "run") throw new Error(`unknown mode ${mode} (ftqueue only runs)`);
  const { Client } = require("pg");
  const trace = startTrace(process.env.TRACE);
  const batch = envInt("FQ_BATCH", 32);
  const waitMs = envInt("FQ_WAIT_MS", 1000);
  let stopping = false;
  const loop = async (i) => {
    const db = new Client({ connectionString: url() });
    await db.connect();
    const worker = `bench-node-${process.pid}-${i}`;
    while (!stopping) {
      const { rows } = await db.query({
        name: "claim", text: "SELECT id, fence FROM internal.claim_jobs($1, $2, $3)", values: [worker, batch, waitMs],
      });
      if (!rows.length) continue;
      for (const r of rows) trace.record(r.id);
      await db.query({
        name: "complete",
        text: "SELECT count(*) FROM internal.complete_jobs($1, $2::uuid[], $3::integer[], $4::jsonb[])",
        values: [worker, rows.map((r) => r.id), rows.map((r) => r.fence), rows.map(() => "{}")],
      });
    }
    await db.end();
  };
  const loops = Array.from({ length: envInt("FQ_LOOPS", 4) }, (_, i) => loop(i));
  console.log("ready");
  await Promise.race([stopSignal(), Promise.all(loops)]);
  stopping = true;
  await Promise.all(loops);
  trace.flush();
}

const main = { graphile, pgboss, ftqueue }[system];
if (!main) {
  console.error("usage: node peer.cjs graphile|pgboss|ftqueue setup|fill N|run|send-sql");
  process.exit(2);
}
const procs = envInt("PEER_PROCS", 1);
(mode === "run" && procs > 1 ? processes(procs) : main()).then(
  () => process.exit(0),
  (e) => {
    console.error(`peer ${system} ${mode}: ${e.stack || e}`);
    process.exit(1);
  },
);

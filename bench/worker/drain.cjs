// Burn-down timer for `./dev bench worker`, the same for every system:
//
//   node drain.cjs -- WORKER COMMAND...
//
// Polls on one connection, starts the worker, and times from its first claim
// (DRAIN_START_SQL, how many jobs no worker has touched yet, drops below
// DRAIN_TOTAL) to the last completion (DRAIN_SQL, how many jobs are not done,
// reaches 0), so neither process startup nor the stop counts. Start and
// end are the midpoints between the last poll before and the first poll
// after each event: DRAIN_FAST_MS apart until the first job goes (startup),
// DRAIN_POLL_MS apart after that, closing in to DRAIN_FAST_MS as the end
// nears at the rate so far. Then it stops the worker (SIGTERM) and
// prints one JSON line: jobs, seconds, rate (jobs/s), polls (statements this
// poller ran, to subtract from commit counts), error bounds.
//
// Environment: DRAIN_URL, DRAIN_SQL, DRAIN_START_SQL, DRAIN_TOTAL, DRAIN_POLL_MS (200),
// DRAIN_FAST_MS (25), DRAIN_TIMEOUT_S (600), WORKER_LOG (worker's output),
// DRAIN_SERIES (optional file: one "seconds<TAB>what<TAB>count[<TAB>diag...]"
// line per poll), DRAIN_DIAG_SQL (optional select-list for the series).
"use strict";

const fs = require("fs");
const { spawn } = require("child_process");
const { Client } = require("pg");
const { env, envInt, monoNs } = require("./lib.cjs");

let child = null;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ms = (ns) => Number(ns) / 1e6;

async function main() {
  const cmd = process.argv.slice(process.argv.indexOf("--") + 1);
  if (!cmd.length) throw new Error("usage: node drain.cjs -- WORKER COMMAND...");
  const total = envInt("DRAIN_TOTAL");
  const sql = env("DRAIN_SQL");
  const startSql = env("DRAIN_START_SQL");
  const slow = envInt("DRAIN_POLL_MS", 200);
  const fast = envInt("DRAIN_FAST_MS", 25);
  const deadline = Date.now() + envInt("DRAIN_TIMEOUT_S", 600) * 1000;
  const db = new Client({ connectionString: env("DRAIN_URL") });
  await db.connect();
  let polls = 0;
  const series = [];
  const t00 = monoNs();
  // DRAIN_DIAG_SQL: more columns for the series, read in the same statement.
  const diag = process.env.DRAIN_DIAG_SQL ? `, ${process.env.DRAIN_DIAG_SQL}` : "";
  const left = async (text = sql) => {
    polls++;
    const { rows } = await db.query({ text: `SELECT (${text})${diag}`, rowMode: "array" });
    const n = Number(rows[0][0]);
    series.push([(ms(monoNs() - t00) / 1000).toFixed(3), text === sql ? "left" : "untouched", ...rows[0]].join("\t"));
    return n;
  };
  const first = await left();
  if (first !== total) throw new Error(`expected ${total} jobs queued before the worker starts, found ${first}`);

  const log = fs.openSync(env("WORKER_LOG", "/dev/null"), "a");
  child = spawn(cmd[0], cmd.slice(1), { stdio: ["ignore", log, log], env: process.env });
  let exited = null;
  const exit = new Promise((resolve) => child.on("exit", (code, signal) => resolve((exited = { code, signal }))));

  // Startup: wait for the first claim.
  let before = monoNs();
  let after;
  for (;;) {
    const t0 = monoNs();
    const n = await left(startSql);
    if (n < total) { after = t0; break; }
    before = t0;
    if (exited) throw new Error(`worker exited before doing anything (${JSON.stringify(exited)}); see its log`);
    if (Date.now() > deadline) throw new Error("worker made no progress before DRAIN_TIMEOUT_S");
    await sleep(fast);
  }
  const start = (before + after) / 2n;
  const startErr = ms(after - before) / 2;

  // Burn-down: wait for the queue to be empty.
  let lastNonEmpty = after;
  let emptyAt;
  let wait = slow;
  for (;;) {
    await sleep(wait);
    const t0 = monoNs();
    const n = await left();
    if (n === 0) { emptyAt = t0; break; }
    lastNonEmpty = t0;
    // Poll faster as the end nears (at the rate so far), to pin it down.
    const eta = (n * ms(t0 - start)) / (total - n);
    wait = Math.max(fast, Math.min(slow, eta / 2));
    if (exited) throw new Error(`worker exited with ${n} jobs left (${JSON.stringify(exited)}); see its log`);
    if (Date.now() > deadline) throw new Error(`${n} jobs left at DRAIN_TIMEOUT_S`);
  }
  const end = (lastNonEmpty + emptyAt) / 2n;
  const endErr = ms(emptyAt - lastNonEmpty) / 2;
  await db.end();

  child.kill("SIGTERM");
  const stopAt = monoNs();
  const killer = setTimeout(() => child.kill("SIGKILL"), 30000);
  const how = await exit;
  clearTimeout(killer);
  const stopMs = ms(monoNs() - stopAt);
  if (process.env.DRAIN_SERIES) fs.writeFileSync(process.env.DRAIN_SERIES, series.join("\n") + "\n");
  const seconds = ms(end - start) / 1000;
  console.log(JSON.stringify({
    jobs: total,
    seconds: Number(seconds.toFixed(3)),
    rate: Math.round(total / seconds),
    start_err_ms: Number(startErr.toFixed(1)),
    end_err_ms: Number(endErr.toFixed(1)),
    polls,
    worker_exit: how.signal || how.code,
    stop_ms: Math.round(stopMs),
  }));
}

main().catch((e) => {
  console.error(`drain: ${e.message}`);
  if (child && child.exitCode === null) child.kill("SIGKILL");
  process.exit(1);
});

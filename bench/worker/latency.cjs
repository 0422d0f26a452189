// Enqueue-to-start latency: joins the generator's commit times with the
// handlers' start times by job id and prints one JSON line (milliseconds).
//
//   node latency.cjs COMMITS.tsv TRACE.tsv [TRACE2.tsv ...]
//
// Lines are "id<TAB>mono_ns<TAB>wall_ms". The monotonic clock is used when
// both sides have it (Node on both ends), else wall-clock milliseconds. Jobs
// the generator did not time (its warm-up) are ignored; a timed job that never
// started is counted as missing, and a job started twice as a repeat.
"use strict";

const fs = require("fs");

const read = (path) =>
  fs.readFileSync(path, "utf8").split("\n").filter(Boolean).map((l) => {
    const [id, mono, wall] = l.split("\t");
    return { id, mono: mono ? BigInt(mono) : null, wall: Number(wall) };
  });

const [commitsPath, ...tracePaths] = process.argv.slice(2);
const starts = new Map();
let repeats = 0;
for (const p of tracePaths) {
  for (const s of read(p)) {
    if (starts.has(s.id)) repeats++;
    else starts.set(s.id, s);
  }
}
const lat = [];
let missing = 0;
let clock = "mono";
for (const c of read(commitsPath)) {
  const s = starts.get(c.id);
  if (!s) { missing++; continue; }
  if (c.mono !== null && s.mono !== null) lat.push(Number(s.mono - c.mono) / 1e6);
  else { clock = "wall"; lat.push(s.wall - c.wall); }
}
lat.sort((a, b) => a - b);
const pct = (p) => (lat.length ? Number(lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))].toFixed(2)) : null);
console.log(JSON.stringify({
  jobs: lat.length, missing, repeats, clock,
  p50_ms: pct(50), p90_ms: pct(90), p99_ms: pct(99),
  max_ms: lat.length ? Number(lat[lat.length - 1].toFixed(2)) : null,
  min_ms: lat.length ? Number(lat[0].toFixed(2)) : null,
}));

//! FlowTrack's worker: the migration runner and the side-effect service. All
//! decisions stay in the database; this crate only performs I/O and reports
//! back through SQL functions.

pub mod backoff;
pub mod claim;
pub mod config;
pub mod db;
pub mod deliver;
pub mod job;
pub mod logging;
pub mod metrics;
pub mod metrics_server;
pub mod migrate;
pub mod runtime;
pub mod shutdown;
pub mod status;

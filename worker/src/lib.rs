//! FlowTrack's worker: the migration runner and the side-effect loop. All
//! decisions stay in the database; this crate only performs I/O and reports
//! back through SQL functions.

pub mod claim;
pub mod db;
pub mod deliver;
pub mod job;
pub mod migrate;
pub mod run;

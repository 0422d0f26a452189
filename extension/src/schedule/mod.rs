//! Schedules: five-field cron expressions ([`cron`]), when they fire next in
//! a named IANA timezone ([`next`]), and the SQL functions the schedule
//! tables of sql/0032_schedules.sql and graph validation use ([`sql`]).

pub mod cron;
pub mod next;
mod sql;

pub use sql::config_problem;

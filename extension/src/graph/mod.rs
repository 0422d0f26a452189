//! The workflow graph engine: node-type registry and config schemas,
//! validation, the condition language, traversal, React Flow and n8n
//! import/export, and advancing executions inside the database.

pub mod analysis;
#[cfg(test)]
pub mod arbitrary;
pub mod condition;
pub mod engine;
pub mod logs;
pub mod model;
pub mod n8n;
pub mod plan;
pub mod reactflow;
pub mod registry;
pub mod schema;
pub mod spi;
pub mod traverse;
pub mod validate;

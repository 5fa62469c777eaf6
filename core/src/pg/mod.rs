//! PostgreSQL's own facts, one home each, for the extension, the drill and
//! the CLI alike:
//!
//! - [`control`]: the control file (`global/pg_control`), read directly or
//!   as `pg_controldata` prints it;
//! - [`log`]: the server log's words that say where recovery ended and that
//!   the server is up.
pub mod control;
pub mod log;

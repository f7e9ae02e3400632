//! The admin console: the virtual database `pgbranch`, answered by the
//! proxy itself for the roles listed in `[admin]`.

pub mod console;
pub mod scram;

//! Time travel, proxy side: the system-versioning commands
//! ([`commands`]). The row history itself lives in the database
//! (`src/history/sql/0003_time_travel.sql`); AS OF clauses are rewritten
//! by [`crate::sql::timetravel`].

pub mod commands;

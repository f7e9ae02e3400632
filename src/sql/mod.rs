//! SQL inspection: statement splitting and DDL classification (no I/O).
//!
//! [`lexer`] splits a Query string into statements the way the server
//! counts them; [`classify`](mod@classify) says which of them change the schema and how.

pub mod classify;
pub mod lexer;

pub use classify::{classify, is_ddl, may_contain_ddl, Action, Ddl, ObjectType};
pub use lexer::{split_statements, Lexer, Statements, Token, TokenKind};

//! SQL inspection and rewriting: statement splitting, DDL classification
//! and schema-name mapping for branches (no I/O).
//!
//! [`lexer`] splits a Query string into statements the way the server
//! counts them; [`classify`](mod@classify) says which of them change the schema and how;
//! [`rewrite`] maps logical schema names to a branch's physical ones.

pub mod classify;
pub mod lexer;
pub mod rewrite;
pub mod timetravel;

pub use classify::{classify, is_ddl, may_contain_ddl, Action, Ddl, ObjectType};
pub use lexer::{split_statements, Lexer, Statements, Token, TokenKind};

/// Whether `needle` occurs in `haystack`, ASCII case-insensitively, without
/// allocating: the cheap pre-check before lexing a statement.
pub fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    let first = first.to_ascii_lowercase();
    haystack
        .windows(needle.len())
        .any(|w| w[0].to_ascii_lowercase() == first && w.eq_ignore_ascii_case(needle))
}

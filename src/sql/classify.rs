//! DDL classification of single statements (no I/O).
//!
//! [`classify`] decides whether one statement (a range from
//! [`split_statements`](super::lexer::split_statements)) changes the schema
//! and, when it does, what it changes: the object type, the object's
//! identity as the statement names it, the action, the command tag the
//! server will report, and whether it must run outside a transaction block
//! or only touches temporary objects. [`may_contain_ddl`] answers the same
//! question for a whole Query string, cheaply, so that ordinary traffic is
//! never split.
//!
//! Everything here is lexical, over the tokens of [`Lexer`]:
//!
//! - *Whether* a statement is DDL is decided by its leading keywords, with
//!   no allocation. Statements starting with anything but CREATE, ALTER,
//!   DROP, COMMENT, GRANT, REVOKE, IMPORT, REASSIGN, SELECT, WITH or `(`
//!   are rejected at the first word; SELECT/WITH/`(` are scanned for a
//!   top-level `INTO` (`SELECT ... INTO newtable`, which creates a table).
//!   Cluster-level objects (databases, roles, tablespaces, subscriptions,
//!   user mappings, `ALTER SYSTEM`, large objects, parameters) are not
//!   schema changes and are rejected, as are `GRANT role TO role` and
//!   `SECURITY LABEL`.
//! - *What* it changes is read from the same tokens: names are normalised
//!   as the server does (unquoted identifiers lowercased, quoted ones kept
//!   verbatim without their quotes, parts joined with `.`); function-like
//!   objects keep their argument list as written, with whitespace collapsed
//!   and one space after each comma.
//! - The command tag follows PostgreSQL 15's `CreateCommandTag` and what the
//!   executor reports: `CREATE TABLE AS`, `SELECT INTO` and `CREATE
//!   MATERIALIZED VIEW ... AS` report `SELECT <rows>` (the tag here is
//!   `SELECT`) unless `WITH NO DATA` is given.
//!
//! sqlparser is not used at run time: its PostgreSQL dialect rejects many
//! DDL forms (FIELD-NOTES, "sqlparser 0.63") and accepts non-PostgreSQL
//! syntax, so it could only ever be a second opinion. The unit tests use it
//! as that: over a corpus of DDL, wherever it parses a statement and its
//! AST names the object (CREATE TABLE/VIEW/INDEX/SEQUENCE/TYPE, ALTER
//! TABLE, DROP, COMMENT ON), its names must equal the identity found here.
//!
//! Strings are lexed with `standard_conforming_strings = on`, the server's
//! default (see [`Lexer`]).
//!
//! The server's `CommandComplete` tag remains the authority on what ran;
//! forms that depend on the catalog (`CREATE TABLE IF NOT EXISTS ... AS`
//! reporting `CREATE TABLE AS` when the table exists, a view that is
//! temporary because it reads a temporary table) cannot be seen here.

use std::borrow::Cow;

use super::lexer::{Lexer, Statements, Token, TokenKind};

/// What a DDL statement does to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Alter,
    Drop,
    Rename,
    Comment,
    Grant,
    Revoke,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Alter => "alter",
            Action::Drop => "drop",
            Action::Rename => "rename",
            Action::Comment => "comment",
            Action::Grant => "grant",
            Action::Revoke => "revoke",
        }
    }
}

/// The kind of object a DDL statement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    Table,
    Index,
    View,
    MaterializedView,
    Sequence,
    Function,
    Procedure,
    Aggregate,
    Trigger,
    Type,
    Domain,
    Schema,
    Extension,
    Policy,
    Rule,
    Column,
    Constraint,
    Other,
}

impl ObjectType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ObjectType::Table => "table",
            ObjectType::Index => "index",
            ObjectType::View => "view",
            ObjectType::MaterializedView => "materialized view",
            ObjectType::Sequence => "sequence",
            ObjectType::Function => "function",
            ObjectType::Procedure => "procedure",
            ObjectType::Aggregate => "aggregate",
            ObjectType::Trigger => "trigger",
            ObjectType::Type => "type",
            ObjectType::Domain => "domain",
            ObjectType::Schema => "schema",
            ObjectType::Extension => "extension",
            ObjectType::Policy => "policy",
            ObjectType::Rule => "rule",
            ObjectType::Column => "column",
            ObjectType::Constraint => "constraint",
            ObjectType::Other => "other",
        }
    }
}

/// A classified DDL statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ddl {
    pub object_type: ObjectType,
    /// Identity of the object as named in the statement, normalised:
    /// unquoted identifiers lowercased, quoted ones verbatim without quotes,
    /// parts joined with `.` (`CREATE TABLE "Sales".Orders` ->
    /// `Sales.orders`). Functions, procedures and aggregates add their
    /// argument list as written (`public.add(integer, integer)`); triggers,
    /// policies, rules and constraints are `<name> on <table>`; columns are
    /// `<table>.<column>`; an unnamed index is `on <table>`; several objects
    /// are joined with `, `; `GRANT ... ON ALL TABLES IN SCHEMA s` is `all
    /// tables in schema s`. Empty when the name cannot be determined.
    pub identity: String,
    pub action: Action,
    /// The command tag the server is expected to report in CommandComplete
    /// (`SELECT` for the forms that report `SELECT <rows>`).
    pub tag: String,
    /// Cannot run inside a transaction block (`CREATE INDEX CONCURRENTLY`,
    /// `DROP INDEX CONCURRENTLY`, `ALTER TABLE ... DETACH PARTITION ...
    /// CONCURRENTLY`).
    pub non_transactional: bool,
    /// Only touches a temporary object (`CREATE TEMP ...`, `SELECT INTO
    /// TEMP`, an object in `pg_temp`): not a schema change.
    pub temporary: bool,
}

/// Classifies one statement; `None` when it is not DDL.
///
/// Never panics, whatever the bytes; allocates only for DDL.
pub fn classify(stmt: &[u8]) -> Option<Ddl> {
    head(stmt).map(build)
}

/// Whether [`classify`] would return `Some`, without allocating.
pub fn is_ddl(stmt: &[u8]) -> bool {
    head(stmt).is_some()
}

/// Could any statement of this Query string be DDL?
///
/// No false negatives relative to splitting and [`classify`]: a quick
/// case-insensitive scan for the words every DDL statement contains
/// (CREATE, ALTER, DROP, COMMENT, GRANT, REVOKE, IMPORT, REASSIGN, INTO),
/// then, only if one appears somewhere (even in a string or a comment),
/// the exact lexical decision for each statement. Allocation-free.
pub fn may_contain_ddl(sql: &[u8]) -> bool {
    mentions_ddl_word(sql) && Statements::new(sql).any(|r| is_ddl(&sql[r]))
}

/// Whether one of the words DDL needs occurs as a whole word anywhere in
/// `sql`, even inside a string or a comment.
///
/// A word token of the lexer never starts right after a letter, `_` or a
/// byte at or above 0x80 (it would have been part of the previous word),
/// and runs until a byte that cannot continue an identifier; checking
/// only there, whole words, finds every keyword the classifier can see.
fn mentions_ddl_word(sql: &[u8]) -> bool {
    const WORDS: [&[u8]; 9] = [
        b"create",
        b"alter",
        b"drop",
        b"comment",
        b"grant",
        b"revoke",
        b"import",
        b"reassign",
        b"into",
    ];
    let starts_word = |b: u8| b.is_ascii_alphabetic() || b == b'_' || b >= 0x80;
    let continues_word = |b: u8| starts_word(b) || b.is_ascii_digit() || b == b'$';
    let mut prev_letter = false;
    for (i, &b) in sql.iter().enumerate() {
        let letter = starts_word(b);
        if letter && !prev_letter && matches!(b | 0x20, b'a' | b'c' | b'd' | b'g' | b'i' | b'r') {
            let rest = &sql[i..];
            let hit = WORDS.iter().any(|w| {
                rest.len() >= w.len()
                    && rest[..w.len()].eq_ignore_ascii_case(w)
                    && !rest.get(w.len()).is_some_and(|&c| continues_word(c))
            });
            if hit {
                return true;
            }
        }
        prev_letter = letter;
    }
    false
}

// --- object kinds ---

/// Which statements may name a kind.
const CREATE: u8 = 1;
const ALTER: u8 = 2;
const DROP: u8 = 4;
const COMMENT: u8 = 8;
const GRANT: u8 = 16;
const CADM: u8 = CREATE | ALTER | DROP | COMMENT;
const CDM: u8 = CREATE | DROP | COMMENT;

/// How an object of a kind is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// A qualified name.
    Name,
    /// A qualified name and an optional argument list.
    Args,
    /// `name ON table` (CREATE TRIGGER and CREATE RULE have more between).
    OnTable,
    /// An operator name (`+`, `myschema.===`) and an optional argument list.
    Operator,
    /// `(source AS target)`.
    Cast,
    /// `FOR type LANGUAGE lang`.
    Transform,
    /// `name USING access_method`.
    Using,
    /// `DROP OWNED BY roles`.
    Owned,
    /// `ALTER DEFAULT PRIVILEGES ...`.
    DefaultPrivileges,
    /// `GRANT ... ON ALL <plural> IN SCHEMA schemas`.
    AllInSchema(&'static str),
    /// `SELECT ... INTO [TEMP] [TABLE] name`.
    SelectInto,
    /// `IMPORT FOREIGN SCHEMA remote ... INTO local`.
    ImportForeignSchema,
    /// `REASSIGN OWNED BY roles TO role`.
    ReassignOwned,
}

#[derive(Debug)]
struct Kind {
    /// The keywords naming the kind after CREATE/ALTER/DROP/COMMENT ON/ON.
    words: &'static [&'static str],
    ty: ObjectType,
    /// The tag after `CREATE `/`ALTER `/`DROP `.
    tag: &'static str,
    form: Form,
    /// Bit set of CREATE, ALTER, DROP, COMMENT, GRANT.
    actions: u8,
}

const fn kind(
    words: &'static [&'static str],
    ty: ObjectType,
    tag: &'static str,
    form: Form,
    actions: u8,
) -> Kind {
    Kind {
        words,
        ty,
        tag,
        form,
        actions,
    }
}

use ObjectType as T;

/// Every schema-level kind, longest keyword sequence first where two share
/// a first word. Kinds missing here (DATABASE, ROLE, USER, GROUP,
/// TABLESPACE, SUBSCRIPTION, USER MAPPING, SYSTEM, LARGE OBJECT) are not
/// schema changes.
#[rustfmt::skip]
static KINDS: &[Kind] = &[
    kind(&["table"], T::Table, "TABLE", Form::Name, CADM | GRANT),
    kind(&["foreign", "table"], T::Table, "FOREIGN TABLE", Form::Name, CADM),
    kind(&["foreign", "data", "wrapper"], T::Other, "FOREIGN DATA WRAPPER", Form::Name, CADM | GRANT),
    kind(&["foreign", "server"], T::Other, "SERVER", Form::Name, GRANT),
    kind(&["index"], T::Index, "INDEX", Form::Name, CADM),
    kind(&["materialized", "view"], T::MaterializedView, "MATERIALIZED VIEW", Form::Name, CADM),
    kind(&["view"], T::View, "VIEW", Form::Name, CADM),
    kind(&["sequence"], T::Sequence, "SEQUENCE", Form::Name, CADM | GRANT),
    kind(&["function"], T::Function, "FUNCTION", Form::Args, CADM | GRANT),
    kind(&["procedure"], T::Procedure, "PROCEDURE", Form::Args, CADM | GRANT),
    kind(&["routine"], T::Function, "ROUTINE", Form::Args, ALTER | DROP | COMMENT | GRANT),
    kind(&["aggregate"], T::Aggregate, "AGGREGATE", Form::Args, CADM),
    kind(&["event", "trigger"], T::Other, "EVENT TRIGGER", Form::Name, CADM),
    kind(&["trigger"], T::Trigger, "TRIGGER", Form::OnTable, CADM),
    kind(&["type"], T::Type, "TYPE", Form::Name, CADM | GRANT),
    kind(&["domain"], T::Domain, "DOMAIN", Form::Name, CADM | GRANT),
    kind(&["schema"], T::Schema, "SCHEMA", Form::Name, CADM | GRANT),
    kind(&["extension"], T::Extension, "EXTENSION", Form::Name, CADM),
    kind(&["policy"], T::Policy, "POLICY", Form::OnTable, CADM),
    kind(&["rule"], T::Rule, "RULE", Form::OnTable, CADM),
    kind(&["cast"], T::Other, "CAST", Form::Cast, CDM),
    kind(&["operator", "class"], T::Other, "OPERATOR CLASS", Form::Using, CADM),
    kind(&["operator", "family"], T::Other, "OPERATOR FAMILY", Form::Using, CADM),
    kind(&["operator"], T::Other, "OPERATOR", Form::Operator, CADM),
    kind(&["collation"], T::Other, "COLLATION", Form::Name, CADM),
    kind(&["text", "search", "parser"], T::Other, "TEXT SEARCH PARSER", Form::Name, CADM),
    kind(&["text", "search", "dictionary"], T::Other, "TEXT SEARCH DICTIONARY", Form::Name, CADM),
    kind(&["text", "search", "template"], T::Other, "TEXT SEARCH TEMPLATE", Form::Name, CADM),
    kind(&["text", "search", "configuration"], T::Other, "TEXT SEARCH CONFIGURATION", Form::Name, CADM),
    kind(&["server"], T::Other, "SERVER", Form::Name, CADM),
    kind(&["publication"], T::Other, "PUBLICATION", Form::Name, CADM),
    kind(&["statistics"], T::Other, "STATISTICS", Form::Name, CADM),
    kind(&["conversion"], T::Other, "CONVERSION", Form::Name, CADM),
    kind(&["procedural", "language"], T::Other, "LANGUAGE", Form::Name, CADM),
    kind(&["language"], T::Other, "LANGUAGE", Form::Name, CADM | GRANT),
    kind(&["access", "method"], T::Other, "ACCESS METHOD", Form::Name, CDM),
    kind(&["transform"], T::Other, "TRANSFORM", Form::Transform, CDM),
    kind(&["column"], T::Column, "COLUMN", Form::Name, COMMENT),
    kind(&["constraint"], T::Constraint, "CONSTRAINT", Form::OnTable, COMMENT),
    kind(&["owned"], T::Other, "OWNED", Form::Owned, DROP),
    kind(&["default", "privileges"], T::Other, "DEFAULT PRIVILEGES", Form::DefaultPrivileges, ALTER),
    kind(&["all", "tables", "in", "schema"], T::Table, "", Form::AllInSchema("tables"), GRANT),
    kind(&["all", "sequences", "in", "schema"], T::Sequence, "", Form::AllInSchema("sequences"), GRANT),
    kind(&["all", "functions", "in", "schema"], T::Function, "", Form::AllInSchema("functions"), GRANT),
    kind(&["all", "procedures", "in", "schema"], T::Procedure, "", Form::AllInSchema("procedures"), GRANT),
    kind(&["all", "routines", "in", "schema"], T::Function, "", Form::AllInSchema("routines"), GRANT),
];

/// `GRANT ... ON name`: a table.
static GRANT_TABLE: Kind = kind(&[], T::Table, "TABLE", Form::Name, GRANT);
static SELECT_INTO: Kind = kind(&[], T::Table, "TABLE", Form::SelectInto, 0);
static IMPORT_FOREIGN_SCHEMA: Kind = kind(&[], T::Other, "", Form::ImportForeignSchema, 0);
static REASSIGN_OWNED: Kind = kind(&[], T::Other, "", Form::ReassignOwned, 0);

/// GRANT/REVOKE targets that are cluster-level (or data, for large
/// objects): not schema changes.
const GRANT_CLUSTER_TARGETS: [&str; 4] = ["database", "tablespace", "large", "parameter"];

// --- cursor ---

/// A token stream with lookahead and parenthesis depth.
#[derive(Debug, Clone)]
struct Cursor<'a> {
    lexer: Lexer<'a>,
    depth: u32,
}

impl<'a> Cursor<'a> {
    fn new(stmt: &'a [u8]) -> Self {
        Self {
            lexer: Lexer::new(stmt),
            depth: 0,
        }
    }

    fn peek(&self) -> Option<Token<'a>> {
        self.lexer.clone().next()
    }

    fn bump(&mut self) -> Option<Token<'a>> {
        let t = self.lexer.next()?;
        if t.is_punct(b'(') {
            self.depth += 1;
        } else if t.is_punct(b')') {
            self.depth = self.depth.saturating_sub(1);
        }
        Some(t)
    }

    fn peek_word(&self, keyword: &str) -> bool {
        self.peek().is_some_and(|t| t.is_word(keyword))
    }

    fn peek_punct(&self, c: u8) -> bool {
        self.peek().is_some_and(|t| t.is_punct(c))
    }

    fn eat_word(&mut self, keyword: &str) -> bool {
        let hit = self.peek_word(keyword);
        if hit {
            self.bump();
        }
        hit
    }

    fn eat_any(&mut self, keywords: &[&str]) -> bool {
        match self.peek() {
            Some(t) if keywords.iter().any(|k| t.is_word(k)) => {
                self.bump();
                true
            }
            _ => false,
        }
    }

    /// Consumes all of `keywords` in order, or nothing.
    fn eat_words(&mut self, keywords: &[&str]) -> bool {
        let mut probe = self.clone();
        if keywords.iter().all(|k| probe.eat_word(k)) {
            *self = probe;
            true
        } else {
            false
        }
    }

    fn eat_punct(&mut self, c: u8) -> bool {
        let hit = self.peek_punct(c);
        if hit {
            self.bump();
        }
        hit
    }

    /// Consumes tokens up to and including the word `keyword` at the current
    /// parenthesis depth; false (at the end) if there is none.
    fn skip_to_word(&mut self, keyword: &str) -> bool {
        let base = self.depth;
        while let Some(t) = self.peek() {
            if self.depth < base {
                return false;
            }
            self.bump();
            if self.depth == base && t.is_word(keyword) {
                return true;
            }
        }
        false
    }

    /// The kind named next, among those allowed for `action` (a bit of
    /// CREATE, ALTER, ...).
    fn kind(&mut self, action: u8) -> Option<&'static Kind> {
        let next = self.peek()?;
        KINDS.iter().find(|k| {
            k.actions & action != 0 && next.is_word(k.words[0]) && self.eat_words(k.words)
        })
    }
}

// --- the decision ---

/// The leading keywords of a DDL statement, read without allocating.
#[derive(Debug)]
struct Head<'a> {
    action: Action,
    kind: &'static Kind,
    /// Positioned after the keywords naming the kind.
    cursor: Cursor<'a>,
    /// CREATE TEMP/TEMPORARY.
    temporary: bool,
}

fn head(stmt: &[u8]) -> Option<Head<'_>> {
    let mut cur = Cursor::new(stmt);
    let first = cur.peek()?;
    if first.is_punct(b'(') {
        return select_into(cur);
    }
    if first.kind != TokenKind::Word {
        return None;
    }
    let w = first.text;
    let is = |k: &str| w.eq_ignore_ascii_case(k.as_bytes());
    let mut temporary = false;
    let (action, kind) = if is("create") {
        cur.bump();
        loop {
            if cur.eat_any(&["temp", "temporary"]) {
                temporary = true;
            } else if !(cur.eat_words(&["or", "replace"])
                || cur.eat_any(&[
                    "local",
                    "global",
                    "unlogged",
                    "unique",
                    "constraint",
                    "default",
                    "trusted",
                    "recursive",
                ]))
            {
                break;
            }
        }
        (Action::Create, cur.kind(CREATE)?)
    } else if is("alter") {
        cur.bump();
        (Action::Alter, cur.kind(ALTER)?)
    } else if is("drop") {
        cur.bump();
        (Action::Drop, cur.kind(DROP)?)
    } else if is("comment") {
        cur.bump();
        if !cur.eat_word("on") {
            return None;
        }
        (Action::Comment, cur.kind(COMMENT)?)
    } else if is("grant") || is("revoke") {
        let action = if is("grant") {
            Action::Grant
        } else {
            Action::Revoke
        };
        cur.bump();
        // Privileges, then ON for an object grant; a role grant has none.
        loop {
            let t = cur.bump()?;
            if cur.depth == 0 && (t.is_word("to") || t.is_word("from")) {
                return None;
            }
            if cur.depth == 0 && t.is_word("on") {
                break;
            }
        }
        let kind = match cur.kind(GRANT) {
            Some(kind) => kind,
            None if GRANT_CLUSTER_TARGETS.iter().any(|k| cur.peek_word(k)) => return None,
            None => &GRANT_TABLE,
        };
        (action, kind)
    } else if is("select") || is("with") {
        return select_into(cur);
    } else if is("import") {
        if !cur.eat_words(&["import", "foreign", "schema"]) {
            return None;
        }
        (Action::Create, &IMPORT_FOREIGN_SCHEMA)
    } else if is("reassign") {
        if !cur.eat_words(&["reassign", "owned", "by"]) {
            return None;
        }
        (Action::Alter, &REASSIGN_OWNED)
    } else {
        return None;
    };
    Some(Head {
        action,
        kind,
        cursor: cur,
        temporary,
    })
}

/// `SELECT ... INTO name`, possibly after WITH and inside parentheses: the
/// `INTO` at the level of the leading SELECT (not in a subquery), and not
/// PL/pgSQL's `INTO STRICT`.
fn select_into(mut cur: Cursor<'_>) -> Option<Head<'_>> {
    while cur.eat_punct(b'(') {}
    let base = cur.depth;
    let first = cur.bump()?;
    if first.is_word("with") {
        // Find the main statement after the CTEs: the first SELECT/INSERT/...
        // at this level that is not in a name position (after WITH,
        // RECURSIVE or a comma: a CTE name; after BY, CYCLE, SET, USING:
        // a column of a SEARCH or CYCLE clause).
        const NAME_POSITION: [&str; 8] = [
            "with",
            "recursive",
            "by",
            "cycle",
            "set",
            "using",
            "to",
            "default",
        ];
        const MAIN: [&str; 6] = ["insert", "update", "delete", "merge", "values", "table"];
        let mut prev = first;
        loop {
            let before = cur.depth;
            let t = cur.bump()?;
            if cur.depth < base {
                return None;
            }
            if before != base {
                if cur.depth == base {
                    // The `)` closing a CTE body.
                    prev = t;
                }
                continue;
            }
            let name_position =
                prev.is_punct(b',') || NAME_POSITION.iter().any(|k| prev.is_word(k));
            if !name_position {
                if t.is_word("select") {
                    break;
                }
                if MAIN.iter().any(|k| t.is_word(k)) {
                    return None;
                }
            }
            prev = t;
        }
    } else if !first.is_word("select") {
        return None;
    }
    loop {
        let before = cur.depth;
        let t = cur.bump()?;
        if before == base && t.is_word("into") {
            if cur.peek_word("strict") {
                return None;
            }
            return Some(Head {
                action: Action::Create,
                kind: &SELECT_INTO,
                cursor: cur,
                temporary: false,
            });
        }
    }
}

// --- names ---

/// A name read from the statement.
struct Name {
    text: String,
    /// In the session's temporary schema (`pg_temp` or `pg_temp_N`).
    temporary: bool,
}

fn push_identifier(out: &mut String, id: &[u8]) {
    out.push_str(&String::from_utf8_lossy(id));
}

/// A possibly qualified name: identifiers joined with `.`.
fn qualified_name(cur: &mut Cursor<'_>) -> Option<Name> {
    let first = cur.peek().filter(Token::is_identifier)?;
    cur.bump();
    let mut parts: Vec<Cow<'_, [u8]>> = vec![first.identifier()?];
    while cur.peek_punct(b'.') {
        let mut probe = cur.clone();
        probe.bump();
        match probe.peek() {
            Some(t) if t.is_identifier() => {
                probe.bump();
                parts.extend(t.identifier());
                *cur = probe;
            }
            _ => break,
        }
    }
    let temporary = parts.len() >= 2 && {
        let schema = parts[parts.len() - 2].to_ascii_lowercase();
        schema == b"pg_temp" || schema.starts_with(b"pg_temp_")
    };
    let mut text = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        push_identifier(&mut text, part);
    }
    Some(Name { text, temporary })
}

/// Renders tokens with whitespace collapsed: unquoted words lowercased,
/// everything else as written; one space after a comma, none inside
/// brackets or around `.`, otherwise one space where the text had any.
struct Render<'o, 'a> {
    out: &'o mut String,
    prev: Option<Token<'a>>,
}

impl<'o, 'a> Render<'o, 'a> {
    fn new(out: &'o mut String) -> Self {
        Self { out, prev: None }
    }

    fn push(&mut self, t: Token<'a>) {
        if let Some(prev) = self.prev {
            let tight_after = prev.is_punct(b'(') || prev.is_punct(b'[') || prev.is_punct(b'.');
            let tight_before = [b')', b']', b',', b'.', b'[']
                .iter()
                .any(|&c| t.is_punct(c));
            let gap = prev.is_punct(b',') || (!tight_after && t.start > prev.end());
            if gap && !tight_before {
                self.out.push(' ');
            }
        }
        match t.kind {
            TokenKind::Word => self
                .out
                .push_str(&String::from_utf8_lossy(&t.text.to_ascii_lowercase())),
            _ => self.out.push_str(&String::from_utf8_lossy(t.text)),
        }
        self.prev = Some(t);
    }
}

/// Renders a parenthesised group (the cursor at its `(`), brackets
/// included.
fn group(cur: &mut Cursor<'_>, out: &mut String) {
    if !cur.peek_punct(b'(') {
        return;
    }
    let base = cur.depth;
    let mut render = Render::new(out);
    while let Some(t) = cur.bump() {
        render.push(t);
        if cur.depth == base {
            break;
        }
    }
}

/// An operator name: `+`, `myschema.===` (the cursor at its start).
fn operator_name(cur: &mut Cursor<'_>, out: &mut String) {
    let mut render = Render::new(out);
    while let Some(t) = cur.peek() {
        let schema = t.is_identifier() && {
            let mut probe = cur.clone();
            probe.bump();
            probe.peek_punct(b'.')
        };
        let op =
            t.kind == TokenKind::Punct && ![b'(', b')', b',', b';'].iter().any(|&c| t.is_punct(c));
        if !(schema || op) {
            break;
        }
        cur.bump();
        // Operator characters are adjacent: render them so.
        render.prev = None;
        match t.identifier() {
            Some(id) if schema => push_identifier(render.out, &id),
            _ => render.push(t),
        }
    }
}

/// One object of `form`, appended to `out`; returns whether it is in the
/// temporary schema.
fn object(cur: &mut Cursor<'_>, form: Form, out: &mut String) -> bool {
    match form {
        Form::Args => {
            let name = qualified_name(cur);
            if let Some(name) = &name {
                out.push_str(&name.text);
            }
            group(cur, out);
            name.is_some_and(|n| n.temporary)
        }
        Form::OnTable => {
            if let Some(name) = qualified_name(cur) {
                out.push_str(&name.text);
            }
            if cur.eat_word("on") {
                out.push_str(" on ");
                if cur.eat_word("domain") {
                    out.push_str("domain ");
                }
                if let Some(table) = qualified_name(cur) {
                    out.push_str(&table.text);
                    return table.temporary;
                }
            }
            false
        }
        Form::Operator => {
            operator_name(cur, out);
            group(cur, out);
            false
        }
        Form::Cast => {
            group(cur, out);
            false
        }
        Form::Transform => {
            let mut render = Render::new(out);
            while let Some(t) = cur.peek() {
                if cur.depth == 0
                    && (t.is_punct(b',')
                        || t.is_word("cascade")
                        || t.is_word("restrict")
                        || t.is_punct(b'('))
                {
                    break;
                }
                cur.bump();
                render.push(t);
            }
            false
        }
        Form::Using => {
            let name = qualified_name(cur);
            if let Some(name) = &name {
                out.push_str(&name.text);
            }
            if cur.eat_word("using") {
                if let Some(method) = qualified_name(cur) {
                    out.push_str(" using ");
                    out.push_str(&method.text);
                }
            }
            false
        }
        _ => match qualified_name(cur) {
            Some(name) => {
                out.push_str(&name.text);
                name.temporary
            }
            None => false,
        },
    }
}

/// A comma-separated list of objects; returns whether all are temporary.
fn objects(cur: &mut Cursor<'_>, form: Form, out: &mut String) -> bool {
    let mut temporary = true;
    loop {
        temporary &= object(cur, form, out);
        if !cur.eat_punct(b',') {
            return temporary;
        }
        out.push_str(", ");
    }
}

/// A comma-separated list of names.
fn names(cur: &mut Cursor<'_>, out: &mut String) {
    objects(cur, Form::Name, out);
}

// --- building the result ---

fn build(head: Head<'_>) -> Ddl {
    let Head {
        action,
        kind,
        cursor: mut cur,
        temporary,
    } = head;
    let mut ddl = Ddl {
        object_type: kind.ty,
        identity: String::new(),
        action,
        tag: String::new(),
        non_transactional: false,
        temporary,
    };
    match action {
        Action::Create => create(&mut cur, kind, &mut ddl),
        Action::Alter => alter(&mut cur, kind, &mut ddl),
        Action::Drop => drop(&mut cur, kind, &mut ddl),
        Action::Comment => {
            ddl.tag = "COMMENT".into();
            ddl.temporary = object(&mut cur, kind.form, &mut ddl.identity);
        }
        Action::Grant | Action::Revoke => {
            ddl.tag = if action == Action::Grant {
                "GRANT"
            } else {
                "REVOKE"
            }
            .into();
            if let Form::AllInSchema(plural) = kind.form {
                ddl.identity = format!("all {plural} in schema ");
                names(&mut cur, &mut ddl.identity);
            } else {
                ddl.temporary = objects(&mut cur, kind.form, &mut ddl.identity);
            }
        }
        Action::Rename => {}
    }
    ddl
}

fn create(cur: &mut Cursor<'_>, kind: &Kind, ddl: &mut Ddl) {
    ddl.tag = format!("CREATE {}", kind.tag);
    let out = &mut ddl.identity;
    let mut temporary = false;
    match kind.form {
        Form::SelectInto => {
            ddl.tag = "SELECT".into();
            loop {
                if cur.eat_any(&["temp", "temporary"]) {
                    ddl.temporary = true;
                } else if !cur.eat_any(&["local", "global", "unlogged", "table"]) {
                    break;
                }
            }
            temporary = object(cur, Form::Name, out);
        }
        Form::ImportForeignSchema => {
            ddl.tag = "IMPORT FOREIGN SCHEMA".into();
            if cur.skip_to_word("into") {
                object(cur, Form::Name, out);
            }
        }
        _ => match kind.ty {
            T::Index => {
                ddl.non_transactional = cur.eat_word("concurrently");
                cur.eat_words(&["if", "not", "exists"]);
                if cur.eat_word("on") {
                    cur.eat_word("only");
                    out.push_str("on ");
                    temporary = object(cur, Form::Name, out);
                } else {
                    object(cur, Form::Name, out);
                }
            }
            T::Schema => {
                cur.eat_words(&["if", "not", "exists"]);
                cur.eat_word("authorization");
                object(cur, Form::Name, out);
            }
            T::Trigger | T::Rule => {
                // CREATE TRIGGER name BEFORE ... ON table;
                // CREATE RULE name AS ON event TO table.
                object(cur, Form::Name, out);
                let on = if kind.ty == T::Trigger { "on" } else { "to" };
                if cur.skip_to_word(on) {
                    out.push_str(" on ");
                    temporary = object(cur, Form::Name, out);
                }
            }
            T::Policy => temporary = object(cur, Form::OnTable, out),
            T::Aggregate => {
                // New syntax: name (args) (definition); old syntax: name
                // (definition), which has no argument list.
                if let Some(name) = qualified_name(cur) {
                    out.push_str(&name.text);
                    temporary = name.temporary;
                }
                let mut probe = cur.clone();
                let mut args = String::new();
                group(&mut probe, &mut args);
                if probe.peek_punct(b'(') {
                    out.push_str(&args);
                }
            }
            T::Other if kind.form == Form::Operator => operator_name(cur, out),
            T::Other if kind.form == Form::Using => {
                object(cur, Form::Name, out);
                if cur.skip_to_word("using") {
                    if let Some(method) = qualified_name(cur) {
                        out.push_str(" using ");
                        out.push_str(&method.text);
                    }
                }
            }
            T::Other if kind.tag == "STATISTICS" => {
                cur.eat_words(&["if", "not", "exists"]);
                if !cur.peek_word("on") {
                    object(cur, Form::Name, out);
                }
            }
            _ => {
                cur.eat_words(&["if", "not", "exists"]);
                temporary = object(cur, kind.form, out);
            }
        },
    }
    ddl.temporary |= temporary;
    if matches!(kind.ty, T::Table | T::MaterializedView) && kind.form == Form::Name {
        // CREATE TABLE ... AS / CREATE MATERIALIZED VIEW ... AS report
        // `SELECT <rows>`, unless they end WITH NO DATA.
        let mut as_query = false;
        let mut last: [Option<Token<'_>>; 3] = [None; 3];
        loop {
            let before = cur.depth;
            let Some(t) = cur.bump() else { break };
            if before != 0 || t.is_punct(b';') {
                continue;
            }
            as_query |= t.is_word("as");
            last = [last[1], last[2], Some(t)];
        }
        let no_data = matches!(last, [Some(a), Some(b), Some(c)]
            if a.is_word("with") && b.is_word("no") && c.is_word("data"));
        if as_query {
            ddl.tag = match (no_data, kind.ty) {
                (false, _) => "SELECT".into(),
                (true, T::Table) => "CREATE TABLE AS".into(),
                (true, _) => "CREATE MATERIALIZED VIEW".into(),
            };
        }
    }
}

fn alter(cur: &mut Cursor<'_>, kind: &Kind, ddl: &mut Ddl) {
    ddl.tag = format!("ALTER {}", kind.tag);
    let out = &mut ddl.identity;
    match kind.form {
        Form::DefaultPrivileges => {
            out.push_str("default privileges");
            return;
        }
        Form::ReassignOwned => {
            ddl.tag = "REASSIGN OWNED".into();
            out.push_str("owned by ");
            names(cur, out);
            return;
        }
        _ => {}
    }
    cur.eat_words(&["if", "exists"]);
    if cur.eat_words(&["all", "in", "tablespace"]) {
        out.push_str("all in tablespace ");
        object(cur, Form::Name, out);
    } else {
        cur.eat_word("only");
        ddl.temporary = object(cur, kind.form, out);
        cur.eat_punct(b'*');
    }
    if cur.peek_word("rename") {
        ddl.action = Action::Rename;
    } else if kind.ty == T::Table {
        // ALTER TABLE ... DETACH PARTITION p CONCURRENTLY.
        let mut detach = false;
        while let Some(t) = cur.bump() {
            if cur.depth == 0 {
                if t.is_word("detach") {
                    detach = true;
                } else if detach && t.is_word("concurrently") {
                    ddl.non_transactional = true;
                }
            }
        }
    }
}

fn drop(cur: &mut Cursor<'_>, kind: &Kind, ddl: &mut Ddl) {
    ddl.tag = format!("DROP {}", kind.tag);
    let out = &mut ddl.identity;
    if kind.form == Form::Owned {
        cur.eat_word("by");
        out.push_str("owned by ");
        names(cur, out);
        return;
    }
    ddl.non_transactional = cur.eat_word("concurrently");
    cur.eat_words(&["if", "exists"]);
    ddl.temporary = objects(cur, kind.form, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::lexer::split_statements;
    use proptest::prelude::*;

    /// What `classify` found, as `type | identity | action | tag`, plus
    /// `| nontx` and/or `| temp` when those flags are set.
    fn describe(sql: &str) -> String {
        let d = classify(sql.as_bytes()).unwrap_or_else(|| panic!("not DDL: {sql}"));
        let mut s = format!(
            "{} | {} | {} | {}",
            d.object_type.as_str(),
            d.identity,
            d.action.as_str(),
            d.tag
        );
        if d.non_transactional {
            s.push_str(" | nontx");
        }
        if d.temporary {
            s.push_str(" | temp");
        }
        s
    }

    /// Checks each `(statement, expected description)`; every one must also
    /// pass the `may_contain_ddl` screen.
    fn cases(cases: &[(&str, &str)]) {
        for (sql, expected) in cases {
            assert_eq!(describe(sql), *expected, "{sql}");
            assert!(may_contain_ddl(sql.as_bytes()), "{sql}");
        }
    }

    fn not_ddl(sqls: &[&str]) {
        for sql in sqls {
            assert_eq!(classify(sql.as_bytes()), None, "{sql}");
        }
    }

    #[test]
    fn enums_as_str() {
        assert_eq!(Action::Rename.as_str(), "rename");
        assert_eq!(Action::Revoke.as_str(), "revoke");
        assert_eq!(ObjectType::MaterializedView.as_str(), "materialized view");
        assert_eq!(ObjectType::Other.as_str(), "other");
    }

    #[test]
    #[rustfmt::skip]
    fn tables() {
        cases(&[
            ("CREATE TABLE t (a int)", "table | t | create | CREATE TABLE"),
            (r#"CREATE TABLE "Sales".Orders (id int)"#, "table | Sales.orders | create | CREATE TABLE"),
            ("create unlogged table if not exists public.t (a int)", "table | public.t | create | CREATE TABLE"),
            ("CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (1) TO (10)", "table | p1 | create | CREATE TABLE"),
            ("CREATE TABLE c (LIKE p INCLUDING ALL)", "table | c | create | CREATE TABLE"),
            ("CREATE FOREIGN TABLE ft (a int) SERVER s", "table | ft | create | CREATE FOREIGN TABLE"),
            ("CREATE TABLE g (a int, b int GENERATED ALWAYS AS (a * 2) STORED)", "table | g | create | CREATE TABLE"),
            ("ALTER TABLE t ADD COLUMN b text", "table | t | alter | ALTER TABLE"),
            ("ALTER TABLE IF EXISTS ONLY \"T\" * ADD COLUMN rename int", "table | T | alter | ALTER TABLE"),
            ("ALTER TABLE t SET SCHEMA s", "table | t | alter | ALTER TABLE"),
            ("ALTER TABLE p ATTACH PARTITION c FOR VALUES IN (1)", "table | p | alter | ALTER TABLE"),
            ("ALTER TABLE t RENAME TO u", "table | t | rename | ALTER TABLE"),
            ("alter table t rename column a to b", "table | t | rename | ALTER TABLE"),
            ("ALTER TABLE t RENAME CONSTRAINT c TO d", "table | t | rename | ALTER TABLE"),
            ("ALTER FOREIGN TABLE ft ADD COLUMN b int", "table | ft | alter | ALTER FOREIGN TABLE"),
            ("ALTER TABLE ALL IN TABLESPACE a SET TABLESPACE b", "table | all in tablespace a | alter | ALTER TABLE"),
            ("DROP TABLE IF EXISTS a, s.b CASCADE", "table | a, s.b | drop | DROP TABLE"),
            ("DROP FOREIGN TABLE ft", "table | ft | drop | DROP FOREIGN TABLE"),
            ("ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY", "table | p | alter | ALTER TABLE | nontx"),
            ("ALTER TABLE p DETACH PARTITION p1 FINALIZE", "table | p | alter | ALTER TABLE"),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn temporary_objects() {
        cases(&[
            ("CREATE TEMP TABLE t (a int)", "table | t | create | CREATE TABLE | temp"),
            ("CREATE TEMPORARY TABLE t (a int)", "table | t | create | CREATE TABLE | temp"),
            ("CREATE LOCAL TEMP TABLE t (a int)", "table | t | create | CREATE TABLE | temp"),
            ("CREATE GLOBAL TEMPORARY TABLE t (a int)", "table | t | create | CREATE TABLE | temp"),
            ("CREATE TABLE pg_temp.t (a int)", "table | pg_temp.t | create | CREATE TABLE | temp"),
            ("CREATE TEMP VIEW v AS SELECT 1", "view | v | create | CREATE VIEW | temp"),
            ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "view | v | create | CREATE VIEW | temp"),
            ("CREATE TEMP SEQUENCE s", "sequence | s | create | CREATE SEQUENCE | temp"),
            ("SELECT 1 AS a INTO TEMP t", "table | t | create | SELECT | temp"),
            ("SELECT 1 AS a INTO TEMPORARY TABLE t", "table | t | create | SELECT | temp"),
            ("CREATE TEMP TABLE t AS SELECT 1", "table | t | create | SELECT | temp"),
            ("DROP TABLE pg_temp.t", "table | pg_temp.t | drop | DROP TABLE | temp"),
            ("DROP TABLE pg_temp.t, u", "table | pg_temp.t, u | drop | DROP TABLE"),
            ("SELECT 1 AS a INTO UNLOGGED t", "table | t | create | SELECT"),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn create_table_as_and_select_into() {
        cases(&[
            ("CREATE TABLE t AS SELECT * FROM s", "table | t | create | SELECT"),
            ("CREATE TABLE t (a, b) AS VALUES (1, 2)", "table | t | create | SELECT"),
            ("CREATE TABLE t AS EXECUTE p", "table | t | create | SELECT"),
            ("CREATE TABLE t AS SELECT * FROM s WITH NO DATA", "table | t | create | CREATE TABLE AS"),
            ("CREATE TABLE t AS SELECT * FROM s WITH DATA", "table | t | create | SELECT"),
            ("CREATE MATERIALIZED VIEW mv AS SELECT 1", "materialized view | mv | create | SELECT"),
            (
                "CREATE MATERIALIZED VIEW IF NOT EXISTS s.mv (a) AS SELECT 1 WITH NO DATA",
                "materialized view | s.mv | create | CREATE MATERIALIZED VIEW",
            ),
            ("SELECT * INTO newt FROM t", "table | newt | create | SELECT"),
            ("SELECT INTO newt FROM t", "table | newt | create | SELECT"),
            ("select a into table \"New\" from t where a in (select 1)", "table | New | create | SELECT"),
            ("WITH w AS (SELECT 1 AS q) SELECT * INTO t7 FROM w", "table | t7 | create | SELECT"),
            (
                "WITH RECURSIVE w(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM w WHERE n < 3) \
                 SEARCH DEPTH FIRST BY n SET o SELECT n INTO t8 FROM w",
                "table | t8 | create | SELECT",
            ),
            ("(SELECT 1 AS z INTO t6)", "table | t6 | create | SELECT"),
        ]);
        // Not a top-level INTO, or not SQL.
        not_ddl(&[
            "SELECT * FROM t",
            "SELECT (SELECT 1 INTO x) FROM t",
            "SELECT 1 INTO STRICT v",
            "SELECT 'into' FROM t",
            "SELECT \"into\" FROM t",
            "SELECT 1 -- into x\n",
            "WITH w AS (SELECT 1) INSERT INTO t SELECT * FROM w",
            "WITH w AS (SELECT * INTO x FROM t) SELECT 1",
            "WITH w AS MATERIALIZED (SELECT 1) UPDATE t SET a = 1",
            "INSERT INTO t VALUES (1)",
            "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE",
            "(SELECT 1) UNION SELECT 2",
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn indexes() {
        cases(&[
            ("CREATE INDEX i ON t (a)", "index | i | create | CREATE INDEX"),
            ("CREATE UNIQUE INDEX IF NOT EXISTS i ON ONLY s.t USING btree (a)", "index | i | create | CREATE INDEX"),
            ("CREATE INDEX ON public.t (a)", "index | on public.t | create | CREATE INDEX"),
            ("CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)", "index | i | create | CREATE INDEX | nontx"),
            ("create index concurrently on t (a)", "index | on t | create | CREATE INDEX | nontx"),
            ("ALTER INDEX i RENAME TO j", "index | i | rename | ALTER INDEX"),
            ("ALTER INDEX IF EXISTS i SET (fillfactor = 50)", "index | i | alter | ALTER INDEX"),
            ("DROP INDEX i, j", "index | i, j | drop | DROP INDEX"),
            ("DROP INDEX CONCURRENTLY IF EXISTS s.i", "index | s.i | drop | DROP INDEX | nontx"),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn views_and_sequences() {
        cases(&[
            ("CREATE VIEW v AS SELECT 1", "view | v | create | CREATE VIEW"),
            (
                "CREATE OR REPLACE VIEW s.v (a) WITH (security_barrier) AS SELECT 1",
                "view | s.v | create | CREATE VIEW",
            ),
            ("CREATE RECURSIVE VIEW rv (n) AS SELECT 1", "view | rv | create | CREATE VIEW"),
            ("CREATE VIEW v AS SELECT 1 WITH LOCAL CHECK OPTION", "view | v | create | CREATE VIEW"),
            ("ALTER VIEW v RENAME COLUMN a TO b", "view | v | rename | ALTER VIEW"),
            ("DROP VIEW IF EXISTS v, w", "view | v, w | drop | DROP VIEW"),
            ("ALTER MATERIALIZED VIEW mv SET SCHEMA s", "materialized view | mv | alter | ALTER MATERIALIZED VIEW"),
            ("DROP MATERIALIZED VIEW mv", "materialized view | mv | drop | DROP MATERIALIZED VIEW"),
            ("CREATE SEQUENCE IF NOT EXISTS s.seq AS integer START WITH 5", "sequence | s.seq | create | CREATE SEQUENCE"),
            ("ALTER SEQUENCE seq RESTART WITH 10", "sequence | seq | alter | ALTER SEQUENCE"),
            ("ALTER SEQUENCE seq RENAME TO q", "sequence | seq | rename | ALTER SEQUENCE"),
            ("DROP SEQUENCE seq", "sequence | seq | drop | DROP SEQUENCE"),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn functions_procedures_aggregates() {
        cases(&[
            (
                "CREATE FUNCTION public.add(integer,integer) RETURNS integer AS 'select $1 + $2' LANGUAGE sql",
                "function | public.add(integer, integer) | create | CREATE FUNCTION",
            ),
            (
                "CREATE OR REPLACE FUNCTION f( a  INT ,  b /* c */ text DEFAULT 'x' ) RETURNS int \
                 LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$",
                "function | f(a int, b text default 'x') | create | CREATE FUNCTION",
            ),
            (
                "CREATE FUNCTION f(a numeric(10,2), b int[]) RETURNS int BEGIN ATOMIC SELECT 1; END",
                "function | f(a numeric(10, 2), b int[]) | create | CREATE FUNCTION",
            ),
            ("CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT 1; END", "procedure | p() | create | CREATE PROCEDURE"),
            ("ALTER FUNCTION f(int) RENAME TO g", "function | f(int) | rename | ALTER FUNCTION"),
            ("ALTER FUNCTION f OWNER TO bob", "function | f | alter | ALTER FUNCTION"),
            ("ALTER PROCEDURE p(int) SET search_path = s", "procedure | p(int) | alter | ALTER PROCEDURE"),
            ("ALTER ROUTINE r(int) STABLE", "function | r(int) | alter | ALTER ROUTINE"),
            ("DROP FUNCTION IF EXISTS f(int), s.g(text, int) CASCADE", "function | f(int), s.g(text, int) | drop | DROP FUNCTION"),
            ("DROP PROCEDURE p", "procedure | p | drop | DROP PROCEDURE"),
            ("DROP ROUTINE r()", "function | r() | drop | DROP ROUTINE"),
            ("CREATE FUNCTION pg_temp.f() RETURNS int RETURN 1", "function | pg_temp.f() | create | CREATE FUNCTION | temp"),
            (
                "CREATE AGGREGATE s.mysum(int) (SFUNC = int4pl, STYPE = int)",
                "aggregate | s.mysum(int) | create | CREATE AGGREGATE",
            ),
            (
                "CREATE OR REPLACE AGGREGATE old (BASETYPE = int, SFUNC = int4pl, STYPE = int)",
                "aggregate | old | create | CREATE AGGREGATE",
            ),
            ("ALTER AGGREGATE mysum(int) RENAME TO s2", "aggregate | mysum(int) | rename | ALTER AGGREGATE"),
            ("DROP AGGREGATE mysum(*)", "aggregate | mysum(*) | drop | DROP AGGREGATE"),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn triggers_policies_rules() {
        cases(&[
            (
                "CREATE TRIGGER trg BEFORE INSERT OR UPDATE OF a, b ON public.t FOR EACH ROW EXECUTE FUNCTION f()",
                "trigger | trg on public.t | create | CREATE TRIGGER",
            ),
            (
                "CREATE OR REPLACE CONSTRAINT TRIGGER trg AFTER INSERT ON t DEFERRABLE \
                 FOR EACH ROW EXECUTE FUNCTION f()",
                "trigger | trg on t | create | CREATE TRIGGER",
            ),
            ("ALTER TRIGGER trg ON t RENAME TO x", "trigger | trg on t | rename | ALTER TRIGGER"),
            ("ALTER TRIGGER trg ON t DEPENDS ON EXTENSION e", "trigger | trg on t | alter | ALTER TRIGGER"),
            ("DROP TRIGGER IF EXISTS trg ON s.t CASCADE", "trigger | trg on s.t | drop | DROP TRIGGER"),
            ("CREATE POLICY p ON t FOR SELECT USING (true)", "policy | p on t | create | CREATE POLICY"),
            ("ALTER POLICY p ON t USING (false)", "policy | p on t | alter | ALTER POLICY"),
            ("ALTER POLICY p ON t RENAME TO q", "policy | p on t | rename | ALTER POLICY"),
            ("DROP POLICY IF EXISTS p ON t", "policy | p on t | drop | DROP POLICY"),
            (
                "CREATE RULE r AS ON INSERT TO s.t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))",
                "rule | r on s.t | create | CREATE RULE",
            ),
            (
                "CREATE OR REPLACE RULE \"R\" AS ON SELECT TO t DO INSTEAD SELECT 1",
                "rule | R on t | create | CREATE RULE",
            ),
            ("ALTER RULE r ON t RENAME TO q", "rule | r on t | rename | ALTER RULE"),
            ("DROP RULE r ON t", "rule | r on t | drop | DROP RULE"),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn types_domains_schemas_extensions() {
        cases(&[
            ("CREATE TYPE mood AS ENUM ('sad', 'ok')", "type | mood | create | CREATE TYPE"),
            ("CREATE TYPE s.comp AS (x int, y text)", "type | s.comp | create | CREATE TYPE"),
            ("CREATE TYPE r AS RANGE (subtype = float8)", "type | r | create | CREATE TYPE"),
            ("CREATE TYPE shell", "type | shell | create | CREATE TYPE"),
            ("ALTER TYPE mood ADD VALUE IF NOT EXISTS 'happy' AFTER 'ok'", "type | mood | alter | ALTER TYPE"),
            ("ALTER TYPE mood RENAME VALUE 'sad' TO 'blue'", "type | mood | rename | ALTER TYPE"),
            ("ALTER TYPE comp RENAME ATTRIBUTE x TO z", "type | comp | rename | ALTER TYPE"),
            ("DROP TYPE IF EXISTS mood, comp", "type | mood, comp | drop | DROP TYPE"),
            ("CREATE DOMAIN posint AS int CONSTRAINT c CHECK (VALUE > 0)", "domain | posint | create | CREATE DOMAIN"),
            ("ALTER DOMAIN posint RENAME CONSTRAINT c TO d", "domain | posint | rename | ALTER DOMAIN"),
            ("ALTER DOMAIN posint SET DEFAULT 1", "domain | posint | alter | ALTER DOMAIN"),
            ("DROP DOMAIN posint", "domain | posint | drop | DROP DOMAIN"),
            ("CREATE SCHEMA s", "schema | s | create | CREATE SCHEMA"),
            ("CREATE SCHEMA IF NOT EXISTS \"S\" AUTHORIZATION bob", "schema | S | create | CREATE SCHEMA"),
            ("CREATE SCHEMA AUTHORIZATION bob", "schema | bob | create | CREATE SCHEMA"),
            (
                "CREATE SCHEMA s CREATE TABLE t (a int) CREATE VIEW v AS SELECT 1",
                "schema | s | create | CREATE SCHEMA",
            ),
            ("ALTER SCHEMA s RENAME TO t", "schema | s | rename | ALTER SCHEMA"),
            ("ALTER SCHEMA s OWNER TO bob", "schema | s | alter | ALTER SCHEMA"),
            ("DROP SCHEMA IF EXISTS a, b CASCADE", "schema | a, b | drop | DROP SCHEMA"),
            ("CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA s", "extension | pgcrypto | create | CREATE EXTENSION"),
            ("CREATE EXTENSION \"uuid-ossp\"", "extension | uuid-ossp | create | CREATE EXTENSION"),
            ("ALTER EXTENSION e UPDATE TO '2.0'", "extension | e | alter | ALTER EXTENSION"),
            ("ALTER EXTENSION e ADD FUNCTION f(int)", "extension | e | alter | ALTER EXTENSION"),
            ("DROP EXTENSION e", "extension | e | drop | DROP EXTENSION"),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn comments() {
        cases(&[
            ("COMMENT ON TABLE s.t IS 'x'", "table | s.t | comment | COMMENT"),
            ("COMMENT ON COLUMN s.t.c IS 'x'", "column | s.t.c | comment | COMMENT"),
            ("comment on column t.\"C\" is null", "column | t.C | comment | COMMENT"),
            ("COMMENT ON FUNCTION f(int, text) IS 'x'", "function | f(int, text) | comment | COMMENT"),
            ("COMMENT ON CONSTRAINT c ON t IS 'x'", "constraint | c on t | comment | COMMENT"),
            ("COMMENT ON CONSTRAINT c ON DOMAIN d IS 'x'", "constraint | c on domain d | comment | COMMENT"),
            ("COMMENT ON TRIGGER trg ON t IS 'x'", "trigger | trg on t | comment | COMMENT"),
            ("COMMENT ON POLICY p ON t IS 'x'", "policy | p on t | comment | COMMENT"),
            ("COMMENT ON RULE r ON t IS 'x'", "rule | r on t | comment | COMMENT"),
            ("COMMENT ON MATERIALIZED VIEW mv IS 'x'", "materialized view | mv | comment | COMMENT"),
            ("COMMENT ON INDEX i IS 'x'", "index | i | comment | COMMENT"),
            ("COMMENT ON SCHEMA s IS 'x'", "schema | s | comment | COMMENT"),
            ("COMMENT ON TYPE t IS 'x'", "type | t | comment | COMMENT"),
            ("COMMENT ON AGGREGATE a(*) IS 'x'", "aggregate | a(*) | comment | COMMENT"),
            ("COMMENT ON CAST (int AS text) IS 'x'", "other | (int as text) | comment | COMMENT"),
            ("COMMENT ON OPERATOR ===(int, int) IS 'x'", "other | ===(int, int) | comment | COMMENT"),
            ("COMMENT ON OPERATOR CLASS c USING btree IS 'x'", "other | c using btree | comment | COMMENT"),
            ("COMMENT ON PROCEDURAL LANGUAGE plpgsql IS 'x'", "other | plpgsql | comment | COMMENT"),
        ]);
        not_ddl(&[
            "COMMENT ON DATABASE d IS 'x'",
            "COMMENT ON ROLE r IS 'x'",
            "COMMENT ON TABLESPACE t IS 'x'",
            "COMMENT ON LARGE OBJECT 1234 IS 'x'",
            "COMMENT ON SUBSCRIPTION s IS 'x'",
            "COMMENT IS 'x'",
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn grants() {
        cases(&[
            ("GRANT SELECT ON t TO bob", "table | t | grant | GRANT"),
            (
                "GRANT SELECT (a, b), UPDATE (c) ON TABLE s.t, u TO bob WITH GRANT OPTION",
                "table | s.t, u | grant | GRANT",
            ),
            ("REVOKE ALL PRIVILEGES ON t FROM PUBLIC", "table | t | revoke | REVOKE"),
            ("REVOKE GRANT OPTION FOR SELECT ON t FROM bob CASCADE", "table | t | revoke | REVOKE"),
            ("GRANT USAGE ON SEQUENCE s TO bob", "sequence | s | grant | GRANT"),
            ("GRANT EXECUTE ON FUNCTION f(int), g() TO bob", "function | f(int), g() | grant | GRANT"),
            ("GRANT EXECUTE ON PROCEDURE p TO bob", "procedure | p | grant | GRANT"),
            ("GRANT EXECUTE ON ROUTINE r(int) TO bob", "function | r(int) | grant | GRANT"),
            ("GRANT USAGE, CREATE ON SCHEMA s TO bob", "schema | s | grant | GRANT"),
            ("GRANT USAGE ON TYPE t TO bob", "type | t | grant | GRANT"),
            ("GRANT USAGE ON DOMAIN d TO bob", "domain | d | grant | GRANT"),
            ("GRANT USAGE ON LANGUAGE plpgsql TO bob", "other | plpgsql | grant | GRANT"),
            ("GRANT USAGE ON FOREIGN SERVER s TO bob", "other | s | grant | GRANT"),
            ("GRANT USAGE ON FOREIGN DATA WRAPPER w TO bob", "other | w | grant | GRANT"),
            ("GRANT SELECT ON ALL TABLES IN SCHEMA s TO bob", "table | all tables in schema s | grant | GRANT"),
            (
                "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA a, b FROM bob",
                "function | all functions in schema a, b | revoke | REVOKE",
            ),
            ("GRANT USAGE ON ALL SEQUENCES IN SCHEMA s TO bob", "sequence | all sequences in schema s | grant | GRANT"),
        ]);
        not_ddl(&[
            "GRANT admin TO bob",
            "GRANT admin TO bob WITH ADMIN OPTION",
            "REVOKE admin FROM bob",
            "REVOKE ADMIN OPTION FOR admin FROM bob",
            "GRANT CONNECT ON DATABASE d TO bob",
            "GRANT CREATE ON TABLESPACE t TO bob",
            "GRANT SELECT ON LARGE OBJECT 1 TO bob",
            "GRANT SET ON PARAMETER work_mem TO bob",
            "GRANT",
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn default_privileges_and_other_objects() {
        cases(&[
            (
                "ALTER DEFAULT PRIVILEGES IN SCHEMA s GRANT SELECT ON TABLES TO bob",
                "other | default privileges | alter | ALTER DEFAULT PRIVILEGES",
            ),
            ("CREATE CAST (int AS text) WITH INOUT", "other | (int as text) | create | CREATE CAST"),
            ("DROP CAST IF EXISTS (int AS text)", "other | (int as text) | drop | DROP CAST"),
            (
                "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq)",
                "other | === | create | CREATE OPERATOR",
            ),
            ("CREATE OPERATOR s.<-> (FUNCTION = f)", "other | s.<-> | create | CREATE OPERATOR"),
            (
                "DROP OPERATOR IF EXISTS ~~ (text, text), !~(text,text)",
                "other | ~~(text, text), !~(text, text) | drop | DROP OPERATOR",
            ),
            ("ALTER OPERATOR + (int, int) OWNER TO bob", "other | +(int, int) | alter | ALTER OPERATOR"),
            (
                "CREATE OPERATOR CLASS c DEFAULT FOR TYPE t USING btree AS OPERATOR 1 <",
                "other | c using btree | create | CREATE OPERATOR CLASS",
            ),
            ("DROP OPERATOR FAMILY f USING hash", "other | f using hash | drop | DROP OPERATOR FAMILY"),
            ("CREATE COLLATION IF NOT EXISTS c (locale = 'C')", "other | c | create | CREATE COLLATION"),
            ("ALTER COLLATION c REFRESH VERSION", "other | c | alter | ALTER COLLATION"),
            (
                "CREATE TEXT SEARCH CONFIGURATION tsc (COPY = simple)",
                "other | tsc | create | CREATE TEXT SEARCH CONFIGURATION",
            ),
            (
                "ALTER TEXT SEARCH DICTIONARY d (StopWords = english)",
                "other | d | alter | ALTER TEXT SEARCH DICTIONARY",
            ),
            ("DROP TEXT SEARCH PARSER p", "other | p | drop | DROP TEXT SEARCH PARSER"),
            ("CREATE TEXT SEARCH TEMPLATE t (LEXIZE = l)", "other | t | create | CREATE TEXT SEARCH TEMPLATE"),
            (
                "CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION f()",
                "other | et | create | CREATE EVENT TRIGGER",
            ),
            ("ALTER EVENT TRIGGER et DISABLE", "other | et | alter | ALTER EVENT TRIGGER"),
            ("DROP EVENT TRIGGER et", "other | et | drop | DROP EVENT TRIGGER"),
            ("CREATE SERVER s FOREIGN DATA WRAPPER w", "other | s | create | CREATE SERVER"),
            ("ALTER SERVER s OPTIONS (host 'x')", "other | s | alter | ALTER SERVER"),
            ("DROP SERVER IF EXISTS s", "other | s | drop | DROP SERVER"),
            ("CREATE FOREIGN DATA WRAPPER w", "other | w | create | CREATE FOREIGN DATA WRAPPER"),
            ("DROP FOREIGN DATA WRAPPER w CASCADE", "other | w | drop | DROP FOREIGN DATA WRAPPER"),
            ("CREATE PUBLICATION pub FOR ALL TABLES", "other | pub | create | CREATE PUBLICATION"),
            ("ALTER PUBLICATION pub ADD TABLE t", "other | pub | alter | ALTER PUBLICATION"),
            ("CREATE STATISTICS IF NOT EXISTS st ON a, b FROM t", "other | st | create | CREATE STATISTICS"),
            ("CREATE STATISTICS ON a, b FROM t", "other |  | create | CREATE STATISTICS"),
            ("ALTER STATISTICS st RENAME TO x", "other | st | rename | ALTER STATISTICS"),
            (
                "CREATE DEFAULT CONVERSION c FOR 'LATIN1' TO 'UTF8' FROM f",
                "other | c | create | CREATE CONVERSION",
            ),
            (
                "CREATE OR REPLACE TRUSTED PROCEDURAL LANGUAGE pl HANDLER h",
                "other | pl | create | CREATE LANGUAGE",
            ),
            ("CREATE LANGUAGE pl", "other | pl | create | CREATE LANGUAGE"),
            ("DROP PROCEDURAL LANGUAGE pl", "other | pl | drop | DROP LANGUAGE"),
            ("CREATE ACCESS METHOD am TYPE TABLE HANDLER h", "other | am | create | CREATE ACCESS METHOD"),
            ("DROP ACCESS METHOD am", "other | am | drop | DROP ACCESS METHOD"),
            (
                "CREATE OR REPLACE TRANSFORM FOR hstore LANGUAGE plpython3u (FROM SQL WITH FUNCTION f(internal))",
                "other | for hstore language plpython3u | create | CREATE TRANSFORM",
            ),
            (
                "DROP TRANSFORM IF EXISTS FOR hstore LANGUAGE plpython3u CASCADE",
                "other | for hstore language plpython3u | drop | DROP TRANSFORM",
            ),
            (
                "IMPORT FOREIGN SCHEMA remote LIMIT TO (a, b) FROM SERVER s INTO local",
                "other | local | create | IMPORT FOREIGN SCHEMA",
            ),
            ("DROP OWNED BY a, b CASCADE", "other | owned by a, b | drop | DROP OWNED"),
            ("REASSIGN OWNED BY a TO b", "other | owned by a | alter | REASSIGN OWNED"),
        ]);
    }

    #[test]
    fn not_ddl_statements() {
        not_ddl(&[
            "SELECT 1",
            "select * from t where a = $1",
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "MERGE INTO t USING s ON true WHEN MATCHED THEN DO NOTHING",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "VALUES (1)",
            "TABLE t",
            "TRUNCATE t",
            "VACUUM (ANALYZE) t",
            "ANALYZE t",
            "REINDEX INDEX CONCURRENTLY i",
            "CLUSTER t USING i",
            "REFRESH MATERIALIZED VIEW CONCURRENTLY mv",
            "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
            "COPY t FROM STDIN",
            "BEGIN",
            "START TRANSACTION",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT s",
            "RELEASE SAVEPOINT s",
            "PREPARE TRANSACTION 'x'",
            "COMMIT PREPARED 'x'",
            "SET search_path = s",
            "RESET ALL",
            "SHOW search_path",
            "DO $$ BEGIN CREATE TABLE t (a int); END $$",
            "CALL p()",
            "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
            "EXPLAIN SELECT * INTO t FROM s",
            "LISTEN c",
            "NOTIFY c, 'create table'",
            "DISCARD ALL",
            "DECLARE c CURSOR FOR SELECT 1",
            "FETCH 1 FROM c",
            "CLOSE c",
            "PREPARE p AS SELECT 1",
            "EXECUTE p",
            "DEALLOCATE p",
            "CREATE DATABASE d",
            "ALTER DATABASE d SET work_mem = '1MB'",
            "DROP DATABASE IF EXISTS d",
            "CREATE ROLE r LOGIN",
            "ALTER ROLE r PASSWORD 'x'",
            "DROP ROLE r",
            "CREATE USER u",
            "ALTER USER u PASSWORD 'secret'",
            "DROP USER u",
            "CREATE GROUP g",
            "DROP GROUP g",
            "CREATE TABLESPACE ts LOCATION '/x'",
            "ALTER TABLESPACE ts RENAME TO u",
            "DROP TABLESPACE ts",
            "ALTER SYSTEM SET work_mem = '1MB'",
            "CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p",
            "ALTER SUBSCRIPTION s DISABLE",
            "DROP SUBSCRIPTION s",
            "CREATE USER MAPPING FOR u SERVER s OPTIONS (password 'x')",
            "ALTER USER MAPPING FOR u SERVER s OPTIONS (SET password 'y')",
            "DROP USER MAPPING FOR u SERVER s",
            "ALTER LARGE OBJECT 1 OWNER TO bob",
            "SECURITY LABEL ON TABLE t IS 'x'",
            "CHECKPOINT",
            "LOAD 'x'",
            "CREATE",
            "ALTER",
            "DROP",
            "CREATE SOMETHING new",
            "IMPORT x",
            "REASSIGN x",
            "(VALUES (1))",
            "",
            "   ",
            "/* create table t (a int) */ SELECT 1",
            "'create table'",
            "$$create$$",
            "\"create\" table t",
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn comments_quoting_and_case() {
        cases(&[
            (
                "/* c */ -- x\n cReAtE /* y */ TaBlE -- z\n \"MiXed\" (a int)",
                "table | MiXed | create | CREATE TABLE",
            ),
            ("create table \"we\"\"ird\".\"a.b\" (a int)", "table | we\"ird.a.b | create | CREATE TABLE"),
            ("CREATE TABLE U&\"d\\0061t\" (a int)", "table | d\\0061t | create | CREATE TABLE"),
            (
                "CREATE FUNCTION f(a text DEFAULT 'x;y', b text DEFAULT $q$z$q$) RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql",
                "function | f(a text default 'x;y', b text default $q$z$q$) | create | CREATE FUNCTION",
            ),
            ("CREATE TABLE t (a text DEFAULT 'AS') ", "table | t | create | CREATE TABLE"),
            ("CREATE TABLE t (a int);", "table | t | create | CREATE TABLE"),
        ]);
    }

    #[test]
    fn non_utf8_identities_are_lossy() {
        let d = classify(b"CREATE TABLE caf\xe9 (a int)").unwrap();
        assert_eq!(d.identity, "caf\u{fffd}");
        assert_eq!(d.tag, "CREATE TABLE");
    }

    #[test]
    fn may_contain_ddl_screens_query_strings() {
        assert!(!may_contain_ddl(b"SELECT 1"));
        assert!(!may_contain_ddl(b"select * from t where a = $1"));
        assert!(!may_contain_ddl(
            b"INSERT INTO t VALUES (1); UPDATE t SET a = 2"
        ));
        assert!(!may_contain_ddl(b"SELECT 'create table x'"));
        assert!(!may_contain_ddl(b"SELECT 1 /* drop table t */"));
        assert!(!may_contain_ddl(b"BEGIN; SELECT 1; COMMIT"));
        assert!(may_contain_ddl(b"SELECT 1; CREATE TABLE t (a int)"));
        assert!(may_contain_ddl(b"select * into t from s"));
        assert!(may_contain_ddl(b"BEGIN; GRANT SELECT ON t TO bob; COMMIT"));
        assert!(may_contain_ddl(b"  /* x */ DROP TABLE t"));
        // Words glued to other tokens.
        assert!(may_contain_ddl(b"select 1into t"));
        assert!(may_contain_ddl(b"select $$x$$into t"));
        assert!(may_contain_ddl(b"select 'x'into t from s"));
        assert!(classify(b"select $$x$$into t").is_some());
        assert!(!may_contain_ddl(
            b"select intox, dropped, created_at from t"
        ));
        // Temporary objects still count: the caller filters them.
        assert!(may_contain_ddl(b"CREATE TEMP TABLE t (a int)"));
    }

    // --- sqlparser as a second opinion ---

    /// Normalises a sqlparser name as PostgreSQL does.
    fn sp_name(name: &sqlparser::ast::ObjectName) -> String {
        name.0
            .iter()
            .map(|part| match part.as_ident() {
                Some(id) if id.quote_style.is_some() => id.value.clone(),
                Some(id) => id.value.to_lowercase(),
                None => part.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The object names sqlparser sees, for the statement kinds where its
    /// AST names the object the way `Ddl::identity` does.
    fn sqlparser_identity(sql: &str) -> Option<String> {
        use sqlparser::ast::Statement as S;
        use sqlparser::dialect::PostgreSqlDialect;
        let mut stmts = sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
        if stmts.len() != 1 {
            return None;
        }
        Some(match stmts.remove(0) {
            S::CreateTable(ct) => sp_name(&ct.name),
            S::CreateView(v) => sp_name(&v.name),
            S::CreateIndex(ci) => match &ci.name {
                Some(n) => sp_name(n),
                None => format!("on {}", sp_name(&ci.table_name)),
            },
            S::AlterTable(at) => sp_name(&at.name),
            S::Drop { names, .. } => names.iter().map(sp_name).collect::<Vec<_>>().join(", "),
            S::CreateSequence { name, .. } => sp_name(&name),
            S::CreateType { name, .. } => sp_name(&name),
            S::Comment { object_name, .. } => sp_name(&object_name),
            _ => return None,
        })
    }

    #[test]
    fn sqlparser_agrees_on_names() {
        let corpus = [
            "CREATE TABLE t (a int)",
            r#"CREATE TABLE "Sales".Orders (id int)"#,
            "create unlogged table if not exists public.t (a int)",
            "CREATE TABLE IF NOT EXISTS S.T (a int, b text DEFAULT 'x;y')",
            "CREATE TABLE t AS SELECT * FROM s",
            "CREATE TEMP TABLE tt (a int)",
            "CREATE VIEW v AS SELECT 1",
            "CREATE OR REPLACE VIEW S.V AS SELECT 1",
            "CREATE MATERIALIZED VIEW mv AS SELECT 1",
            "CREATE INDEX i ON t (a)",
            "CREATE UNIQUE INDEX IF NOT EXISTS Idx ON s.t (a)",
            "CREATE INDEX ON public.t (a)",
            "CREATE INDEX CONCURRENTLY i ON t (a)",
            "ALTER TABLE t ADD COLUMN b text",
            "ALTER TABLE IF EXISTS ONLY \"T\" ADD COLUMN c int",
            "ALTER TABLE t RENAME TO u",
            "ALTER TABLE t RENAME COLUMN a TO b",
            "DROP TABLE IF EXISTS a, s.b CASCADE",
            "DROP VIEW v",
            "DROP INDEX i, j",
            "DROP SCHEMA s CASCADE",
            "DROP SEQUENCE s.q",
            "DROP TYPE mood",
            "CREATE SEQUENCE s.seq START WITH 5",
            "CREATE TYPE mood AS ENUM ('sad', 'ok')",
            "CREATE TYPE comp AS (x int, y text)",
            "COMMENT ON TABLE s.t IS 'x'",
            "COMMENT ON COLUMN s.t.c IS 'x'",
        ];
        let mut compared = 0;
        for sql in corpus {
            let ours = classify(sql.as_bytes()).expect(sql).identity;
            if let Some(theirs) = sqlparser_identity(sql) {
                assert_eq!(ours, theirs, "{sql}");
                compared += 1;
            }
        }
        // Most of the corpus parses; a silent total failure would hide
        // disagreements.
        assert!(compared >= 20, "only {compared} compared");
    }

    // --- property tests ---

    fn keyword_soup() -> impl Strategy<Value = String> {
        let word = prop::sample::select(vec![
            "create",
            "alter",
            "drop",
            "comment",
            "on",
            "grant",
            "revoke",
            "select",
            "with",
            "into",
            "table",
            "index",
            "view",
            "materialized",
            "function",
            "trigger",
            "rule",
            "policy",
            "to",
            "from",
            "as",
            "concurrently",
            "if",
            "not",
            "exists",
            "temp",
            "all",
            "in",
            "schema",
            "(",
            ")",
            ",",
            ".",
            ";",
            "'x'",
            "\"Q\"",
            "$$b$$",
            "a",
            "b",
            "*",
            "strict",
            "rename",
            "import",
            "foreign",
            "operator",
            "class",
            "using",
            "default",
            "privileges",
            "owned",
            "by",
            "reassign",
            "cast",
            "transform",
            "for",
            "language",
            "/*",
            "*/",
            "--",
            "\n",
        ]);
        let sep = prop::sample::select(vec![" ", "", "\n", "1", "'s'", "$$d$$", "\"q\""]);
        prop::collection::vec((word, sep), 0..24)
            .prop_map(|v| v.into_iter().flat_map(|(w, s)| [w, s]).collect::<String>())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn classify_never_panics(stmt in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = classify(&stmt);
            let _ = may_contain_ddl(&stmt);
        }

        #[test]
        fn keyword_soup_is_consistent(sql in keyword_soup()) {
            let ranges = split_statements(sql.as_bytes());
            let any = ranges.iter().any(|r| classify(&sql.as_bytes()[r.clone()]).is_some());
            // No false negatives.
            if any {
                prop_assert!(may_contain_ddl(sql.as_bytes()), "{:?}", sql);
            }
            prop_assert_eq!(may_contain_ddl(sql.as_bytes()), any, "{:?}", sql);
        }
    }
}

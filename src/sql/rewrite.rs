//! Schema-name rewriting for schema branches (no I/O).
//!
//! A session on a branch sees each versioned logical schema (`public`) as a
//! physical schema named `<logical>@<branch>` (`public@feature`), always
//! written as a quoted identifier. [`rewrite_schemas`] maps the names in a
//! Query string and changes nothing else: every byte outside the
//! replacements is copied as it came, so comments, data literals and the
//! client encoding (the input may be LATIN1) are untouched.
//!
//! What is rewritten, lexically, over the tokens of [`Lexer`]:
//!
//! 1. **Qualified names.** An identifier naming a logical schema, followed
//!    by a `.` and not preceded by one: `public.t`, `"public"."t"`,
//!    `PUBLIC.f(1)`, `public.*`, `x::public.mytype`. `t.public` and
//!    `a.public.b` stay. Unquoted words match case-insensitively (the server
//!    folds them to lower case), quoted ones exactly.
//! 2. **Literals naming objects.** A string literal whose content starts
//!    with `<schema>.` (read as the server reads such names: surrounding
//!    whitespace, `"quoted"` or case-folded) when it is cast to a `reg*`
//!    type (`'public.t'::regclass`, `CAST(... AS regclass)`,
//!    `regclass 'public.t'`) or is the first argument of a function taking
//!    an object name (`nextval('public.s')`). Only the schema part of the
//!    literal changes. Every other literal is data and is never touched.
//! 3. **search_path.** The items of `SET [SESSION|LOCAL] search_path TO|=`
//!    wherever it appears (also `CREATE FUNCTION ... SET`), except after
//!    `UPDATE` in the same statement, where `SET` assigns a column, and in
//!    `ALTER ROLE/USER/DATABASE ... SET` (settings every branch shares,
//!    which each branch session maps for itself); and the list in
//!    `set_config('search_path', '<list>', ...)`.
//! 5. **Catalog introspection.** A plain literal equal to a logical schema
//!    name compared with a column that holds schema names (`table_schema =
//!    'public'`, `n.nspname IN ('public', ...)`, `schemaname = 'public'`:
//!    a column name ending in `schema`, `schemaname`, `schema_name` or
//!    `nspname`) becomes the physical name, so that ORMs and tools reading
//!    `information_schema` or `pg_catalog` see the branch's objects. A bind
//!    parameter (`table_schema = $1`) cannot be seen and is left alone.
//! 4. **Routine bodies.** In `DO` and `CREATE [OR REPLACE] FUNCTION |
//!    PROCEDURE` in `sql` or `plpgsql`, rules 1-3 apply inside the
//!    dollar-quoted body. Other dollar-quoted strings are data.
//!
//! Two things the server does that shape rules 2 and 3: a literal item in
//! `SET search_path` names exactly one schema, its content taken verbatim
//! (the server quotes it with `quote_identifier`: `SET search_path =
//! 'public, x'` sets the single schema `"public, x"`, and `'"p"'` names a
//! schema whose name holds quotes), so such an item is matched against the
//! logical name exactly and becomes `'public@feature'`, which the server
//! then quotes. `set_config` takes its value as a list, parsed like
//! `regclass` input, so its elements are matched like rule 2's prefixes and
//! become `"public@feature"`.
//!
//! Literals with backslash escapes before the part to replace (`E'\x70...'`)
//! or a `UESCAPE` clause are left alone, and so is anything not written in
//! one of the shapes above (dynamic SQL built from strings, `EXECUTE
//! format(...)`).
//!
//! The common case must be cheap: when no logical name occurs anywhere in
//! the text (ASCII case-insensitively), [`rewrite_schemas`] returns `None`
//! without lexing or allocating.

use std::borrow::Cow;
use std::ops::Range;

use super::lexer::{Lexer, Token, TokenKind};

/// Types whose input is an object name that may be schema-qualified.
const REG_TYPES: [&str; 9] = [
    "regclass",
    "regproc",
    "regprocedure",
    "regtype",
    "regoper",
    "regoperator",
    "regconfig",
    "regdictionary",
    "regcollation",
];

/// Functions whose first argument is a (possibly qualified) object name.
const NAME_FUNCTIONS: [&str; 12] = [
    "nextval",
    "currval",
    "setval",
    "pg_get_serial_sequence",
    "to_regclass",
    "to_regproc",
    "to_regprocedure",
    "to_regtype",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_table_size",
    "pg_indexes_size",
];

/// One versioned schema.
#[derive(Debug, Clone)]
struct Entry {
    logical: String,
    physical: String,
    /// `physical` as a quoted identifier.
    quoted: String,
    /// Whether an unquoted word can name `logical`: a folded word has no
    /// ASCII upper case.
    foldable: bool,
    /// The part of `logical` the pre-check looks for: its longest run free
    /// of bytes that quoting may escape (`"`, `'`, `\`).
    needle: Range<usize>,
}

/// Logical → physical schema names (physical given unquoted, e.g.
/// `public@feature`). Logical names are given as PostgreSQL stores them
/// (`public`, or `Sales` for a schema created as `"Sales"`).
#[derive(Debug, Clone, Default)]
pub struct SchemaMap {
    entries: Vec<Entry>,
}

impl SchemaMap {
    /// The map; for a logical name given twice the first pair wins.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        let mut entries: Vec<Entry> = Vec::with_capacity(pairs.len());
        for (logical, physical) in pairs {
            if entries.iter().any(|e| e.logical == logical) {
                continue;
            }
            let quoted = crate::branch::quote_ident(&physical);
            entries.push(Entry {
                foldable: !logical.bytes().any(|b| b.is_ascii_uppercase()),
                needle: longest_plain_run(logical.as_bytes()),
                logical,
                physical,
                quoted,
            });
        }
        Self { entries }
    }

    /// The physical name of `logical`, unquoted.
    pub fn physical(&self, logical: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.logical == logical)
            .map(|e| e.physical.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether some logical name may occur in `sql`: false means no rule
    /// can apply.
    fn mentioned_in(&self, sql: &[u8]) -> bool {
        self.entries.iter().any(|e| {
            super::contains_ignore_ascii_case(sql, &e.logical.as_bytes()[e.needle.clone()])
        })
    }

    /// The entry whose logical name is exactly `name`.
    fn exact(&self, name: &[u8]) -> Option<&Entry> {
        self.entries.iter().find(|e| e.logical.as_bytes() == name)
    }

    /// The entry an unquoted name folds to.
    fn folded(&self, word: &[u8]) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.foldable && e.logical.as_bytes().eq_ignore_ascii_case(word))
    }

    /// The entry an identifier token names.
    fn token(&self, t: &Token<'_>) -> Option<&Entry> {
        match t.kind {
            TokenKind::Word => self.folded(t.text),
            TokenKind::QuotedIdent => self.exact(&t.identifier()?),
            _ => None,
        }
    }

    /// The entry a name inside a literal names: `"quoted"` exactly,
    /// otherwise folded.
    fn list_name(&self, raw: &[u8]) -> Option<&Entry> {
        match raw.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")) {
            Some(inner) => self.exact(&unescape_quotes(inner)),
            None => self.folded(raw),
        }
    }
}

/// The result of [`rewrite_schemas`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub sql: Vec<u8>,
    /// Byte edits in the ORIGINAL text, in order: (at, removed_len,
    /// inserted_bytes_len).
    pub edits: Vec<(usize, usize, usize)>,
}

/// Maps logical schema names in `sql` to their physical names (see the
/// module documentation for the rules). `None` when nothing needed
/// changing.
///
/// Never panics, whatever the bytes.
pub fn rewrite_schemas(
    sql: &[u8],
    map: &SchemaMap,
    standard_conforming_strings: bool,
) -> Option<Rewritten> {
    if !map.mentioned_in(sql) {
        return None;
    }
    let mut rw = Rewriter {
        map,
        scs: standard_conforming_strings,
        src: sql,
        splice: Splice::new(sql),
    };
    // Statements are cut at `;` outside parentheses. Unlike the server,
    // this also cuts inside `BEGIN ATOMIC` bodies, which only makes each
    // body statement its own unit: they hold no dollar-quoted bodies.
    let mut stmt = Vec::new();
    let mut body = Vec::new();
    let mut depth = 0u32;
    for t in Lexer::with_standard_conforming_strings(sql, standard_conforming_strings) {
        if t.is_punct(b'(') {
            depth += 1;
        } else if t.is_punct(b')') {
            depth = depth.saturating_sub(1);
        } else if t.is_punct(b';') && depth == 0 {
            rw.statement(&stmt, &mut body);
            stmt.clear();
            continue;
        }
        stmt.push(t);
    }
    rw.statement(&stmt, &mut body);
    rw.splice.finish()
}

/// Which statements have routine bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// `DO`: its dollar-quoted string is the code.
    Do,
    /// `CREATE [OR REPLACE] FUNCTION|PROCEDURE`: the dollar-quoted string
    /// after `AS` is the body.
    Routine,
}

/// How the body of a literal escapes bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// `'...'` with standard_conforming_strings on, `N'...'`: `''`.
    Standard,
    /// `E'...'`, or `'...'` with standard_conforming_strings off: `''` and
    /// backslashes.
    Backslash,
    /// `U&'...'`: `''`, and a backslash starts a Unicode escape.
    Unicode,
    /// `$tag$...$tag$`: nothing, but the body must not hold a `$`.
    Dollar,
}

impl Quoting {
    /// Whether `b` is written escaped in this kind of literal.
    fn special(self, b: u8) -> bool {
        match self {
            Quoting::Standard => b == b'\'',
            Quoting::Backslash | Quoting::Unicode => b == b'\'' || b == b'\\',
            Quoting::Dollar => false,
        }
    }

    /// Whether `bytes` can be written into such a literal.
    fn can_hold(self, bytes: &[u8]) -> bool {
        self != Quoting::Dollar || !bytes.contains(&b'$')
    }

    /// Writes `bytes` escaped for this kind of literal.
    fn push(self, out: &mut Vec<u8>, bytes: &[u8]) {
        for &b in bytes {
            if self.special(b) {
                out.push(b);
            }
            out.push(b);
        }
    }
}

/// The body of a string literal token.
#[derive(Debug, Clone, Copy)]
struct Literal<'a> {
    /// The raw bytes between the opening quote (or delimiter) and the
    /// closing one, escapes as written (to the end of the token when
    /// unterminated; continuation segments included).
    body: &'a [u8],
    /// Offset of `body` in the original text.
    at: usize,
    quoting: Quoting,
    /// Whether `body` is the literal's whole content as written: closed,
    /// and with no byte that would need unescaping.
    plain: bool,
}

/// A text being rewritten by replacing ranges of it, in order: the output
/// so far and the edits made (shared by the rewriters of `sql`).
pub(crate) struct Splice<'s> {
    src: &'s [u8],
    out: Vec<u8>,
    edits: Vec<(usize, usize, usize)>,
    /// Bytes of `src` already copied to `out`.
    copied: usize,
}

impl<'s> Splice<'s> {
    pub(crate) fn new(src: &'s [u8]) -> Self {
        Splice {
            src,
            out: Vec::new(),
            edits: Vec::new(),
            copied: 0,
        }
    }

    /// Bytes of the original text already copied or replaced.
    pub(crate) fn copied(&self) -> usize {
        self.copied
    }

    /// Replaces `range` of the original text with what `write` writes.
    /// Ranges come in order and never overlap.
    pub(crate) fn replace_with(&mut self, range: Range<usize>, write: impl FnOnce(&mut Vec<u8>)) {
        debug_assert!(self.copied <= range.start && range.end <= self.src.len());
        if self.edits.is_empty() {
            self.out.reserve(self.src.len() + 128);
        }
        self.out
            .extend_from_slice(&self.src[self.copied..range.start]);
        let before = self.out.len();
        write(&mut self.out);
        self.edits
            .push((range.start, range.len(), self.out.len() - before));
        self.copied = range.end;
    }

    /// The rewritten text; `None` when nothing was replaced.
    pub(crate) fn finish(mut self) -> Option<Rewritten> {
        if self.edits.is_empty() {
            return None;
        }
        self.out.extend_from_slice(&self.src[self.copied..]);
        Some(Rewritten {
            sql: self.out,
            edits: self.edits,
        })
    }
}

struct Rewriter<'m, 's> {
    map: &'m SchemaMap,
    scs: bool,
    src: &'s [u8],
    splice: Splice<'s>,
}

impl<'m, 's> Rewriter<'m, 's> {
    /// One statement of the outer text; `body` is scratch space for the
    /// tokens of a routine body.
    fn statement(&mut self, toks: &[Token<'s>], body: &mut Vec<Token<'s>>) {
        let head = head(toks).filter(|_| runs_sql(toks));
        self.scan(toks, 0, head.map(|h| (h, body)));
    }

    /// Applies rules 1-3 to `toks` (whose offsets are relative to `base`),
    /// and rule 4 when `bodies` says which statement this is.
    fn scan(
        &mut self,
        toks: &[Token<'s>],
        base: usize,
        mut bodies: Option<(Head, &mut Vec<Token<'s>>)>,
    ) {
        // Inside an UPDATE (or `ON CONFLICT DO UPDATE`, MERGE's `UPDATE`),
        // `SET search_path = ...` assigns a column.
        let mut in_update = false;
        // ALTER ROLE / USER / DATABASE ... SET search_path: a setting every
        // branch shares (main sessions of that role or database too); it
        // names the schemas as main does, and each branch session maps it.
        let shared_setting = toks.first().is_some_and(|t| t.is_word("alter"))
            && toks
                .get(1)
                .is_some_and(|t| t.is_word("role") || t.is_word("user") || t.is_word("database"));
        let mut i = 0;
        while let Some(t) = toks.get(i) {
            match t.kind {
                TokenKind::Punct if t.is_punct(b';') => in_update = false,
                TokenKind::Word | TokenKind::QuotedIdent => {
                    if t.is_word("update") {
                        in_update = true;
                    } else if !in_update && !shared_setting && t.is_word("set") {
                        if let Some(first) = search_path_value(toks, i) {
                            i = self.search_path_items(toks, first, base);
                            continue;
                        }
                    }
                    self.qualified_name(toks, i, base);
                }
                TokenKind::String | TokenKind::DollarString => match &mut bodies {
                    Some((head, buf)) if is_body(*head, toks, i) => self.body(t, base, buf),
                    _ => self.literal(toks, i, base),
                },
                _ => {}
            }
            i += 1;
        }
    }

    /// Rule 4: rules 1-3 inside a routine body.
    fn body(&mut self, t: &Token<'s>, base: usize, buf: &mut Vec<Token<'s>>) {
        let Some(range) = dollar_body(t.text) else {
            return;
        };
        let at = base + t.start + range.start;
        buf.clear();
        buf.extend(Lexer::with_standard_conforming_strings(
            &t.text[range],
            self.scs,
        ));
        self.scan(buf, at, None);
    }

    /// Rule 1: `toks[i]` as the schema of a qualified name.
    fn qualified_name(&mut self, toks: &[Token<'s>], i: usize, base: usize) {
        let t = &toks[i];
        if !toks.get(i + 1).is_some_and(|n| n.is_punct(b'.'))
            || (i > 0 && toks[i - 1].is_punct(b'.'))
        {
            return;
        }
        let map = self.map;
        if let Some(e) = map.token(t) {
            self.replace_identifier(t, base, e);
        }
    }

    /// Replaces the identifier `t` with the quoted physical name.
    fn replace_identifier(&mut self, t: &Token<'s>, base: usize, e: &Entry) {
        let at = base + t.start;
        // `u&public` is `u & public`, but `u&"..."` would be one quoted
        // identifier.
        let space = t.kind == TokenKind::Word && at > 0 && self.src[at - 1] == b'&';
        self.splice.replace_with(at..base + t.end(), |out| {
            if space {
                out.push(b' ');
            }
            out.extend_from_slice(e.quoted.as_bytes())
        });
    }

    /// Rule 3: the items of a `SET search_path` from `toks[j]`; returns
    /// the index of the first token after them.
    fn search_path_items(&mut self, toks: &[Token<'s>], mut j: usize, base: usize) -> usize {
        let map = self.map;
        while let Some(t) = toks.get(j) {
            match t.kind {
                TokenKind::Word | TokenKind::QuotedIdent => {
                    if let Some(e) = map.token(t).filter(|_| !t.is_word("default")) {
                        self.replace_identifier(t, base, e);
                    }
                }
                TokenKind::String | TokenKind::DollarString => {
                    // The whole content is one schema name, verbatim.
                    if let Some(lit) = self.literal_at(toks, j, base) {
                        let e = map
                            .exact(lit.body)
                            .filter(|e| lit.plain && lit.quoting.can_hold(e.physical.as_bytes()));
                        if let Some(e) = e {
                            let span = lit.at..lit.at + lit.body.len();
                            self.splice.replace_with(span, |out| {
                                lit.quoting.push(out, e.physical.as_bytes())
                            });
                        }
                    }
                }
                _ => return j,
            }
            j += 1;
            match toks.get(j) {
                Some(c) if c.is_punct(b',') => j += 1,
                _ => return j,
            }
        }
        j
    }

    /// Rules 2, 3 and 5 for a literal outside a routine body's position.
    fn literal(&mut self, toks: &[Token<'s>], i: usize, base: usize) {
        if names_object(toks, i) {
            self.object_literal(toks, i, base);
        } else if self.is_search_path_config(toks, i, base) {
            self.path_list_literal(toks, i, base);
        } else if compares_schema_column(toks, i) {
            self.schema_name_literal(toks, i, base);
        }
    }

    /// Rule 5: `table_schema = 'public'` (catalog introspection) names the
    /// branch's schema.
    fn schema_name_literal(&mut self, toks: &[Token<'s>], i: usize, base: usize) {
        let Some(lit) = self.literal_at(toks, i, base) else {
            return;
        };
        if !lit.plain {
            return;
        }
        let map = self.map;
        let Some(e) = map.exact(lit.body) else {
            return;
        };
        if lit.quoting.can_hold(e.physical.as_bytes()) {
            self.splice
                .replace_with(lit.at..lit.at + lit.body.len(), |out| {
                    lit.quoting.push(out, e.physical.as_bytes())
                });
        }
    }

    /// Rule 2: the schema part of `'<schema>.rest'`.
    fn object_literal(&mut self, toks: &[Token<'s>], i: usize, base: usize) {
        let Some(lit) = self.literal_at(toks, i, base) else {
            return;
        };
        let p = skip_list_space(lit.body, 0);
        let Some(end) = list_name_end(lit.body, p, b'.', lit.quoting) else {
            return;
        };
        if lit.body.get(skip_list_space(lit.body, end)) != Some(&b'.') {
            return;
        }
        let map = self.map;
        let Some(e) = map.list_name(&lit.body[p..end]) else {
            return;
        };
        if lit.quoting.can_hold(e.quoted.as_bytes()) {
            self.splice.replace_with(lit.at + p..lit.at + end, |out| {
                lit.quoting.push(out, e.quoted.as_bytes())
            });
        }
    }

    /// Whether `toks[i]` is the value in `set_config('search_path', ...)`.
    fn is_search_path_config(&self, toks: &[Token<'s>], i: usize, base: usize) -> bool {
        i >= 4
            && toks[i - 1].is_punct(b',')
            && toks[i - 3].is_punct(b'(')
            && is_function(toks, i - 4, &["set_config"])
            && self
                .literal_at(toks, i - 2, base)
                .is_some_and(|l| l.plain && l.body.eq_ignore_ascii_case(b"search_path"))
    }

    /// Rule 3 for `set_config`: each element of the list.
    fn path_list_literal(&mut self, toks: &[Token<'s>], i: usize, base: usize) {
        let Some(lit) = self.literal_at(toks, i, base) else {
            return;
        };
        // Validate the whole list before the first edit.
        if !lit.plain || !for_each_list_name(lit.body, |_| {}) {
            return;
        }
        let map = self.map;
        for_each_list_name(lit.body, |name| {
            if let Some(e) = map.list_name(&lit.body[name.clone()]) {
                if lit.quoting.can_hold(e.quoted.as_bytes()) {
                    self.splice
                        .replace_with(lit.at + name.start..lit.at + name.end, |out| {
                            lit.quoting.push(out, e.quoted.as_bytes())
                        });
                }
            }
        });
    }

    /// The body of the string literal `toks[i]`; `None` for bit strings,
    /// `U&'...' UESCAPE` and other tokens.
    fn literal_at(&self, toks: &[Token<'s>], i: usize, base: usize) -> Option<Literal<'s>> {
        let t = toks.get(i)?;
        let text = t.text;
        let (range, quoting, closed) = match t.kind {
            TokenKind::String => {
                let plain = if self.scs {
                    Quoting::Standard
                } else {
                    Quoting::Backslash
                };
                let (open, quoting) = match text.first()? {
                    b'\'' => (1, plain),
                    b'e' | b'E' => (2, Quoting::Backslash),
                    b'n' | b'N' => (2, plain),
                    b'u' | b'U' => {
                        if toks.get(i + 1).is_some_and(|n| n.is_word("uescape")) {
                            return None;
                        }
                        (3, Quoting::Unicode)
                    }
                    _ => return None,
                };
                let closed = text.len() > open && text.ends_with(b"'");
                let end = if closed { text.len() - 1 } else { text.len() };
                (open.min(end)..end, quoting, closed)
            }
            TokenKind::DollarString => {
                let range = dollar_body(text)?;
                let closed = range.end < text.len();
                (range, Quoting::Dollar, closed)
            }
            _ => return None,
        };
        let body = &text[range.clone()];
        Some(Literal {
            body,
            at: base + t.start + range.start,
            quoting,
            plain: closed && !body.iter().any(|&b| quoting.special(b)),
        })
    }
}

/// Whether the literal `toks[i]` is compared with a column that holds a
/// schema name: `<col> = '...'` or `<col> IN ('...', ...)`, `<col>` (maybe
/// qualified) ending in `schema`, `schemaname`, `schema_name` or `nspname`
/// (information_schema, pg_tables, pg_namespace...).
fn compares_schema_column(toks: &[Token<'_>], i: usize) -> bool {
    let column = if i >= 2 && toks[i - 1].is_punct(b'=') {
        Some(i - 2)
    } else {
        let mut k = i;
        while k >= 2 && toks[k - 1].is_punct(b',') && toks[k - 2].kind == TokenKind::String {
            k -= 2;
        }
        (k >= 3 && toks[k - 1].is_punct(b'(') && toks[k - 2].is_word("in")).then(|| k - 3)
    };
    column.and_then(|c| toks.get(c)).is_some_and(|t| {
        t.kind == TokenKind::Word && {
            let w = t.text;
            [
                b"schema".as_slice(),
                b"schemaname",
                b"schema_name",
                b"nspname",
            ]
            .iter()
            .any(|s| w.len() >= s.len() && w[w.len() - s.len()..].eq_ignore_ascii_case(s))
        }
    })
}

/// Which routine statement `toks` is, if any.
fn head(toks: &[Token<'_>]) -> Option<Head> {
    let first = toks.first()?;
    if first.is_word("do") {
        return Some(Head::Do);
    }
    if !first.is_word("create") {
        return None;
    }
    let mut k = 1;
    if toks.get(1).is_some_and(|t| t.is_word("or"))
        && toks.get(2).is_some_and(|t| t.is_word("replace"))
    {
        k = 3;
    }
    toks.get(k)
        .is_some_and(|t| t.is_word("function") || t.is_word("procedure"))
        .then_some(Head::Routine)
}

/// Whether the routine's language, when given, is one whose body is SQL
/// text (`sql`, `plpgsql`): other languages' code is left alone.
fn runs_sql(toks: &[Token<'_>]) -> bool {
    let mut depth = 0u32;
    for (k, t) in toks.iter().enumerate() {
        if t.is_punct(b'(') {
            depth += 1;
        } else if t.is_punct(b')') {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && t.is_word("language") {
            let Some(l) = toks.get(k + 1) else {
                return true;
            };
            let sql_like = |name: &[u8]| {
                name.eq_ignore_ascii_case(b"sql") || name.eq_ignore_ascii_case(b"plpgsql")
            };
            return match l.kind {
                TokenKind::Word | TokenKind::QuotedIdent => {
                    l.identifier().is_some_and(|n| sql_like(&n))
                }
                TokenKind::String => l
                    .text
                    .strip_prefix(b"'")
                    .and_then(|s| s.strip_suffix(b"'"))
                    .is_some_and(sql_like),
                _ => false,
            };
        }
    }
    true
}

/// Whether the dollar-quoted `toks[i]` is the code of a routine.
fn is_body(head: Head, toks: &[Token<'_>], i: usize) -> bool {
    toks[i].kind == TokenKind::DollarString
        && match head {
            Head::Do => true,
            Head::Routine => i > 0 && toks[i - 1].is_word("as"),
        }
}

/// The body of a dollar-quoted string (to the end when unterminated).
fn dollar_body(text: &[u8]) -> Option<Range<usize>> {
    let d = text.get(1..)?.iter().position(|&b| b == b'$')? + 2;
    let closed = text.len() >= 2 * d && text.ends_with(&text[..d]);
    Some(d..if closed { text.len() - d } else { text.len() })
}

/// Whether `t` is the identifier `lower` (given in lower case): a word
/// compared case-insensitively, a quoted identifier exactly.
fn names(t: Option<&Token<'_>>, lower: &str) -> bool {
    t.is_some_and(|t| match t.kind {
        TokenKind::Word => t.is_word(lower),
        TokenKind::QuotedIdent => t.identifier().as_deref() == Some(lower.as_bytes()),
        _ => false,
    })
}

/// Whether `toks[f]` names one of `functions`, unqualified or in
/// `pg_catalog`.
fn is_function(toks: &[Token<'_>], f: usize, functions: &[&str]) -> bool {
    if !functions.iter().any(|name| names(toks.get(f), name)) {
        return false;
    }
    f == 0
        || !toks[f - 1].is_punct(b'.')
        || (f >= 2
            && names(toks.get(f - 2), "pg_catalog")
            && (f == 2 || !toks[f - 3].is_punct(b'.')))
}

/// Whether `toks[k..]` starts with a `reg*` type name, possibly qualified
/// with `pg_catalog`.
fn reg_type_at(toks: &[Token<'_>], mut k: usize) -> bool {
    if names(toks.get(k), "pg_catalog") && toks.get(k + 1).is_some_and(|t| t.is_punct(b'.')) {
        k += 2;
    }
    REG_TYPES.iter().any(|r| names(toks.get(k), r))
}

/// Rule 2's contexts: whether the literal `toks[i]` is read as an object
/// name.
fn names_object(toks: &[Token<'_>], i: usize) -> bool {
    // 'x'::regclass
    if let (Some(a), Some(b)) = (toks.get(i + 1), toks.get(i + 2)) {
        if a.is_punct(b':')
            && b.is_punct(b':')
            && b.start == a.start + 1
            && reg_type_at(toks, i + 3)
        {
            return true;
        }
    }
    if i == 0 {
        return false;
    }
    let prev = &toks[i - 1];
    // regclass 'x'
    if prev.kind == TokenKind::Word && REG_TYPES.iter().any(|r| prev.is_word(r)) {
        return true;
    }
    if !prev.is_punct(b'(') || i < 2 {
        return false;
    }
    // CAST('x' AS regclass)
    (toks[i - 2].is_word("cast")
        && toks.get(i + 1).is_some_and(|t| t.is_word("as"))
        && reg_type_at(toks, i + 2))
        // nextval('x')
        || is_function(toks, i - 2, &NAME_FUNCTIONS)
}

/// `(SET [SESSION|LOCAL]) search_path TO|=` at `toks[i]` (the `SET`): the
/// index of the first item.
fn search_path_value(toks: &[Token<'_>], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if toks
        .get(j)
        .is_some_and(|t| t.is_word("session") || t.is_word("local"))
    {
        j += 1;
    }
    if !names(toks.get(j), "search_path") {
        return None;
    }
    let op = toks.get(j + 1)?;
    (op.is_word("to") || op.is_punct(b'=')).then_some(j + 2)
}

/// Whitespace as the server's `scanner_isspace`, which splits names in
/// `regclass` input and `search_path` lists.
fn is_list_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

fn skip_list_space(body: &[u8], mut p: usize) -> usize {
    while body.get(p).copied().is_some_and(is_list_space) {
        p += 1;
    }
    p
}

/// The end of the name starting at `body[p]`, read as the server's
/// `SplitIdentifierString` reads one: a `"quoted"` name through its closing
/// quote, or an unquoted one up to whitespace, `sep` or the end. `None`
/// for an empty or unterminated name, or one holding a byte the literal
/// escapes (its raw bytes would not be its content).
fn list_name_end(body: &[u8], p: usize, sep: u8, quoting: Quoting) -> Option<usize> {
    let mut k = p;
    if body.get(p) == Some(&b'"') {
        k += 1;
        loop {
            match *body.get(k)? {
                b'"' if body.get(k + 1) == Some(&b'"') => k += 2,
                b'"' => return (k > p + 1).then_some(k + 1),
                b if quoting.special(b) => return None,
                _ => k += 1,
            }
        }
    }
    while let Some(&b) = body.get(k) {
        if b == sep || is_list_space(b) {
            break;
        }
        if quoting.special(b) {
            return None;
        }
        k += 1;
    }
    (k > p).then_some(k)
}

/// Calls `f` with the range of each name in a comma-separated list (as
/// `search_path` is parsed); false when the list is malformed.
fn for_each_list_name(body: &[u8], mut f: impl FnMut(Range<usize>)) -> bool {
    let mut p = skip_list_space(body, 0);
    if p == body.len() {
        return true;
    }
    loop {
        let Some(end) = list_name_end(body, p, b',', Quoting::Standard) else {
            return false;
        };
        f(p..end);
        p = skip_list_space(body, end);
        match body.get(p) {
            None => return true,
            Some(b',') => p = skip_list_space(body, p + 1),
            Some(_) => return false,
        }
    }
}

/// The content of a quoted identifier: `""` unescaped.
fn unescape_quotes(inner: &[u8]) -> Cow<'_, [u8]> {
    if !inner.windows(2).any(|w| w == b"\"\"") {
        return Cow::Borrowed(inner);
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&b) = inner.get(i) {
        out.push(b);
        i += if b == b'"' && inner.get(i + 1) == Some(&b'"') {
            2
        } else {
            1
        };
    }
    Cow::Owned(out)
}

/// The longest run of `name` free of `"`, `'` and `\`.
fn longest_plain_run(name: &[u8]) -> Range<usize> {
    let mut best = 0..0;
    let mut start = 0;
    for (i, &b) in name.iter().chain([&b'"']).enumerate() {
        if matches!(b, b'"' | b'\'' | b'\\') {
            if i - start > best.len() {
                best = start..i;
            }
            start = i + 1;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn catalog_queries_compare_with_the_branch_schema() {
        for (sql, want) in [
            (
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public@feature'",
            ),
            (
                "select * from pg_namespace n where n.nspname in ('pg_catalog', 'public')",
                "select * from pg_namespace n where n.nspname in ('pg_catalog', 'public@feature')",
            ),
            (
                "SELECT * FROM pg_tables WHERE schemaname='public'",
                "SELECT * FROM pg_tables WHERE schemaname='public@feature'",
            ),
        ] {
            assert_eq!(rw(sql), want, "{sql}");
        }
        for sql in [
            "SELECT * FROM t WHERE name = 'public'",
            "SELECT * FROM information_schema.tables WHERE table_schema = 'Public'",
            "INSERT INTO t (schema) VALUES ('public')",
        ] {
            assert!(
                rewrite_schemas(sql.as_bytes(), &map(), true).is_none(),
                "{sql}"
            );
        }
    }

    #[test]
    fn role_and_database_settings_are_not_mapped() {
        for sql in [
            "ALTER ROLE app SET search_path = public",
            "ALTER USER app IN DATABASE d SET search_path TO \"$user\", public",
            "ALTER DATABASE d SET search_path = public",
        ] {
            assert!(
                rewrite_schemas(sql.as_bytes(), &map(), true).is_none(),
                "{sql}"
            );
        }
    }

    fn map() -> SchemaMap {
        SchemaMap::new(vec![
            ("public".into(), "public@feature".into()),
            ("app".into(), "app@feature".into()),
        ])
    }

    /// Checks that the edits are ordered, inside the input and reproduce
    /// the output from it.
    fn check_edits(input: &[u8], r: &Rewritten) {
        let mut rebuilt = Vec::new();
        let (mut cursor, mut out_pos) = (0, 0);
        for &(at, removed, inserted) in &r.edits {
            assert!(at >= cursor && at + removed <= input.len(), "{:?}", r.edits);
            rebuilt.extend_from_slice(&input[cursor..at]);
            out_pos += at - cursor;
            rebuilt.extend_from_slice(&r.sql[out_pos..out_pos + inserted]);
            out_pos += inserted;
            cursor = at + removed;
        }
        rebuilt.extend_from_slice(&input[cursor..]);
        assert_eq!(rebuilt, r.sql);
    }

    fn rewrite_with(sql: &str, map: &SchemaMap, scs: bool) -> String {
        match rewrite_schemas(sql.as_bytes(), map, scs) {
            Some(r) => {
                check_edits(sql.as_bytes(), &r);
                assert_ne!(r.sql, sql.as_bytes(), "edits that change nothing");
                String::from_utf8(r.sql).unwrap()
            }
            None => sql.to_string(),
        }
    }

    fn rw(sql: &str) -> String {
        rewrite_with(sql, &map(), true)
    }

    #[track_caller]
    fn unchanged(sql: &str) {
        assert_eq!(rewrite_schemas(sql.as_bytes(), &map(), true), None, "{sql}");
    }

    #[test]
    fn schema_map() {
        let m = SchemaMap::new(vec![
            ("public".into(), "public@a".into()),
            ("public".into(), "public@b".into()),
        ]);
        assert_eq!(m.physical("public"), Some("public@a"));
        assert_eq!(m.physical("PUBLIC"), None);
        assert!(!m.is_empty() && SchemaMap::default().is_empty());
        assert_eq!(longest_plain_run(b"a\"bcd'e"), 2..5);
        assert_eq!(longest_plain_run(b"public"), 0..6);
        assert_eq!(longest_plain_run(b"\""), 0..0);
    }

    #[test]
    fn qualified_names() {
        let cases = [
            (
                "select * from public.t",
                r#"select * from "public@feature".t"#,
            ),
            (
                r#"select * from "public"."t""#,
                r#"select * from "public@feature"."t""#,
            ),
            (
                "SELECT * FROM PUBLIC.T",
                r#"SELECT * FROM "public@feature".T"#,
            ),
            ("select public.f(1)", r#"select "public@feature".f(1)"#),
            (
                "select public.t.* from public.t",
                r#"select "public@feature".t.* from "public@feature".t"#,
            ),
            (
                "select public.* from x",
                r#"select "public@feature".* from x"#,
            ),
            (
                "COPY public.t FROM STDIN",
                r#"COPY "public@feature".t FROM STDIN"#,
            ),
            (
                "ALTER TABLE public.t ADD c int",
                r#"ALTER TABLE "public@feature".t ADD c int"#,
            ),
            (
                "CREATE TABLE public.t (id int REFERENCES public.u)",
                r#"CREATE TABLE "public@feature".t (id int REFERENCES "public@feature".u)"#,
            ),
            (
                "select public /* c */ . t",
                r#"select "public@feature" /* c */ . t"#,
            ),
            (
                "select x::public.mood",
                r#"select x::"public@feature".mood"#,
            ),
            (
                "select 1 OPERATOR(public.+) 2",
                r#"select 1 OPERATOR("public@feature".+) 2"#,
            ),
            ("select U&\"public\".t", r#"select "public@feature".t"#),
            ("select u&public.t", r#"select u& "public@feature".t"#),
        ];
        for (sql, want) in cases {
            assert_eq!(rw(sql), want, "{sql}");
        }
    }

    #[test]
    fn quoted_logical_names_match_exactly() {
        let m = SchemaMap::new(vec![("Sales".into(), "Sales@x".into())]);
        assert_eq!(
            rewrite_with(r#"select * from "Sales".t"#, &m, true),
            r#"select * from "Sales@x".t"#
        );
        // Unquoted words fold to `sales`.
        for sql in [
            "select * from Sales.t",
            "select * from SALES.t",
            r#"select "sales".t"#,
        ] {
            assert_eq!(rewrite_schemas(sql.as_bytes(), &m, true), None, "{sql}");
        }
        // Quotes in names are doubled when quoting, unescaped when matching.
        let m = SchemaMap::new(vec![("a\"b".into(), "a\"b@x".into())]);
        assert_eq!(
            rewrite_with(r#"select "a""b".t"#, &m, true),
            r#"select "a""b@x".t"#
        );
    }

    #[test]
    fn two_schemas() {
        assert_eq!(
            rw("select * from public.a join App.b using (id); insert into app.c select 1"),
            r#"select * from "public@feature".a join "app@feature".b using (id); insert into "app@feature".c select 1"#
        );
    }

    #[test]
    fn leaves_what_is_not_a_schema() {
        for sql in [
            "select t.public from t",
            "select x.public.y from x",
            "select 'public.x'",
            "insert into t values ('public.t', $$public.t$$)",
            "select 'public.t'::text",
            "select $$public.t$$",
            "select 1 -- public.t\n",
            "select /* public.t */ 1",
            "GRANT SELECT ON t TO public",
            "select * from public_x.t, mypublic.t, publicx.t",
            r#"select * from "public.t""#,
            r#"select * from "PUBLIC".t"#,
            "select public from t",
            "select 'x.public.t'::regclass",
            "select myschema.nextval('public.s')",
            "select length('public.s')",
            r"select E'\x70ublic.t'::regclass",
            r"select U&'public.t' UESCAPE '!'",
        ] {
            unchanged(sql);
        }
    }

    #[test]
    fn fast_path_needs_a_mention() {
        assert_eq!(rewrite_schemas(b"select 1 from t", &map(), true), None);
        assert_eq!(
            rewrite_schemas(b"select 1", &SchemaMap::default(), true),
            None
        );
        // A mention that needs no rewrite lexes and still returns None.
        unchanged("select 'public' from public");
    }

    #[test]
    fn object_name_literals() {
        let cases = [
            (
                "select 'public.t'::regclass",
                r#"select '"public@feature".t'::regclass"#,
            ),
            (
                "select 'public.t' :: pg_catalog.regclass",
                r#"select '"public@feature".t' :: pg_catalog.regclass"#,
            ),
            (
                "select ' PUBLIC . t'::regclass",
                r#"select ' "public@feature" . t'::regclass"#,
            ),
            (
                r#"select '"public".t'::regclass"#,
                r#"select '"public@feature".t'::regclass"#,
            ),
            (
                "select 'public.f(int)'::regprocedure",
                r#"select '"public@feature".f(int)'::regprocedure"#,
            ),
            (
                "select 'public.mood'::regtype",
                r#"select '"public@feature".mood'::regtype"#,
            ),
            (
                "select CAST('public.t' AS regclass)",
                r#"select CAST('"public@feature".t' AS regclass)"#,
            ),
            (
                "select regclass 'public.t'",
                r#"select regclass '"public@feature".t'"#,
            ),
            (
                "select nextval('public.s')",
                r#"select nextval('"public@feature".s')"#,
            ),
            (
                "select pg_catalog.nextval('public.s'::regclass)",
                r#"select pg_catalog.nextval('"public@feature".s'::regclass)"#,
            ),
            (
                "select setval('app.s', 5, true)",
                r#"select setval('"app@feature".s', 5, true)"#,
            ),
            (
                "select to_regclass('public.t')",
                r#"select to_regclass('"public@feature".t')"#,
            ),
            (
                "select pg_get_serial_sequence('public.t', 'id')",
                r#"select pg_get_serial_sequence('"public@feature".t', 'id')"#,
            ),
            (
                "select pg_relation_size('public.t')",
                r#"select pg_relation_size('"public@feature".t')"#,
            ),
            // Escapes after the schema part are kept as written.
            (
                r"select E'public.t\\x'::regclass",
                r#"select E'"public@feature".t\\x'::regclass"#,
            ),
            (
                "select U&'public.t'::regclass",
                r#"select U&'"public@feature".t'::regclass"#,
            ),
            (
                "select N'public.t'::regclass",
                r#"select N'"public@feature".t'::regclass"#,
            ),
            (
                "select nextval($$public.s$$)",
                r#"select nextval($$"public@feature".s$$)"#,
            ),
            (
                "select $f$ public.t $f$::regclass",
                r#"select $f$ "public@feature".t $f$::regclass"#,
            ),
            // Default value of a column: the cast is what matters.
            (
                "create table public.t (id int default nextval('public.s'::regclass))",
                r#"create table "public@feature".t (id int default nextval('"public@feature".s'::regclass))"#,
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(rw(sql), want, "{sql}");
        }
    }

    #[test]
    fn literal_escaping_follows_the_literal() {
        let m = SchemaMap::new(vec![("public".into(), r"pub'l\ic".into())]);
        assert_eq!(
            rewrite_with("select 'public.t'::regclass", &m, true),
            r#"select '"pub''l\ic".t'::regclass"#
        );
        assert_eq!(
            rewrite_with("select E'public.t'::regclass", &m, true),
            r#"select E'"pub''l\\ic".t'::regclass"#
        );
        // standard_conforming_strings off: plain literals take backslashes.
        assert_eq!(
            rewrite_with("select 'public.t'::regclass", &m, false),
            r#"select '"pub''l\\ic".t'::regclass"#
        );
        assert_eq!(
            rewrite_with("set search_path = 'public'", &m, true),
            r"set search_path = 'pub''l\ic'"
        );
        // A dollar-quoted literal cannot hold a `$`: left alone.
        let m = SchemaMap::new(vec![("public".into(), "public$x".into())]);
        assert_eq!(
            rewrite_schemas(b"select nextval($$public.s$$)", &m, true),
            None
        );
        // With standard_conforming_strings off, `\'` does not end the string.
        assert_eq!(
            rewrite_with(r"select 'a\'b', public.t", &map(), false),
            r#"select 'a\'b', "public@feature".t"#
        );
    }

    #[test]
    fn search_path_settings() {
        let cases = [
            (r#"SET search_path TO public, "$user""#, r#"SET search_path TO "public@feature", "$user""#),
            ("set search_path = PUBLIC,app", r#"set search_path = "public@feature","app@feature""#),
            ("SET SESSION search_path = 'public', pg_temp", "SET SESSION search_path = 'public@feature', pg_temp"),
            ("set local search_path to \"public\"", r#"set local search_path to "public@feature""#),
            (r#"SET "search_path" TO public"#, r#"SET "search_path" TO "public@feature""#),
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = public, pg_temp AS 'select 1'",
                r#"CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = "public@feature", pg_temp AS 'select 1'"#,
            ),
            ("set search_path = $$public$$", "set search_path = $$public@feature$$"),
            (
                "select set_config('search_path', 'public, \"$user\",\"app\"', false)",
                r#"select set_config('search_path', '"public@feature", "$user","app@feature"', false)"#,
            ),
            (
                "SELECT pg_catalog.set_config('SEARCH_PATH', ' PUBLIC ', true)",
                r#"SELECT pg_catalog.set_config('SEARCH_PATH', ' "public@feature" ', true)"#,
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(rw(sql), want, "{sql}");
        }
        for sql in [
            "SET search_path TO DEFAULT",
            "set search_path from current",
            // The server quotes a literal item as one name: these name the
            // schemas `public, x`, `PUBLIC` and `"public"`.
            "set search_path = 'public, x'",
            "set search_path = 'PUBLIC'",
            r#"set search_path = '"public"'"#,
            "update t set search_path = 'public'",
            "insert into t values (1) on conflict (id) do update set search_path = public",
            "select set_config('search_path', '', false), 'public'",
            "select set_config('other', 'public', false)",
            // A malformed list is left whole.
            "select set_config('search_path', 'public x', false)",
            "set myext.search_path = public",
        ] {
            unchanged(sql);
        }
        // The statement after an UPDATE starts afresh.
        assert_eq!(
            rw("update t set search_path = 'public'; set search_path = public"),
            r#"update t set search_path = 'public'; set search_path = "public@feature""#
        );
    }

    #[test]
    fn routine_bodies() {
        let cases = [
            (
                "DO $$ BEGIN PERFORM * FROM public.t; END $$",
                r#"DO $$ BEGIN PERFORM * FROM "public@feature".t; END $$"#,
            ),
            (
                "do language plpgsql $b$ begin set search_path = public; perform nextval('public.s'); end $b$",
                r#"do language plpgsql $b$ begin set search_path = "public@feature"; perform nextval('"public@feature".s'); end $b$"#,
            ),
            (
                "CREATE OR REPLACE FUNCTION public.f() RETURNS bigint AS $body$ select count(*) from public.t $body$ LANGUAGE sql",
                r#"CREATE OR REPLACE FUNCTION "public@feature".f() RETURNS bigint AS $body$ select count(*) from "public@feature".t $body$ LANGUAGE sql"#,
            ),
            (
                "create procedure p() language plpgsql as $$ begin update public.t set search_path = 'public'; insert into t values ('public.t'); end $$",
                r#"create procedure p() language plpgsql as $$ begin update "public@feature".t set search_path = 'public'; insert into t values ('public.t'); end $$"#,
            ),
            // Nested dollar quotes and defaults are data; only the body after AS.
            (
                "create function f(a text default $$public.t$$) returns text language plpgsql as $$ begin return $q$public.t$q$ || public.g(); end $$",
                r#"create function f(a text default $$public.t$$) returns text language plpgsql as $$ begin return $q$public.t$q$ || "public@feature".g(); end $$"#,
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(rw(sql), want, "{sql}");
        }
        for sql in [
            "create function f() returns int language plpython3u as $$ return public.x $$",
            "do language plperl $$ public.x $$",
            "create function f() returns int language sql as 'select count(*) from public.t'",
            "select $$public.t$$, 1",
            "create table t (c text default $$public.t$$)",
            // LANGUAGE inside the parameter list is a parameter name.
            "create function f(language text) returns int as $$ public.t $$ language c",
        ] {
            unchanged(sql);
        }
        assert_eq!(
            rw("create function f(language text) returns int as $$ select * from public.t $$ language sql"),
            r#"create function f(language text) returns int as $$ select * from "public@feature".t $$ language sql"#
        );
    }

    #[test]
    fn several_statements() {
        assert_eq!(
            rw("select 1 from public.a; do $$ begin perform public.b(); end $$; select 'public.c', $$public.d$$; set search_path to public"),
            r#"select 1 from "public@feature".a; do $$ begin perform "public@feature".b(); end $$; select 'public.c', $$public.d$$; set search_path to "public@feature""#
        );
    }

    #[test]
    fn non_utf8_bytes_survive() {
        let sql = b"select '\xe9t\xe9', caf\xe9 from public.t\xff /* \xfe */ where x = '\xff'";
        let r = rewrite_schemas(sql, &map(), true).unwrap();
        check_edits(sql, &r);
        assert_eq!(
            r.sql,
            b"select '\xe9t\xe9', caf\xe9 from \"public@feature\".t\xff /* \xfe */ where x = '\xff'"
        );
        assert_eq!(r.edits, [(24, 6, 16)]);
    }

    #[test]
    fn unterminated_input_is_safe() {
        assert_eq!(
            rw("select public.t, 'public.x"),
            r#"select "public@feature".t, 'public.x"#
        );
        // The server rejects these anyway; rewriting them is harmless.
        rw("select nextval('public.s");
        rw("select nextval($$public.s");
        assert_eq!(
            rw("do $$ perform public.t"),
            r#"do $$ perform "public@feature".t"#
        );
        assert_eq!(rw("select public."), r#"select "public@feature"."#);
        unchanged("select public");
    }

    // --- property tests ---

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("public.t".to_string()),
            Just("\"public\".\"t\"".to_string()),
            Just("x.public.y".to_string()),
            Just("'public.t'::regclass".to_string()),
            Just("nextval('app.s')".to_string()),
            Just("set search_path = public, 'app', \"$user\"".to_string()),
            Just("set_config('search_path', 'public, app', false)".to_string()),
            Just("do $$ begin perform public.f(); end $$".to_string()),
            Just("create function f() returns int as $b$ select public.g() $b$".to_string()),
            Just("E'public.\\'x'::regclass".to_string()),
            Just("$$public.t$$".to_string()),
            Just("'public.t'".to_string()),
            Just("-- public.t\n".to_string()),
            Just("/* public.t */".to_string()),
            Just(";".to_string()),
            Just("(".to_string()),
            Just(")".to_string()),
            Just(".".to_string()),
            Just("::".to_string()),
            "[a-z_]{1,6}",
        ]
    }

    fn sqlish() -> impl Strategy<Value = String> {
        prop::collection::vec((piece(), prop::sample::select(vec![" ", "\n", ""])), 0..12).prop_map(
            |v| {
                v.into_iter()
                    .flat_map(|(p, g)| [p, g.to_string()])
                    .collect()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn absent_names_are_never_rewritten(sql in "[a-pr-z ;'\"$().:,\\\\*/\n-]{0,200}") {
            let m = SchemaMap::new(vec![("qq".into(), "qq@b".into())]);
            prop_assert_eq!(rewrite_schemas(sql.as_bytes(), &m, true), None);
        }

        #[test]
        fn arbitrary_bytes_never_panic(sql in prop::collection::vec(any::<u8>(), 0..300), scs in any::<bool>()) {
            let m = SchemaMap::new(vec![("a".into(), "a@b".into()), ("B".into(), "x\"'\\$".into())]);
            if let Some(r) = rewrite_schemas(&sql, &m, scs) {
                check_edits(&sql, &r);
            }
        }

        #[test]
        fn sqlish_rewrites_are_consistent_and_idempotent(sql in sqlish(), scs in any::<bool>()) {
            if let Some(r) = rewrite_schemas(sql.as_bytes(), &map(), scs) {
                check_edits(sql.as_bytes(), &r);
                // Physical names never match a logical one again.
                prop_assert_eq!(rewrite_schemas(&r.sql, &map(), scs), None);
            }
        }
    }
}

//! A byte-level SQL lexer and the statement splitter built on it.
//!
//! [`split_statements`] cuts the SQL of one simple-protocol Query message
//! into the statements the PostgreSQL server will run, so that each one can
//! be classified (and, for DDL, followed by an injected statement) without
//! changing a single byte of the client's text. [`Lexer`] yields the tokens
//! the classifier reads.
//!
//! Input is bytes, not necessarily UTF-8 (the client encoding may be
//! LATIN1 or another single-byte set): only ASCII bytes are significant,
//! and every byte at or above 0x80 is an identifier character, as in the
//! server's lexer.
//!
//! The rules mirror PostgreSQL's `scan.l` (the server's lexer) and psql's
//! `psqlscan.l` (how psql decides where a statement ends):
//!
//! - whitespace, `--` line comments and `/* */` block comments, which nest,
//!   separate tokens and are never tokens themselves; `--` and `/*` start a
//!   comment even in the middle of an operator (`+--x` is `+`, then a
//!   comment);
//! - `'strings'` with `''` escapes and no backslash escapes (the default
//!   `standard_conforming_strings = on`; see
//!   [`Lexer::with_standard_conforming_strings`] for the old behaviour);
//!   `E'...'` strings, where a backslash escapes the next byte; `B'...'`,
//!   `X'...'`, `N'...'` and `U&'...'` strings; a string continues across a
//!   line break (`'a'` newline `'b'` is one literal, lexed in the first
//!   part's mode);
//! - `"quoted identifiers"` with `""` escapes, and `U&"..."`;
//! - dollar quoting `$tag$ ... $tag$` (the tag is identifier characters
//!   without `$`, possibly empty); `$1` is a parameter, and a `$` inside an
//!   identifier (`a$b`) is part of it, never the start of a quote;
//! - anything unterminated (a string, a quoted identifier, a comment, a
//!   dollar quote) runs to the end of the input.
//!
//! Statements end at a `;` outside parentheses: `CREATE RULE ... DO ALSO
//! (INSERT ...; INSERT ...)` is one statement. SQL-standard function
//! bodies (`CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC ...;
//! ... END`) are one statement too; like psql, the splitter counts
//! `BEGIN`/`CASE`/`END` outside parentheses only once the statement's
//! first words are `CREATE [OR REPLACE] FUNCTION|PROCEDURE`. Statements
//! holding nothing but whitespace and comments are dropped, as the
//! server's grammar drops them.

use std::borrow::Cow;
use std::ops::Range;

/// What a token is; see [`Token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A keyword or an unquoted identifier (`select`, `my_table`, `a$b`).
    Word,
    /// A quoted identifier: `"a""b"` or `U&"..."`.
    QuotedIdent,
    /// A string literal of any kind: `'...'`, `E'...'`, `B'...'`, `X'...'`,
    /// `N'...'`, `U&'...'`, including continuation segments.
    String,
    /// A dollar-quoted string: `$tag$...$tag$`.
    DollarString,
    /// A numeric literal (`42`, `1.5e3`, `.5`).
    Number,
    /// A positional parameter: `$1`.
    Param,
    /// Any other single byte: punctuation or one character of an operator.
    Punct,
}

/// One token: its kind and the exact bytes it spans in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    /// Byte offset of the token in the lexer's input.
    pub start: usize,
    /// The token's bytes as written (quotes and prefixes included).
    pub text: &'a [u8],
}

impl<'a> Token<'a> {
    /// Byte offset just past the token.
    pub fn end(&self) -> usize {
        self.start + self.text.len()
    }

    /// The byte range of the token in the lexer's input.
    pub fn span(&self) -> Range<usize> {
        self.start..self.end()
    }

    /// Whether this is the unquoted word `keyword` (given in lowercase),
    /// compared ASCII case-insensitively.
    pub fn is_word(&self, keyword: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(keyword.as_bytes())
    }

    /// Whether this is the punctuation byte `c`.
    pub fn is_punct(&self, c: u8) -> bool {
        self.kind == TokenKind::Punct && self.text == [c]
    }

    /// Whether this token can name something: a word or a quoted identifier.
    pub fn is_identifier(&self) -> bool {
        matches!(self.kind, TokenKind::Word | TokenKind::QuotedIdent)
    }

    /// The identifier this token names, normalised as the server does: an
    /// unquoted word ASCII-lowercased, a quoted identifier without its
    /// quotes and with `""` unescaped (case kept; `U&"..."` escapes are left
    /// as written). `None` for other tokens.
    pub fn identifier(&self) -> Option<Cow<'a, [u8]>> {
        match self.kind {
            TokenKind::Word => {
                if self.text.iter().any(u8::is_ascii_uppercase) {
                    Some(Cow::Owned(self.text.to_ascii_lowercase()))
                } else {
                    Some(Cow::Borrowed(self.text))
                }
            }
            TokenKind::QuotedIdent => {
                let quoted = match self.text.first() {
                    Some(b'"') => &self.text[1..],
                    // U&"..."
                    _ => self.text.get(3..).unwrap_or_default(),
                };
                let inner = quoted.strip_suffix(b"\"").unwrap_or(quoted);
                if inner.windows(2).any(|w| w == b"\"\"") {
                    let mut out = Vec::with_capacity(inner.len());
                    let mut i = 0;
                    while i < inner.len() {
                        out.push(inner[i]);
                        i += if inner[i] == b'"' && inner.get(i + 1) == Some(&b'"') {
                            2
                        } else {
                            1
                        };
                    }
                    Some(Cow::Owned(out))
                } else {
                    Some(Cow::Borrowed(inner))
                }
            }
            _ => None,
        }
    }
}

/// How the body of a string literal is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StringMode {
    /// `'...'`, `N'...'`, `U&'...'`: `''` is a quote.
    Standard,
    /// `E'...'` (and plain strings when `standard_conforming_strings` is
    /// off): `''` is a quote and a backslash escapes the next byte.
    Escape,
    /// `B'...'`, `X'...'`: the first quote ends the segment.
    Bits,
}

/// Whitespace as the server's lexer defines it (`space` in scan.l, plus
/// vertical tab, which PostgreSQL 16 accepts).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

fn is_dolq_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

/// Yields the tokens of a SQL text, skipping whitespace and comments.
///
/// Cloning a lexer is cheap (a slice and two words): clone it to look ahead.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    standard_conforming_strings: bool,
}

impl<'a> Lexer<'a> {
    /// A lexer with `standard_conforming_strings = on` (PostgreSQL's default
    /// since 9.1).
    pub fn new(src: &'a [u8]) -> Self {
        Self::with_standard_conforming_strings(src, true)
    }

    /// A lexer for a session with the given `standard_conforming_strings`:
    /// when off, backslashes escape in plain `'...'` strings too.
    pub fn with_standard_conforming_strings(src: &'a [u8], on: bool) -> Self {
        Self {
            src,
            pos: 0,
            standard_conforming_strings: on,
        }
    }

    /// Byte offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.src.get(i).copied()
    }

    /// Skips whitespace and comments.
    fn skip_trivia(&mut self) {
        let src = self.src;
        let mut i = self.pos;
        loop {
            match src.get(i) {
                Some(&b) if is_space(b) => i += 1,
                Some(b'-') if src.get(i + 1) == Some(&b'-') => i = line_end(src, i + 2),
                Some(b'/') if src.get(i + 1) == Some(&b'*') => i = block_comment_end(src, i),
                _ => break,
            }
        }
        self.pos = i;
    }

    /// Reads a string body starting just after its opening quote; returns
    /// the offset just past the literal (after any continuation segments).
    fn string_end(&self, mut i: usize, mode: StringMode) -> usize {
        let src = self.src;
        loop {
            // The body of one segment.
            loop {
                match src.get(i) {
                    None => return src.len(),
                    Some(b'\'') => {
                        if mode != StringMode::Bits && src.get(i + 1) == Some(&b'\'') {
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(b'\\') if mode == StringMode::Escape => i += 2,
                    Some(_) => i += 1,
                }
            }
            // scan.l's quotecontinue: a quote, whitespace holding a line
            // break, a quote.
            match string_continuation(src, i) {
                Some(next) => i = next,
                None => return i,
            }
        }
    }

    /// Reads a quoted identifier starting just after its opening quote.
    fn quoted_ident_end(&self, mut i: usize) -> usize {
        let src = self.src;
        loop {
            match src.get(i) {
                None => return src.len(),
                Some(b'"') if src.get(i + 1) == Some(&b'"') => i += 2,
                Some(b'"') => return i + 1,
                Some(_) => i += 1,
            }
        }
    }

    /// At a `$`: a parameter, a dollar quote, or a lone `$`.
    fn dollar(&self, start: usize) -> (TokenKind, usize) {
        let src = self.src;
        let mut j = start + 1;
        match self.at(j) {
            Some(b) if b.is_ascii_digit() => {
                while self.at(j).is_some_and(|b| b.is_ascii_digit()) {
                    j += 1;
                }
                return (TokenKind::Param, j);
            }
            Some(b) if is_ident_start(b) => {
                while self.at(j).is_some_and(is_dolq_cont) {
                    j += 1;
                }
            }
            _ => {}
        }
        if self.at(j) != Some(b'$') {
            // scan.l's dolqfailed: the `$` alone; what follows is lexed anew.
            return (TokenKind::Punct, start + 1);
        }
        let delimiter = &src[start..=j];
        let body = j + 1;
        let end = find(&src[body..], delimiter).map_or(src.len(), |k| body + k + delimiter.len());
        (TokenKind::DollarString, end)
    }

    fn number_end(&self, mut i: usize) -> usize {
        let digits = |mut i: usize| {
            while self.at(i).is_some_and(|b| b.is_ascii_digit()) {
                i += 1;
            }
            i
        };
        i = digits(i);
        if self.at(i) == Some(b'.') && self.at(i + 1) != Some(b'.') {
            i = digits(i + 1);
        }
        if matches!(self.at(i), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.at(i + 1), Some(b'+' | b'-')));
            if self.at(i + 1 + sign).is_some_and(|b| b.is_ascii_digit()) {
                i = digits(i + 1 + sign);
            }
        }
        i
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        self.skip_trivia();
        let src = self.src;
        let start = self.pos;
        let b = *src.get(start)?;
        let next = src.get(start + 1).copied();
        let plain = if self.standard_conforming_strings {
            StringMode::Standard
        } else {
            StringMode::Escape
        };
        let (kind, end) = match b {
            b'\'' => (TokenKind::String, self.string_end(start + 1, plain)),
            b'"' => (TokenKind::QuotedIdent, self.quoted_ident_end(start + 1)),
            b'$' => self.dollar(start),
            b'0'..=b'9' => (TokenKind::Number, self.number_end(start)),
            b'.' if next.is_some_and(|c| c.is_ascii_digit()) => {
                (TokenKind::Number, self.number_end(start))
            }
            b'e' | b'E' if next == Some(b'\'') => (
                TokenKind::String,
                self.string_end(start + 2, StringMode::Escape),
            ),
            b'b' | b'B' | b'x' | b'X' if next == Some(b'\'') => (
                TokenKind::String,
                self.string_end(start + 2, StringMode::Bits),
            ),
            b'n' | b'N' if next == Some(b'\'') => {
                (TokenKind::String, self.string_end(start + 2, plain))
            }
            b'u' | b'U' if next == Some(b'&') && self.at(start + 2) == Some(b'\'') => (
                TokenKind::String,
                self.string_end(start + 3, StringMode::Standard),
            ),
            b'u' | b'U' if next == Some(b'&') && self.at(start + 2) == Some(b'"') => {
                (TokenKind::QuotedIdent, self.quoted_ident_end(start + 3))
            }
            b if is_ident_start(b) => {
                let mut i = start + 1;
                while self.at(i).is_some_and(is_ident_cont) {
                    i += 1;
                }
                (TokenKind::Word, i)
            }
            _ => (TokenKind::Punct, start + 1),
        };
        let end = end.min(src.len());
        self.pos = end;
        Some(Token {
            kind,
            start,
            text: &src[start..end],
        })
    }
}

/// Offset of the line break ending a `--` comment (or the end).
fn line_end(src: &[u8], from: usize) -> usize {
    src[from.min(src.len())..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map_or(src.len(), |k| from + k)
}

/// Offset just past the (nested) block comment starting at `start`.
fn block_comment_end(src: &[u8], start: usize) -> usize {
    let mut depth = 1usize;
    let mut i = start + 2;
    while i < src.len() {
        match (src[i], src.get(i + 1)) {
            (b'/', Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (b'*', Some(b'/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    src.len()
}

/// After a closing quote at `i - 1`: if the literal continues (horizontal
/// whitespace and `--` comments, a line break, any whitespace and comments
/// ending in line breaks, then a quote), the offset after that quote.
fn string_continuation(src: &[u8], mut i: usize) -> Option<usize> {
    // {horiz_whitespace}*
    loop {
        match src.get(i) {
            Some(b' ' | b'\t' | 0x0c) => i += 1,
            Some(b'-') if src.get(i + 1) == Some(&b'-') => i = line_end(src, i + 2),
            _ => break,
        }
    }
    // {newline}
    if !matches!(src.get(i), Some(b'\n' | b'\r')) {
        return None;
    }
    i += 1;
    // {special_whitespace}* = ({space}+ | {comment}{newline})*
    loop {
        match src.get(i) {
            Some(&b) if is_space(b) => i += 1,
            Some(b'-') if src.get(i + 1) == Some(&b'-') => {
                i = line_end(src, i + 2);
                if i >= src.len() {
                    return None;
                }
                i += 1;
            }
            _ => break,
        }
    }
    (src.get(i) == Some(&b'\'')).then_some(i + 1)
}

/// Offset of the first occurrence of `needle` (non-empty) in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while from + needle.len() <= haystack.len() {
        let k = haystack[from..=haystack.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        let at = from + k;
        if haystack[at + 1..at + needle.len()] == *rest {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// psql's state for deciding whether a `;` ends the statement.
#[derive(Debug, Default, Clone)]
struct SplitState {
    paren_depth: u32,
    begin_depth: u32,
    /// psqlscan.l's `identifier_count` and `identifiers`: the first letters
    /// of the statement's first four words when they are one of CREATE, OR,
    /// REPLACE, FUNCTION, PROCEDURE.
    identifier_count: u32,
    identifiers: [u8; 4],
}

impl SplitState {
    /// Whether a `;` here ends the statement.
    fn at_top(&self) -> bool {
        self.paren_depth == 0 && self.begin_depth == 0
    }

    fn feed(&mut self, token: &Token<'_>) {
        match token.kind {
            TokenKind::Punct if token.text == b"(" => self.paren_depth += 1,
            TokenKind::Punct if token.text == b")" => {
                self.paren_depth = self.paren_depth.saturating_sub(1)
            }
            TokenKind::Word => self.word(token),
            _ => {}
        }
    }

    fn word(&mut self, token: &Token<'_>) {
        const HEAD: [&str; 5] = ["create", "function", "procedure", "or", "replace"];
        let count = self.identifier_count as usize;
        if count < self.identifiers.len() && HEAD.iter().any(|k| token.is_word(k)) {
            self.identifiers[count] = token.text[0].to_ascii_lowercase();
        }
        self.identifier_count = self.identifier_count.saturating_add(1);
        let ids = &self.identifiers;
        let routine = ids[0] == b'c'
            && (ids[1] == b'f'
                || ids[1] == b'p'
                || (ids[1] == b'o' && ids[2] == b'r' && (ids[3] == b'f' || ids[3] == b'p')));
        if routine && self.paren_depth == 0 {
            if token.is_word("begin") {
                self.begin_depth += 1;
            } else if token.is_word("case") {
                // CASE also ends with END; it matters only inside BEGIN.
                if self.begin_depth >= 1 {
                    self.begin_depth += 1;
                }
            } else if token.is_word("end") {
                self.begin_depth = self.begin_depth.saturating_sub(1);
            }
        }
    }
}

/// Iterator over the statements of a SQL text; see [`split_statements`].
/// Allocation-free.
#[derive(Debug, Clone)]
pub struct Statements<'a> {
    lexer: Lexer<'a>,
}

impl<'a> Statements<'a> {
    pub fn new(sql: &'a [u8]) -> Self {
        Self {
            lexer: Lexer::new(sql),
        }
    }

    /// Splits with the given `standard_conforming_strings` setting.
    pub fn with_standard_conforming_strings(sql: &'a [u8], on: bool) -> Self {
        Self {
            lexer: Lexer::with_standard_conforming_strings(sql, on),
        }
    }
}

impl Iterator for Statements<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        let mut state = SplitState::default();
        let mut span: Option<Range<usize>> = None;
        for token in self.lexer.by_ref() {
            if token.is_punct(b';') && state.at_top() {
                match span {
                    Some(span) => return Some(span),
                    // An empty statement.
                    None => continue,
                }
            }
            match &mut span {
                Some(span) => span.end = token.end(),
                None => span = Some(token.span()),
            }
            state.feed(&token);
        }
        span
    }
}

/// Splits the SQL of one simple-protocol Query message into its statements,
/// as the PostgreSQL server counts them.
///
/// Returns the byte range in `sql` of each non-empty statement: it starts at
/// the statement's first token (whitespace and comments before it are
/// skipped) and ends after its last token (trailing whitespace, comments and
/// the `;` are excluded). Empty statements are dropped.
pub fn split_statements(sql: &[u8]) -> Vec<Range<usize>> {
    Statements::new(sql).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(sql: &str) -> Vec<&str> {
        split_statements(sql.as_bytes())
            .into_iter()
            .map(|r| &sql[r])
            .collect()
    }

    fn tokens(sql: &str) -> Vec<(TokenKind, &str)> {
        Lexer::new(sql.as_bytes())
            .map(|t| (t.kind, &sql[t.span()]))
            .collect()
    }

    #[test]
    fn splits_simple_statements_and_drops_empty_ones() {
        assert_eq!(split("select 1; select 2"), ["select 1", "select 2"]);
        assert_eq!(split("  select 1 ;  "), ["select 1"]);
        assert_eq!(split(";;select 1;;; ;select 2;"), ["select 1", "select 2"]);
        assert_eq!(split(""), Vec::<&str>::new());
        assert_eq!(split(" ; -- x\n ; /* y */ "), Vec::<&str>::new());
    }

    #[test]
    fn ranges_skip_leading_and_trailing_comments() {
        assert_eq!(
            split("/* lead */ -- line\n select 1 /* trail */ -- t\n; /*a*/select/*b*/2/*c*/"),
            ["select 1", "select/*b*/2"]
        );
    }

    #[test]
    fn semicolons_in_comments_do_not_split() {
        assert_eq!(
            split("select 1 -- a;b\n, 2; select 3"),
            ["select 1 -- a;b\n, 2", "select 3"]
        );
        assert_eq!(
            split("select /* ; /* ; */ ; */ 1; select 2"),
            ["select /* ; /* ; */ ; */ 1", "select 2"]
        );
        // A `--` in the middle of an operator starts a comment.
        assert_eq!(
            split("select 1 +-- ;\n 2; select 3"),
            ["select 1 +-- ;\n 2", "select 3"]
        );
        // `/*/` does not close a comment.
        assert_eq!(
            split("select /*/ ; */ 1; select 2"),
            ["select /*/ ; */ 1", "select 2"]
        );
    }

    #[test]
    fn semicolons_in_strings_do_not_split() {
        assert_eq!(
            split("select 'a;b'; select 2"),
            ["select 'a;b'", "select 2"]
        );
        assert_eq!(
            split("select 'it''s;'; select 2"),
            ["select 'it''s;'", "select 2"]
        );
        // No backslash escapes in standard strings: the string ends at `\'`.
        assert_eq!(
            split(r"select 'a\'; select 2"),
            [r"select 'a\'", "select 2"]
        );
        // E-strings: `\'` and `\\` are escapes.
        assert_eq!(
            split(r"select E'a\';b'; select 2"),
            [r"select E'a\';b'", "select 2"]
        );
        assert_eq!(
            split(r"select e'a\\'; select 2"),
            [r"select e'a\\'", "select 2"]
        );
        assert_eq!(
            split(r"select N'a;b', B'01', X'ff;'; select 2"),
            [r"select N'a;b', B'01', X'ff;'", "select 2"]
        );
        assert_eq!(
            split("select U&'d\\0061t;a'; select 2"),
            ["select U&'d\\0061t;a'", "select 2"]
        );
        // A word ending in e is not an E prefix.
        assert_eq!(
            split(r"select the'a\'; select 2"),
            [r"select the'a\'", "select 2"]
        );
    }

    #[test]
    fn string_continuation_keeps_the_escape_mode() {
        // The second segment continues the E-string: `\'` is an escape.
        let sql = "select E'a'\n  'b\\';c'; select 2";
        assert_eq!(split(sql), ["select E'a'\n  'b\\';c'", "select 2"]);
        // Without a line break there is no continuation.
        let sql = "select E'a' 'b\\'; select 2";
        assert_eq!(split(sql), ["select E'a' 'b\\'", "select 2"]);
        // A comment before the line break is allowed.
        let sql = "select E'a' -- c\n'\\';'; select 2";
        assert_eq!(split(sql), ["select E'a' -- c\n'\\';'", "select 2"]);
    }

    #[test]
    fn nonstandard_strings_escape_backslashes() {
        let sql = b"select 'a\\';' ; select 2";
        let ranges: Vec<_> = Statements::with_standard_conforming_strings(sql, false).collect();
        assert_eq!(ranges, [0..13, 16..24]);
        // With standard strings the first `;` ends the statement.
        assert_eq!(split_statements(sql), [0..11, 12..24]);
    }

    #[test]
    fn quoted_identifiers() {
        assert_eq!(
            split(r#"select "a;""b"; select 2"#),
            [r#"select "a;""b""#, "select 2"]
        );
        assert_eq!(
            split(r#"select U&"a;"; select 2"#),
            [r#"select U&"a;""#, "select 2"]
        );
        let t = Lexer::new(br#""My""Tab""#).next().unwrap();
        assert_eq!(t.kind, TokenKind::QuotedIdent);
        assert_eq!(&*t.identifier().unwrap(), br#"My"Tab"#);
        let t = Lexer::new(b"MyTab").next().unwrap();
        assert_eq!(&*t.identifier().unwrap(), b"mytab");
        let t = Lexer::new(br#"U&"X""#).next().unwrap();
        assert_eq!(&*t.identifier().unwrap(), b"X");
    }

    #[test]
    fn dollar_quotes() {
        assert_eq!(
            split("select $$a;b$$; select 2"),
            ["select $$a;b$$", "select 2"]
        );
        assert_eq!(
            split("do $body$ begin; $x$ ; $ $body$; select 2"),
            ["do $body$ begin; $x$ ; $ $body$", "select 2"]
        );
        // The closing delimiter must match the tag exactly.
        assert_eq!(
            split("select $a$ $ab$; $a$; select 2"),
            ["select $a$ $ab$; $a$", "select 2"]
        );
        // $1 is a parameter; a$b$ is an identifier.
        assert_eq!(
            split("select $1; select a$b$; select 2"),
            ["select $1", "select a$b$", "select 2"]
        );
        assert_eq!(
            tokens("a$b$ $1 $$x$$"),
            [
                (TokenKind::Word, "a$b$"),
                (TokenKind::Param, "$1"),
                (TokenKind::DollarString, "$$x$$")
            ]
        );
        // A `$` not starting a delimiter is a lone `$`.
        assert_eq!(
            tokens("$a b"),
            [
                (TokenKind::Punct, "$"),
                (TokenKind::Word, "a"),
                (TokenKind::Word, "b")
            ]
        );
    }

    #[test]
    fn unterminated_things_run_to_the_end() {
        assert_eq!(split("select 1; select 'a;b"), ["select 1", "select 'a;b"]);
        assert_eq!(
            split("select 1; select \"a;b"),
            ["select 1", "select \"a;b"]
        );
        assert_eq!(
            split("select 1; select $q$a;b"),
            ["select 1", "select $q$a;b"]
        );
        assert_eq!(
            split("select 1; select 2 /* a; /* */ b;"),
            ["select 1", "select 2"]
        );
        assert_eq!(split("select 1; select E'\\"), ["select 1", "select E'\\"]);
        assert_eq!(split("select 1; -- x;"), ["select 1"]);
    }

    #[test]
    fn parentheses_hold_semicolons() {
        let sql = "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); SELECT 1";
        assert_eq!(
            split(sql),
            [
                "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))",
                "SELECT 1"
            ]
        );
        // A stray `)` does not make the depth negative.
        assert_eq!(split("select ) ; select (1)"), ["select )", "select (1)"]);
    }

    #[test]
    fn begin_atomic_bodies() {
        let f = "CREATE OR REPLACE FUNCTION f(a int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n  SELECT CASE WHEN a > 0 THEN 1 ELSE 2 END;\nEND";
        let sql = format!("{f}; SELECT 2");
        assert_eq!(split(&sql), [f, "SELECT 2"]);
        let p = "create procedure p() begin atomic insert into t values (1); insert into t values (2); end";
        let sql = format!("{p};select 3;");
        assert_eq!(split(&sql), [p, "select 3"]);
        // Only CREATE [OR REPLACE] FUNCTION/PROCEDURE counts BEGIN.
        assert_eq!(split("begin; select 1; end;"), ["begin", "select 1", "end"]);
        assert_eq!(
            split("create table begin_t (a int); select case when true then 1 end; select 2"),
            [
                "create table begin_t (a int)",
                "select case when true then 1 end",
                "select 2"
            ]
        );
        // A RETURN body without BEGIN ends at the first `;`.
        assert_eq!(
            split("create function g() returns int return case when true then 1 end; select 2"),
            [
                "create function g() returns int return case when true then 1 end",
                "select 2"
            ]
        );
        // Quoted words do not count.
        assert_eq!(
            split("create function \"begin\"() returns int language sql return 1; select 2"),
            [
                "create function \"begin\"() returns int language sql return 1",
                "select 2"
            ]
        );
        // The state resets after each statement.
        assert_eq!(
            split("create function f() returns int return 1; begin; select 1"),
            [
                "create function f() returns int return 1",
                "begin",
                "select 1"
            ]
        );
    }

    #[test]
    fn lexes_token_kinds() {
        assert_eq!(
            tokens("SELECT a.b, 1.5e3, .5, 'x', e'\\'', x'1F', \"Q\" FROM t::int[] WHERE c<>$2"),
            [
                (TokenKind::Word, "SELECT"),
                (TokenKind::Word, "a"),
                (TokenKind::Punct, "."),
                (TokenKind::Word, "b"),
                (TokenKind::Punct, ","),
                (TokenKind::Number, "1.5e3"),
                (TokenKind::Punct, ","),
                (TokenKind::Number, ".5"),
                (TokenKind::Punct, ","),
                (TokenKind::String, "'x'"),
                (TokenKind::Punct, ","),
                (TokenKind::String, "e'\\''"),
                (TokenKind::Punct, ","),
                (TokenKind::String, "x'1F'"),
                (TokenKind::Punct, ","),
                (TokenKind::QuotedIdent, "\"Q\""),
                (TokenKind::Word, "FROM"),
                (TokenKind::Word, "t"),
                (TokenKind::Punct, ":"),
                (TokenKind::Punct, ":"),
                (TokenKind::Word, "int"),
                (TokenKind::Punct, "["),
                (TokenKind::Punct, "]"),
                (TokenKind::Word, "WHERE"),
                (TokenKind::Word, "c"),
                (TokenKind::Punct, "<"),
                (TokenKind::Punct, ">"),
                (TokenKind::Param, "$2"),
            ]
        );
    }

    #[test]
    fn non_utf8_bytes_are_identifier_characters() {
        // LATIN1 "café" then a `;`.
        let sql = b"select caf\xe9; select '\xff;'";
        let ranges = split_statements(sql);
        assert_eq!(ranges, [0..11, 13..24]);
        let t = Lexer::new(b"\xe9t\xe9$x").next().unwrap();
        assert_eq!((t.kind, t.text), (TokenKind::Word, &b"\xe9t\xe9$x"[..]));
    }

    // --- property tests ---

    /// Pieces of a statement, each a whole token or a parenthesised group;
    /// some contain `;` that must not split.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("'a;b'".to_string()),
            Just("'it''s; fine'".to_string()),
            Just("''".to_string()),
            Just(r"E'\';\\'".to_string()),
            Just(r"e'x\\'".to_string()),
            Just("B'0101'".to_string()),
            Just("X'ff'".to_string()),
            Just("N';'".to_string()),
            Just("U&'a;'".to_string()),
            Just("$$;$$".to_string()),
            Just("$$ $ ; $$".to_string()),
            Just("$body$ ; $x$ ; $$ $body$".to_string()),
            Just("$a$;$ab$;$a$".to_string()),
            Just("\"a;\"\"b\"".to_string()),
            Just("U&\"x;\"".to_string()),
            Just("(a; b)".to_string()),
            Just("((;) ; ';')".to_string()),
            Just("$1".to_string()),
            Just("1.5e3".to_string()),
            Just(".5".to_string()),
            Just("a$b$".to_string()),
            Just("+".to_string()),
            Just("::".to_string()),
            "[a-z_][a-z0-9_]{0,6}".prop_filter("psql words", |w| !matches!(
                w.as_str(),
                "begin" | "case" | "end" | "create"
            )),
        ]
    }

    /// What may separate two tokens: always at least one byte, so that
    /// pieces never merge.
    fn gap() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(" ".to_string()),
            Just("\n".to_string()),
            Just("\t ".to_string()),
            Just(" /* c; */ ".to_string()),
            Just("/* /* ; */ ; */".to_string()),
            Just(" -- ;\n".to_string()),
            Just("--\r".to_string()),
        ]
    }

    fn statement() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["select", "insert", "update", "vacuum", "create"]),
            prop::collection::vec((gap(), piece()), 0..8),
        )
            .prop_map(|(head, rest)| {
                let mut s = head.to_string();
                for (g, p) in rest {
                    s.push_str(&g);
                    s.push_str(&p);
                }
                s
            })
    }

    /// Text between statements: optional trivia, `;`, optional empty
    /// statements.
    fn separator() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just(String::new()),
                Just(" ".to_string()),
                Just("\n".to_string()),
                Just(";".to_string()),
                Just(" ; ".to_string()),
                Just("/* ; */".to_string()),
                Just("-- ;\n".to_string()),
            ],
            0..4,
        )
        .prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn splitting_arbitrary_bytes_is_sane(sql in prop::collection::vec(any::<u8>(), 0..300)) {
            let ranges = split_statements(&sql);
            let mut last = 0;
            for r in &ranges {
                prop_assert!(r.start < r.end);
                prop_assert!(r.start >= last);
                prop_assert!(r.end <= sql.len());
                last = r.end;
            }
            // Every token lies inside the input.
            for t in Lexer::new(&sql) {
                prop_assert!(t.end() <= sql.len() && !t.text.is_empty());
            }
        }

        #[test]
        fn splitting_sqlish_bytes_is_sane(sql in "[a-z;'\"$()\\-/* \nE\\\\]{0,200}") {
            let ranges = split_statements(sql.as_bytes());
            let mut last = 0;
            for r in &ranges {
                prop_assert!(r.start < r.end && r.start >= last && r.end <= sql.len());
                last = r.end;
            }
        }

        #[test]
        fn joined_statements_split_back(
            lead in separator(),
            stmts in prop::collection::vec((statement(), separator()), 1..6),
        ) {
            let mut sql = lead.clone();
            let mut expected = Vec::new();
            for (stmt, sep) in &stmts {
                let start = sql.len();
                sql.push_str(stmt);
                expected.push(start..sql.len());
                sql.push(';');
                sql.push_str(sep);
            }
            prop_assert_eq!(split_statements(sql.as_bytes()), expected, "{:?}", sql);
        }
    }
}

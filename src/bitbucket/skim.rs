//! A resumable byte scanner that splits one top-level JSON array into its elements as the
//! body arrives, dropping the values of named object keys on the way.
//!
//! The 1.0 group-privileges listing embeds each group's whole member list in every row
//! (1.7 GB at 100k people, 2k groups, 20k repositories, almost all of it `members`), and bbsync
//! keeps three strings of each row. serde_json's reader path skips what a type does not declare
//! without holding it, but reads byte by byte through `io::Read` (~200 MB/s). [`Skim`] is fed
//! the body chunk by chunk instead: it copies each element's bytes into one reusable row
//! buffer, except the value of any key in its skip list (at any depth), which it passes over,
//! `memchr`-ing through string bodies, and writes as `[]` (an array), `{}` (an object) or
//! `null` (anything else). Each completed element, a few hundred bytes, is then decoded with
//! `serde_json::from_slice` ([`Skim::feed_rows`]).
//!
//! What is checked, and by whom:
//! - The kept bytes (everything but the skipped values) are validated in full by serde when
//!   the element is decoded: a malformed row is an error there.
//! - The skipped bytes are only tracked structurally: strings (with their escapes, so a `"`,
//!   `[` or `}` inside a string is text) and bracket nesting, each `]` or `}` closing what
//!   opened last, to a depth of [`MAX_DEPTH`]. A skipped value with, say, a bad number in it
//!   is dropped without complaint; one whose brackets do not balance is an error.
//! - The document must be exactly one array, followed by whitespace only; a body that ends
//!   inside it is an error. Every error names the byte offset in the body.
//! - A key is matched by its raw bytes: a key spelled with escapes (`"memb\u0065rs"`) is not
//!   recognised and is kept (and then validated, and bounded, like any kept byte).
//! - An element is at most [`MAX_ROW_BYTES`] without its skipped values (a group-privileges
//!   row is ~600 bytes): a bigger one is an error, so a hostile body cannot grow the buffer.
//!
//! Chunk boundaries may fall anywhere (inside a key, a string, an escape, between a key and
//! its `:`); the scanner's state carries over to the next [`Skim::feed`].

use memchr::memchr2;
use serde::de::DeserializeOwned;

/// The most an element may hold once its skipped values are dropped.
pub const MAX_ROW_BYTES: usize = 1 << 20;

/// The deepest nesting of arrays and objects inside an element, skipped values included
/// (serde's own limit for the kept bytes is 128).
pub const MAX_DEPTH: usize = 512;

/// The row buffer's capacity is given back after an element larger than this.
const ROW_CAPACITY_KEPT: usize = 64 * 1024;

/// Why a body is not one JSON array of elements; `offset` is the byte of the body where the
/// scanner found it out (for an element that does not decode, where the element began).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkimError {
    pub offset: u64,
    pub message: String,
}

impl std::fmt::Display for SkimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

impl std::error::Error for SkimError {}

/// Where the scanner is; the bytes of a kept element are copied in the `Code`, `Str`,
/// `StrEscape`, `Scalar`, `Colon` and `Value` modes, not in the `Skip*` ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Before the array's `[`.
    Start,
    /// After the `[`: the first element or `]`.
    First,
    /// After a `,`: an element.
    Next,
    /// After an element: `,` or `]`.
    After,
    /// After the array's `]`: whitespace only.
    Done,
    /// In an element, outside strings.
    Code,
    /// In a string of an element.
    Str,
    /// In a string of an element, after a `\`.
    StrEscape,
    /// An element that is a bare scalar (a number, `true`, ...).
    Scalar,
    /// After a key whose value is skipped: its `:`.
    Colon,
    /// After that `:`: the value to skip.
    Value,
    /// In a skipped array or object, outside strings.
    SkipCode,
    /// In a skipped string.
    SkipStr,
    /// In a skipped string, after a `\`.
    SkipStrEscape,
    /// In a skipped scalar.
    SkipScalar,
}

impl Mode {
    /// The mode copies the element's bytes into the row.
    fn keeps(self) -> bool {
        matches!(
            self,
            Mode::Code | Mode::Str | Mode::StrEscape | Mode::Scalar | Mode::Colon | Mode::Value
        )
    }
}

/// How a scan through a string body ended.
enum StrEnd {
    /// At its closing quote; the index after it.
    Closed(usize),
    /// The chunk ended inside the string.
    Open,
    /// The chunk ended right after a `\`: the next chunk's first byte is escaped.
    Escape,
}

/// Scans a string body from `i` (after its opening quote, or anywhere inside it outside an
/// escape): `memchr2` jumps to the next `"` or `\`, and an escape's second byte is passed
/// over unread (for `\u`, the four hex digits are neither).
#[inline]
fn string_end(chunk: &[u8], mut i: usize) -> StrEnd {
    loop {
        match memchr2(b'"', b'\\', &chunk[i..]) {
            None => return StrEnd::Open,
            Some(k) => {
                let j = i + k;
                if chunk[j] == b'"' {
                    return StrEnd::Closed(j + 1);
                }
                if j + 1 == chunk.len() {
                    return StrEnd::Escape;
                }
                i = j + 2;
            }
        }
    }
}

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The index of the first byte at or after `i` that is not whitespace (or the end).
#[inline]
fn skip_ws(chunk: &[u8], mut i: usize) -> usize {
    while i < chunk.len() && is_ws(chunk[i]) {
        i += 1;
    }
    i
}

/// A byte that ends a bare scalar.
#[inline]
fn ends_scalar(b: u8) -> bool {
    is_ws(b) || matches!(b, b',' | b']' | b'}' | b'[' | b'{' | b'"' | b':')
}

/// A byte for a message: `'x'` when printable ASCII, else its hex value.
fn shown(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("{:?}", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

/// The scanner; see the module documentation. Feed it the body's chunks in order
/// ([`Skim::feed`] or [`Skim::feed_rows`]), then call [`Skim::finish`] at the end of the body.
pub struct Skim {
    skip: &'static [&'static str],
    max_row: usize,
    mode: Mode,
    /// The current element, without its skipped values (some of its bytes may still be in
    /// the chunk being scanned: see `run` in [`Skim::feed`]).
    row: Vec<u8>,
    /// The open brackets of the current element (`{` or `[`), innermost last.
    stack: Vec<u8>,
    /// `stack.len()` outside the value being skipped: the skip ends when it is back there.
    skip_base: usize,
    /// The next string in `Code` is an object key (after `{`, or `,` in an object).
    expect_key: bool,
    /// The string in `Str` is an object key.
    str_is_key: bool,
    /// Where the key being read starts in `row`.
    key_start: usize,
    /// Bytes of the body before the current chunk.
    offset: u64,
    /// Where the current element began in the body.
    element_start: u64,
    /// Elements completed.
    elements: u64,
}

impl Skim {
    /// A scanner that drops the values of the object keys in `skip`, at any depth.
    pub fn new(skip: &'static [&'static str]) -> Skim {
        Skim {
            skip,
            max_row: MAX_ROW_BYTES,
            mode: Mode::Start,
            row: Vec::new(),
            stack: Vec::new(),
            skip_base: 0,
            expect_key: false,
            str_is_key: false,
            key_start: 0,
            offset: 0,
            element_start: 0,
            elements: 0,
        }
    }

    /// The same with another bound on a kept element (tests).
    pub fn with_max_row(mut self, max_row: usize) -> Skim {
        self.max_row = max_row;
        self
    }

    /// Bytes fed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// [`Skim::feed`], decoding each element as a `T` (`serde_json::from_slice`) into `fold`.
    pub fn feed_rows<T: DeserializeOwned, A>(
        &mut self,
        chunk: &[u8],
        acc: &mut A,
        fold: fn(&mut A, T),
    ) -> Result<(), SkimError> {
        self.feed(chunk, |row| {
            fold(acc, serde_json::from_slice(row)?);
            Ok(())
        })
    }

    /// Scans the next chunk of the body; `element` is called with each element completed in
    /// it, without its skipped values. An error of `element` fails the scan, named with the
    /// element's index and offset.
    pub fn feed<F>(&mut self, chunk: &[u8], mut element: F) -> Result<(), SkimError>
    where
        F: FnMut(&[u8]) -> Result<(), serde_json::Error>,
    {
        let n = chunk.len();
        let mut i = 0;
        // The start of the current element's bytes in `chunk` not yet copied to `row`
        // (meaningful in the modes that keep): they are copied in runs, not byte by byte.
        let mut run = 0;
        while i < n {
            match self.mode {
                Mode::Start => {
                    i = skip_ws(chunk, i);
                    if i < n {
                        if chunk[i] != b'[' {
                            return Err(self.error(
                                i,
                                format!("expected a JSON array, found {}", shown(chunk[i])),
                            ));
                        }
                        self.mode = Mode::First;
                        i += 1;
                    }
                }
                Mode::First | Mode::Next => {
                    i = skip_ws(chunk, i);
                    if i == n {
                        break;
                    }
                    let b = chunk[i];
                    if b == b']' && self.mode == Mode::First {
                        self.mode = Mode::Done;
                        i += 1;
                        continue;
                    }
                    if matches!(b, b']' | b',' | b'}' | b':') {
                        return Err(self.error(
                            i,
                            format!("expected an element of the array, found {}", shown(b)),
                        ));
                    }
                    self.row.clear();
                    self.stack.clear();
                    run = i;
                    self.element_start = self.offset + i as u64;
                    match b {
                        b'{' | b'[' => {
                            self.stack.push(b);
                            self.expect_key = b == b'{';
                            self.mode = Mode::Code;
                            i += 1;
                        }
                        b'"' => {
                            self.str_is_key = false;
                            self.mode = Mode::Str;
                            i += 1;
                        }
                        _ => self.mode = Mode::Scalar,
                    }
                }
                Mode::After => {
                    i = skip_ws(chunk, i);
                    if i < n {
                        self.mode = match chunk[i] {
                            b',' => Mode::Next,
                            b']' => Mode::Done,
                            b => {
                                return Err(self.error(
                                    i,
                                    format!(
                                        "expected ',' or ']' after element {}, found {}",
                                        self.elements - 1,
                                        shown(b)
                                    ),
                                ))
                            }
                        };
                        i += 1;
                    }
                }
                Mode::Done => {
                    i = skip_ws(chunk, i);
                    if i < n {
                        return Err(self.error(
                            i,
                            format!("trailing characters after the array ({})", shown(chunk[i])),
                        ));
                    }
                }
                Mode::Code => {
                    while i < n {
                        let b = chunk[i];
                        i += 1;
                        match b {
                            b'"' => {
                                self.str_is_key = self.expect_key;
                                self.expect_key = false;
                                if self.str_is_key {
                                    self.key_start = self.row.len() + (i - run);
                                }
                                self.mode = Mode::Str;
                                break;
                            }
                            b'{' | b'[' => {
                                self.open(b, i - 1)?;
                                self.expect_key = b == b'{';
                            }
                            b'}' | b']' => {
                                self.close(b, i - 1)?;
                                self.expect_key = false;
                                if self.stack.is_empty() {
                                    self.keep(chunk, run, i)?;
                                    self.complete(&mut element)?;
                                    break;
                                }
                            }
                            b',' => self.expect_key = self.stack.last() == Some(&b'{'),
                            b' ' | b'\t' | b'\n' | b'\r' => {}
                            _ => self.expect_key = false,
                        }
                    }
                }
                Mode::Str => match string_end(chunk, i) {
                    StrEnd::Open => i = n,
                    StrEnd::Escape => {
                        self.mode = Mode::StrEscape;
                        i = n;
                    }
                    StrEnd::Closed(end) => {
                        i = end;
                        if self.stack.is_empty() {
                            self.keep(chunk, run, i)?;
                            self.complete(&mut element)?;
                        } else if self.str_is_key && !self.skip.is_empty() {
                            // The key whole in `row` (without its closing quote) to match it.
                            self.keep(chunk, run, i - 1)?;
                            run = i - 1;
                            let key = &self.row[self.key_start..];
                            self.mode = if self.skip.iter().any(|k| k.as_bytes() == key) {
                                Mode::Colon
                            } else {
                                Mode::Code
                            };
                        } else {
                            self.mode = Mode::Code;
                        }
                    }
                },
                Mode::StrEscape | Mode::SkipStrEscape => {
                    // The escaped byte, whatever it is.
                    i += 1;
                    self.mode = if self.mode == Mode::StrEscape {
                        Mode::Str
                    } else {
                        Mode::SkipStr
                    };
                }
                Mode::Scalar => {
                    while i < n && !ends_scalar(chunk[i]) {
                        i += 1;
                    }
                    if i < n {
                        self.keep(chunk, run, i)?;
                        self.complete(&mut element)?;
                    }
                }
                Mode::Colon => {
                    i = skip_ws(chunk, i);
                    if i < n {
                        if chunk[i] != b':' {
                            return Err(self.error(
                                i,
                                format!(
                                    "expected ':' after an object key, found {}",
                                    shown(chunk[i])
                                ),
                            ));
                        }
                        i += 1;
                        self.mode = Mode::Value;
                    }
                }
                Mode::Value => {
                    i = skip_ws(chunk, i);
                    if i == n {
                        break;
                    }
                    let b = chunk[i];
                    self.keep(chunk, run, i)?;
                    self.skip_base = self.stack.len();
                    match b {
                        b'{' | b'[' => {
                            self.keep(&[b, b + 2], 0, 2)?;
                            self.open(b, i)?;
                            self.mode = Mode::SkipCode;
                        }
                        b'"' => {
                            self.keep(b"null", 0, 4)?;
                            self.mode = Mode::SkipStr;
                        }
                        b',' | b'}' | b']' | b':' => {
                            return Err(self.error(
                                i,
                                format!("expected a value after an object key, found {}", shown(b)),
                            ))
                        }
                        _ => {
                            self.keep(b"null", 0, 4)?;
                            self.mode = Mode::SkipScalar;
                        }
                    }
                    i += 1;
                }
                Mode::SkipCode => {
                    i = self.skip_code(chunk, i)?;
                    if self.mode == Mode::Code {
                        run = i;
                    }
                }
                Mode::SkipStr => match string_end(chunk, i) {
                    StrEnd::Open => i = n,
                    StrEnd::Escape => {
                        self.mode = Mode::SkipStrEscape;
                        i = n;
                    }
                    StrEnd::Closed(end) => {
                        i = end;
                        if self.stack.len() == self.skip_base {
                            self.mode = Mode::Code;
                            self.expect_key = false;
                            run = i;
                        } else {
                            self.mode = Mode::SkipCode;
                        }
                    }
                },
                Mode::SkipScalar => {
                    while i < n && !ends_scalar(chunk[i]) {
                        i += 1;
                    }
                    if i < n {
                        self.mode = Mode::Code;
                        self.expect_key = false;
                        run = i;
                    }
                }
            }
        }
        if self.mode.keeps() {
            self.keep(chunk, run, n)?;
        }
        self.offset += n as u64;
        Ok(())
    }

    /// Through a skipped array or object from `i`, outside strings: strings are jumped over
    /// with `memchr2`, brackets counted. Returns where it stopped: the end of the chunk, or
    /// after the bracket that closed the skipped value (the mode is then `Code`).
    #[inline]
    fn skip_code(&mut self, chunk: &[u8], mut i: usize) -> Result<usize, SkimError> {
        let n = chunk.len();
        while i < n {
            let b = chunk[i];
            i += 1;
            match b {
                b'"' => match string_end(chunk, i) {
                    StrEnd::Closed(end) => i = end,
                    StrEnd::Open => {
                        self.mode = Mode::SkipStr;
                        return Ok(n);
                    }
                    StrEnd::Escape => {
                        self.mode = Mode::SkipStrEscape;
                        return Ok(n);
                    }
                },
                b'{' | b'[' => self.open(b, i - 1)?,
                b'}' | b']' => {
                    self.close(b, i - 1)?;
                    if self.stack.len() == self.skip_base {
                        self.mode = Mode::Code;
                        self.expect_key = false;
                        return Ok(i);
                    }
                }
                _ => {}
            }
        }
        Ok(n)
    }

    /// An opening bracket at `at` in the chunk.
    #[inline]
    fn open(&mut self, b: u8, at: usize) -> Result<(), SkimError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.error(
                at,
                format!(
                    "element {} is nested deeper than {MAX_DEPTH} levels",
                    self.elements
                ),
            ));
        }
        self.stack.push(b);
        Ok(())
    }

    /// A closing bracket at `at`: it must close what opened last (`{`/`}` and `[`/`]` are
    /// two apart in ASCII).
    #[inline]
    fn close(&mut self, b: u8, at: usize) -> Result<(), SkimError> {
        match self.stack.pop() {
            Some(open) if open + 2 == b => Ok(()),
            Some(open) => Err(self.error(
                at,
                format!("unbalanced brackets: {} closes {}", shown(b), shown(open)),
            )),
            None => Err(self.error(
                at,
                format!("unbalanced brackets: {} closes nothing", shown(b)),
            )),
        }
    }

    /// Copies `chunk[from..to]` to the row, within its bound.
    #[inline]
    fn keep(&mut self, chunk: &[u8], from: usize, to: usize) -> Result<(), SkimError> {
        if to > from {
            if self.row.len() + (to - from) > self.max_row {
                return Err(SkimError {
                    offset: self.element_start,
                    message: format!(
                        "element {} is over {} bytes without its skipped values (a row is \
                         expected to be a few hundred; refusing to hold more)",
                        self.elements, self.max_row
                    ),
                });
            }
            self.row.extend_from_slice(&chunk[from..to]);
        }
        Ok(())
    }

    /// The element in `row` is complete: hands it over.
    fn complete<F>(&mut self, element: &mut F) -> Result<(), SkimError>
    where
        F: FnMut(&[u8]) -> Result<(), serde_json::Error>,
    {
        self.mode = Mode::After;
        let index = self.elements;
        self.elements += 1;
        let out = element(&self.row);
        if self.row.capacity() > ROW_CAPACITY_KEPT {
            self.row = Vec::new();
        }
        out.map_err(|e| SkimError {
            offset: self.element_start,
            message: format!(
                "element {index} does not decode: {e} (of the element without its skipped values)"
            ),
        })
    }

    /// An error at index `at` of the current chunk.
    fn error(&self, at: usize, message: String) -> SkimError {
        SkimError {
            offset: self.offset + at as u64,
            message,
        }
    }

    /// The body ended: Ok with the number of elements when it was exactly one array.
    pub fn finish(&self) -> Result<u64, SkimError> {
        let message = match self.mode {
            Mode::Done => return Ok(self.elements),
            Mode::Start if self.offset == 0 => "expected a JSON array, found an empty body".into(),
            Mode::Start => "expected a JSON array, found only whitespace".into(),
            Mode::First | Mode::Next | Mode::After => format!(
                "the body ended inside the array, after {} elements",
                self.elements
            ),
            Mode::Str | Mode::StrEscape | Mode::SkipStr | Mode::SkipStrEscape => format!(
                "the body ended inside a string of element {} (begun at byte {})",
                self.elements, self.element_start
            ),
            _ => format!(
                "the body ended inside element {} (begun at byte {})",
                self.elements, self.element_start
            ),
        };
        Err(SkimError {
            offset: self.offset,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const SKIP: &[&str] = &["members"];

    /// What the scanner should make of a value: every `members` value at any depth replaced
    /// by `[]`, `{}` or `null`.
    fn strip(v: &mut Value) {
        match v {
            Value::Object(o) => {
                for (k, val) in o.iter_mut() {
                    if SKIP.contains(&k.as_str()) {
                        *val = match val {
                            Value::Array(_) => Value::Array(Vec::new()),
                            Value::Object(_) => Value::Object(Default::default()),
                            _ => Value::Null,
                        };
                    } else {
                        strip(val);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }

    fn expected(doc: &[u8]) -> Vec<Value> {
        let Value::Array(mut rows) = serde_json::from_slice(doc).expect("a valid document") else {
            panic!("not an array")
        };
        rows.iter_mut().for_each(strip);
        rows
    }

    /// The rows (raw bytes) of `doc` fed in pieces cut at `cuts` (ascending).
    fn raw_rows(doc: &[u8], cuts: &[usize]) -> Result<Vec<String>, SkimError> {
        let mut skim = Skim::new(SKIP);
        let mut rows = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([doc.len()].iter()) {
            skim.feed(&doc[from..to], |row| {
                rows.push(String::from_utf8(row.to_vec()).expect("utf-8"));
                Ok(())
            })?;
            from = to;
        }
        let n = skim.finish()?;
        assert_eq!(n as usize, rows.len());
        Ok(rows)
    }

    fn rows(doc: &[u8], cuts: &[usize]) -> Result<Vec<Value>, SkimError> {
        let mut skim = Skim::new(SKIP);
        let mut out: Vec<Value> = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([doc.len()].iter()) {
            skim.feed_rows(&doc[from..to], &mut out, Vec::push)?;
            from = to;
        }
        skim.finish()?;
        Ok(out)
    }

    /// Every way of cutting `doc` in two, and in one-byte pieces, gives the rows of the whole.
    fn every_split(doc: &str) -> Vec<Value> {
        every_split_is(doc, expected(doc.as_bytes()))
    }

    fn every_split_is(doc: &str, want: Vec<Value>) -> Vec<Value> {
        let doc = doc.as_bytes();
        for cut in 0..=doc.len() {
            assert_eq!(
                rows(doc, &[cut]).expect("decodes"),
                want,
                "cut at {cut} of {}",
                String::from_utf8_lossy(doc)
            );
        }
        let bytes: Vec<usize> = (1..doc.len()).collect();
        assert_eq!(rows(doc, &bytes).expect("decodes"), want, "byte by byte");
        if doc.len() <= 160 {
            for a in 0..=doc.len() {
                for b in a..=doc.len() {
                    assert_eq!(rows(doc, &[a, b]).expect("decodes"), want, "cuts {a}, {b}");
                }
            }
        }
        want
    }

    /// Every way of cutting `doc` in two fails the same way.
    fn every_split_fails(doc: &str) -> SkimError {
        let doc = doc.as_bytes();
        let first = rows(doc, &[]).expect_err("fails");
        for cut in 0..=doc.len() {
            assert_eq!(rows(doc, &[cut]).expect_err("fails"), first, "cut at {cut}");
        }
        let bytes: Vec<usize> = (1..doc.len()).collect();
        assert_eq!(rows(doc, &bytes).expect_err("fails"), first, "byte by byte");
        first
    }

    #[test]
    fn escapes_and_brackets_inside_strings_are_text() {
        let want = every_split(
            r#"[{"a":"x\"y]}","members":[{"n":"q\\"},{"n":"}]\"["}],"b":"\\\"members\\"}]"#,
        );
        assert_eq!(want.len(), 1);
        assert_eq!(
            raw_rows(
                br#"[{"a":"x\"y]}","members":[{"n":"q\\"},{"n":"}]\"["}],"b":"\\"}]"#,
                &[]
            )
            .expect("decodes"),
            [r#"{"a":"x\"y]}","members":[],"b":"\\"}"#]
        );
    }

    #[test]
    fn members_as_a_string_value_is_kept_and_nested_members_keys_are_dropped() {
        let want = every_split(
            r#"[{"b":"members","c":{"d":{"members":{"x":[1,{"y":"]"}]},"e":["members"]}},"f":["members",{"members":[[],{}]}]}]"#,
        );
        assert_eq!(
            want[0],
            serde_json::json!({"b":"members","c":{"d":{"members":{},"e":["members"]}},"f":["members",{"members":[]}]})
        );
        let raw = raw_rows(br#"[["members",{"members":[1]}],"members"]"#, &[]).expect("ok");
        assert_eq!(raw, [r#"["members",{"members":[]}]"#, r#""members""#]);
    }

    #[test]
    fn whitespace_anywhere_is_allowed() {
        let doc = " \n[ \t{ \"members\" \n : \r [ [ ] , { \"members\" : 1 } ] , \"k\" : \"v\" } , [ ] , { \"members\"\t:\t\"x\" } , { } \n] \n ";
        let want = every_split(doc);
        assert_eq!(
            want,
            [
                serde_json::json!({"members": [], "k": "v"}),
                serde_json::json!([]),
                serde_json::json!({"members": null}),
                serde_json::json!({}),
            ]
        );
    }

    #[test]
    fn unicode_and_unicode_escapes_pass_through() {
        let want = every_split(
            r#"[{"name":"Zoë \u00e9 \ud83d\ude00 😀 \u0022","members":["\u0022",  "日本\\"],"k":"\\\\"},"\u005c"]"#,
        );
        assert_eq!(want[0]["name"], "Zoë é 😀 😀 \"");
        assert_eq!(want[1], "\\");
    }

    #[test]
    fn any_kind_of_element_and_of_skipped_value() {
        every_split(r#"[1,-2.5e3,true,null,"s\"t",[],{},[[["members"]]],0]"#);
        let want = every_split(
            r#"[{"members":"a\"b","x":1},{"members":12.5e-1 ,"y":2},{"members":true},{"members":null},{"members":{}},{"members":[]}]"#,
        );
        assert_eq!(want[0], serde_json::json!({"members": null, "x": 1}));
        assert_eq!(want[5], serde_json::json!({"members": []}));
        let raw = raw_rows(br#"[{"members":12,"y":2},{"members" : "}"}]"#, &[3, 17]).expect("ok");
        assert_eq!(raw, [r#"{"members":null,"y":2}"#, r#"{"members" : null}"#]);
    }

    #[test]
    fn keys_that_only_look_like_members_are_kept() {
        // A key spelled with an escape is not matched (keys are compared as raw bytes).
        let doc =
            r#"[{"member":[1],"membersx":[2],"Members":[3],"xmembers":[4],"memb\u0065rs":[5]}]"#;
        let whole: Vec<Value> = serde_json::from_str(doc).expect("valid");
        let want = every_split_is(doc, whole);
        assert_eq!(want[0]["members"], serde_json::json!([5]));
        assert_eq!(want[0]["member"], serde_json::json!([1]));
        assert_eq!(want[0]["membersx"], serde_json::json!([2]));
        assert_eq!(want[0]["Members"], serde_json::json!([3]));
        assert_eq!(want[0]["xmembers"], serde_json::json!([4]));
    }

    #[test]
    fn empty_arrays() {
        assert!(every_split("[]").is_empty());
        assert!(every_split(" [ \n ] ").is_empty());
        assert_eq!(every_split("[[],{},[[]]]").len(), 3);
    }

    #[test]
    fn a_document_that_is_not_one_array_is_refused_with_its_offset() {
        let cases: &[(&str, &str, u64)] = &[
            (r#"{"values": []}"#, "expected a JSON array, found '{'", 0),
            ("  null", "expected a JSON array, found 'n'", 2),
            ("", "expected a JSON array, found an empty body", 0),
            (" \n", "expected a JSON array, found only whitespace", 2),
            ("[] []", "trailing characters after the array ('[')", 3),
            ("[1] x", "trailing characters after the array ('x')", 4),
            ("[1,]", "expected an element of the array, found ']'", 3),
            ("[,1]", "expected an element of the array, found ','", 1),
            ("[1 2]", "expected ',' or ']' after element 0, found '2'", 3),
            (
                r#"[{"a":1}}]"#,
                "expected ',' or ']' after element 0, found '}'",
                8,
            ),
            ("[1", "the body ended inside element 0 (begun at byte 1)", 2),
            (
                r#"[{"a":1}"#,
                "the body ended inside the array, after 1 elements",
                8,
            ),
            (
                "[{},",
                "the body ended inside the array, after 1 elements",
                4,
            ),
            (
                r#"[{"a":"b"#,
                "the body ended inside a string of element 0 (begun at byte 1)",
                8,
            ),
            (
                r#"[{},{"members":["x\"#,
                "the body ended inside a string of element 1 (begun at byte 4)",
                19,
            ),
            (
                r#"[{"members":[1,[2]"#,
                "the body ended inside element 0 (begun at byte 1)",
                18,
            ),
            (
                r#"[{"members" "#,
                "the body ended inside element 0 (begun at byte 1)",
                12,
            ),
            (r#"[{"a":[1}]"#, "unbalanced brackets: '}' closes '['", 8),
            (
                r#"[{"members":[{]}]"#,
                "unbalanced brackets: ']' closes '{'",
                14,
            ),
            (
                r#"[{"members":{"a":[}]"#,
                "unbalanced brackets: '}' closes '['",
                18,
            ),
            (
                r#"[{"members" 1}]"#,
                "expected ':' after an object key, found '1'",
                12,
            ),
            (
                r#"[{"members":}]"#,
                "expected a value after an object key, found '}'",
                12,
            ),
        ];
        for &(doc, says, at) in cases {
            let e = every_split_fails(doc);
            assert_eq!(
                e,
                SkimError {
                    offset: at,
                    message: says.into()
                },
                "{doc}"
            );
            assert_eq!(e.to_string(), format!("{says} at byte {at}"));
        }
    }

    #[test]
    fn a_malformed_kept_element_fails_its_decode_with_the_element_named() {
        let e = every_split_fails(r#"[{"a":1},{"a" 1}]"#);
        assert_eq!(e.offset, 9);
        assert!(
            e.message
                .starts_with("element 1 does not decode: expected `:`"),
            "{e}"
        );
        // A row of the wrong shape for its type.
        let mut skim = Skim::new(SKIP);
        let mut out: Vec<crate::bitbucket::dto::V1GroupPrivilege> = Vec::new();
        let e = skim
            .feed_rows(br#"[{"repo":"a/b","members":[1]}]"#, &mut out, Vec::push)
            .expect_err("no privilege");
        assert_eq!(e.offset, 1);
        assert!(e.to_string().contains("missing field `privilege`"), "{e}");
    }

    #[test]
    fn a_kept_element_over_the_bound_is_refused_and_skipped_bytes_do_not_count() {
        let skim = || Skim::new(SKIP).with_max_row(32);
        let feed = |doc: &[u8], chunk: usize| -> Result<u64, SkimError> {
            let mut s = skim();
            for piece in doc.chunks(chunk) {
                s.feed(piece, |_| Ok(()))?;
            }
            s.finish()
        };
        let big = format!(r#"[{{"a":"{}"}}]"#, "x".repeat(40));
        for chunk in [1, 7, 1000] {
            let e = feed(big.as_bytes(), chunk).expect_err("too big");
            assert_eq!(e.offset, 1);
            assert!(e.message.contains("element 0 is over 32 bytes"), "{e}");
        }
        let skipped = format!(
            r#"[{{"members":["{}",{{"x":[{}]}}],"a":1}}]"#,
            "x".repeat(10_000),
            "1,".repeat(5_000) + "1"
        );
        for chunk in [1, 7, 1000] {
            assert_eq!(feed(skipped.as_bytes(), chunk).expect("fits"), 1);
        }
        // Exactly the bound fits.
        let exact = format!(r#"[{{"a":"{}"}}]"#, "x".repeat(32 - 8));
        assert_eq!(feed(exact.as_bytes(), 5).expect("fits"), 1);
    }

    #[test]
    fn nesting_is_bounded_in_skipped_values_too() {
        let doc = format!(r#"[{{"members":{}}}]"#, "[".repeat(MAX_DEPTH + 10));
        let e = rows(doc.as_bytes(), &[]).expect_err("too deep");
        assert!(e.message.contains("nested deeper than 512 levels"), "{e}");
        assert_eq!(e.offset, 12 + (MAX_DEPTH - 1) as u64);
        let ok = format!(
            r#"[{{"members":{}{}}}]"#,
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(rows(ok.as_bytes(), &[100]).expect("fits").len(), 1);
    }

    /// Pseudo-random documents of the shapes above.
    struct Gen(fastrand::Rng);

    impl Gen {
        fn ws(&mut self, out: &mut String) {
            for _ in 0..self.0.usize(0..3).saturating_sub(1) {
                out.push([' ', '\n', '\t', '\r'][self.0.usize(0..4)]);
            }
        }

        fn string(&mut self, out: &mut String) {
            const PIECES: &[&str] = &[
                "a",
                "members",
                "x y",
                "\\\"",
                "\\\\",
                "\\/",
                "\\n",
                "\\u00e9",
                "\\u0022",
                "\\ud83d\\ude00",
                "é",
                "日本",
                "😀",
                "{",
                "}",
                "[",
                "]",
                ":",
                ",",
                "\\\\\\\"",
            ];
            out.push('"');
            for _ in 0..self.0.usize(0..6) {
                out.push_str(PIECES[self.0.usize(0..PIECES.len())]);
            }
            out.push('"');
        }

        fn value(&mut self, out: &mut String, depth: usize) {
            let kinds = if depth > 4 { 4 } else { 7 };
            match self.0.usize(0..kinds) {
                0 => self.string(out),
                1 => out.push_str(["0", "-1", "12.5", "3e-2", "1E+3", "-0.25"][self.0.usize(0..6)]),
                2 => out.push_str(["true", "false"][self.0.usize(0..2)]),
                3 => out.push_str("null"),
                4 | 5 => {
                    const KEYS: &[&str] = &[
                        "members", "repo", "slug", "member", "membersx", "a\\\"b", "é", "m",
                    ];
                    out.push('{');
                    let mut keys: Vec<&str> = KEYS.to_vec();
                    self.0.shuffle(&mut keys);
                    keys.truncate(self.0.usize(0..5));
                    for (i, k) in keys.into_iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        self.ws(out);
                        out.push('"');
                        out.push_str(k);
                        out.push('"');
                        self.ws(out);
                        out.push(':');
                        self.ws(out);
                        self.value(out, depth + 1);
                        self.ws(out);
                    }
                    out.push('}');
                }
                _ => {
                    out.push('[');
                    for i in 0..self.0.usize(0..4) {
                        if i > 0 {
                            out.push(',');
                        }
                        self.ws(out);
                        self.value(out, depth + 1);
                        self.ws(out);
                    }
                    out.push(']');
                }
            }
        }

        fn document(&mut self) -> String {
            let mut out = String::new();
            self.ws(&mut out);
            out.push('[');
            for i in 0..self.0.usize(0..6) {
                if i > 0 {
                    out.push(',');
                }
                self.ws(&mut out);
                self.value(&mut out, 0);
                self.ws(&mut out);
            }
            out.push(']');
            self.ws(&mut out);
            out
        }
    }

    #[test]
    fn random_documents_in_random_chunks_decode_as_the_whole_without_members() {
        let mut g = Gen(fastrand::Rng::with_seed(0x5eed_b17b));
        let mut dropped = 0;
        for _ in 0..3000 {
            let doc = g.document();
            let want = expected(doc.as_bytes());
            dropped += doc.matches("\"members\"").count();
            for _ in 0..4 {
                let mut cuts = Vec::new();
                let mut at = 0;
                loop {
                    let most = [1, 3, 16, 200][g.0.usize(0..4)];
                    at += g.0.usize(1..=most);
                    if at >= doc.len() {
                        break;
                    }
                    cuts.push(at);
                }
                assert_eq!(
                    rows(doc.as_bytes(), &cuts).expect("decodes"),
                    want,
                    "{doc} cut at {cuts:?}"
                );
            }
            // Any prefix of a document (but the whole) is not a document.
            let cut = g.0.usize(0..doc.trim_end().len());
            assert!(
                rows(&doc.as_bytes()[..cut], &[]).is_err(),
                "{doc} cut at {cut}"
            );
        }
        assert!(dropped > 1000, "{dropped}");
    }
}

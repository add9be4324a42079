//! Reading the merged value tree (file + environment) into the raw, as-written section types
//! without stopping at the first mistake: each key is read on its own ([`Field`]), each table
//! lists the keys it does not have ([`Table`]), and every problem lands in one [`Problems`]
//! collector, named by its full key.

use ::config::{Value, ValueKind};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;

/// Every problem found in a configuration, each naming its full key
/// (`bitbucket.timeout_secs`, `grants[0].permission`, ...).
#[derive(Default)]
pub(super) struct Problems(Vec<(String, String)>);

impl Problems {
    /// `key: message`.
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl fmt::Display) {
        let key = key.into();
        let line = match key.as_str() {
            "" => message.to_string(),
            key => format!("{key}: {message}"),
        };
        self.0.push((key, line));
    }

    /// A sentence that names `key` itself (`source.url does not apply to kind "ldif"`).
    pub(super) fn say(&mut self, key: impl Into<String>, sentence: impl Into<String>) {
        self.0.push((key.into(), sentence.into()));
    }

    /// `key is required`, followed by `why` when there is one (`(the workspace slug)`).
    pub(super) fn required(&mut self, key: impl Into<String>, why: &str) {
        let key = key.into();
        let line = match why {
            "" => format!("{key} is required"),
            why => format!("{key} is required {why}"),
        };
        self.0.push((key, line));
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a problem was reported for `key` or any key below it (`credentials.admin`
    /// covers `credentials.admin.token`).
    pub(super) fn any_under(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| {
            k.strip_prefix(key)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }

    pub(super) fn into_messages(self) -> Vec<String> {
        self.0.into_iter().map(|(_, line)| line).collect()
    }
}

/// `prefix.key`, or `key` at the top level.
pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Whether the key holds a secret (or names its file): its value is never printed, not even in
/// a type error or a syntax error.
pub(super) fn looks_secret(key: &str) -> bool {
    let last = key
        .rsplit(['.', ']'])
        .next()
        .unwrap_or(key)
        .to_ascii_lowercase();
    ["token", "secret", "passw", "pwd", "key", "auth"]
        .iter()
        .any(|w| last.contains(w))
}

/// One key as written: absent, read as `T`, or why it could not be read. Reading a key never
/// fails the table around it, so one wrong type does not hide the next mistake.
#[derive(Default)]
pub(super) enum Field<T> {
    #[default]
    Absent,
    Set(T),
    Invalid(Invalid),
}

/// A value of the wrong type or an unknown word.
pub(super) struct Invalid {
    /// What was written, without the value (`a string`, `a table`).
    found: &'static str,
    /// What was expected, when the type is what is wrong.
    expected: Option<&'static str>,
    /// The reader's message; it may quote the value.
    message: String,
}

impl Invalid {
    fn describe(&self, key: &str) -> String {
        match (looks_secret(key), self.expected) {
            (false, _) => self.message.clone(),
            (true, Some(expected)) => format!("invalid type: {}, expected {expected}", self.found),
            (true, None) => format!("invalid value ({}, not shown)", self.found),
        }
    }
}

impl<T: DeserializeOwned> Field<T> {
    fn from_value(value: Value) -> Self {
        let found = found(&value);
        match value.try_deserialize::<T>() {
            Ok(v) => Field::Set(v),
            Err(e) => Field::Invalid(Invalid {
                found,
                expected: match &e {
                    ::config::ConfigError::Type { expected, .. } => Some(*expected),
                    _ => None,
                },
                message: e.to_string(),
            }),
        }
    }
}

impl<T> Field<T> {
    /// The value, if written and readable; a value that is not is reported under `key`.
    pub(super) fn get(self, key: &str, p: &mut Problems) -> Option<T> {
        match self {
            Field::Absent => None,
            Field::Set(v) => Some(v),
            Field::Invalid(e) => {
                p.push(key, e.describe(key));
                None
            }
        }
    }

    /// Whether the key was written at all (readable or not).
    pub(super) fn is_written(&self) -> bool {
        !matches!(self, Field::Absent)
    }
}

impl Field<String> {
    /// The trimmed text; empty text counts as absent.
    pub(super) fn text(self, key: &str, p: &mut Problems) -> Option<String> {
        non_empty(self.get(key, p))
    }
}

impl<T> Field<Word<T>> {
    /// The fixed word, if written and one of `T`'s.
    pub(super) fn word(self, key: &str, p: &mut Problems) -> Option<T> {
        self.get(key, p).map(|Word(w)| w)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through the `config` crate's value: it converts the strings that environment
        // overrides always are to the numbers and booleans asked for, even inside the
        // internally tagged tables whose content serde buffers.
        Value::deserialize(d).map(Field::from_value)
    }
}

pub(super) fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// A fixed word (`mode`, `permission`, `users_scope`...), read trimmed and case-insensitively
/// as the serde enum `T`; anything else is reported with the words allowed.
pub(super) struct Word<T>(pub(super) T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Word<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let word = text.trim().to_ascii_lowercase();
        T::deserialize(de::value::StrDeserializer::<WordError>::new(&word))
            .map(Word)
            .map_err(|e| match e.allowed {
                Some(allowed) => de::Error::custom(format!(
                    "{:?} is not one of {}",
                    text.trim(),
                    quoted(allowed)
                )),
                None => de::Error::custom(e.message),
            })
    }
}

/// `"a", "b", "c"`.
pub(super) fn quoted(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keeps the words serde's derive lists when a word is unknown.
#[derive(Debug)]
struct WordError {
    message: String,
    allowed: Option<&'static [&'static str]>,
}

impl fmt::Display for WordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WordError {}

impl de::Error for WordError {
    fn custom<M: fmt::Display>(message: M) -> Self {
        WordError {
            message: message.to_string(),
            allowed: None,
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        WordError {
            message: format!("unknown word {variant:?}"),
            allowed: Some(expected),
        }
    }
}

/// A raw section type: a struct of [`Field`]s (and nested [`Table`]s), or an internally tagged
/// enum of such structs.
pub(super) trait RawTable: DeserializeOwned {
    /// For a table tagged by `kind`: every kind, with the keys it has besides `kind`. Empty
    /// for a plain table, whose keys are its struct's fields.
    fn kinds() -> Vec<(&'static str, &'static [&'static str])> {
        Vec::new()
    }

    /// Added to the message for an unknown kind.
    const KIND_NOTE: &'static str = "";
}

/// A table as written, read as `T` when its key is known ([`Table::read`]).
pub(super) struct Table<T> {
    value: Option<Value>,
    raw: PhantomData<T>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            value: None,
            raw: PhantomData,
        }
    }
}

impl<'de, T> Deserialize<'de> for Table<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Table {
            value: Some(Value::deserialize(d)?),
            raw: PhantomData,
        })
    }
}

impl<T> Table<T> {
    /// An empty table where none was written (for sections that must be there).
    pub(super) fn or_empty(self) -> Self {
        Table {
            value: self
                .value
                .or_else(|| Some(Value::new(None, ::config::Map::<String, Value>::new()))),
            raw: PhantomData,
        }
    }
}

impl<T: RawTable> Table<T> {
    /// The table at `key` as `T`: `None` when it is absent or is no table. Keys `T` does not
    /// have are reported; for a tagged table also a missing or unknown `kind`, and keys that
    /// belong to another kind.
    pub(super) fn read(self, key: &str, p: &mut Problems) -> Option<T> {
        let mut value = self.value?;
        let ValueKind::Table(table) = &mut value.kind else {
            p.push(key, format!("expected a table, found {}", found(&value)));
            return None;
        };
        let mut written: Vec<String> = table.keys().cloned().collect();
        written.sort();
        let kinds = T::kinds();
        let known: Vec<&str> = if kinds.is_empty() {
            keys::<T>().to_vec()
        } else {
            let (kind, own) = read_kind(key, table, &kinds, T::KIND_NOTE, p)?;
            written.retain(|k| {
                let others: Vec<&str> = kinds
                    .iter()
                    .filter(|(other, keys)| *other != kind && keys.contains(&k.as_str()))
                    .map(|(other, _)| *other)
                    .collect();
                if own.contains(&k.as_str()) || others.is_empty() {
                    return true;
                }
                let k = join(key, k);
                p.say(
                    &k,
                    format!(
                        "{k} does not apply to kind {kind:?} (it is for {})",
                        quoted(&others)
                    ),
                );
                false
            });
            [&["kind"], own].concat()
        };
        for k in written.iter().filter(|k| !known.contains(&k.as_str())) {
            p.push(
                join(key, k),
                format!("unknown key (known here: {})", known.join(", ")),
            );
        }
        match value.try_deserialize::<T>() {
            Ok(raw) => Some(raw),
            Err(e) => {
                p.push(key, e);
                None
            }
        }
    }
}

/// The `kind` of a tagged table and the keys that kind has; a missing or unknown kind is
/// reported. serde matches the tag exactly, so the table's `kind` is replaced by the kind read
/// trimmed and case-insensitively.
fn read_kind(
    key: &str,
    table: &mut ::config::Map<String, Value>,
    kinds: &[(&'static str, &'static [&'static str])],
    note: &str,
    p: &mut Problems,
) -> Option<(&'static str, &'static [&'static str])> {
    let kind_key = join(key, "kind");
    let names: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
    let written = match table.get("kind").cloned().map(Value::into_string) {
        Some(Ok(k)) => k.trim().to_owned(),
        Some(Err(e)) => {
            p.push(kind_key, e);
            return None;
        }
        None => String::new(),
    };
    let lower = written.to_ascii_lowercase();
    match kinds.iter().find(|(k, _)| *k == lower) {
        Some(&(kind, own)) => {
            table.insert("kind".into(), Value::new(None, kind));
            Some((kind, own))
        }
        None if written.is_empty() => {
            p.required(kind_key, &format!("(one of {})", quoted(&names)));
            None
        }
        None => {
            p.push(
                kind_key,
                format!("{written:?} is not one of {}{note}", quoted(&names)),
            );
            None
        }
    }
}

/// What kind of value was written, without the value itself.
fn found(value: &Value) -> &'static str {
    match value.kind {
        ValueKind::Nil => "nothing",
        ValueKind::Boolean(_) => "a boolean",
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
            "an integer"
        }
        ValueKind::Float(_) => "a float",
        ValueKind::String(_) => "a string",
        ValueKind::Table(_) => "a table",
        ValueKind::Array(_) => "an array",
    }
}

/// The keys of a struct, as serde's derive lists them (it names them when it asks a
/// deserializer for a struct; this one only listens).
pub(super) fn keys<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Listen<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Listen<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("keys listed"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Listen(&mut fields));
    fields
}

//! TOML syntax errors, described without the offending line: the TOML parser's own message
//! quotes that line, and the line may hold an inline secret (`token = "...`).

use super::raw::looks_secret;
use super::ConfigError;
use std::error::Error;

/// The parser's message and position; any value of a secret-looking key that still shows in
/// the message is masked.
pub(super) fn error(
    origin: String,
    text: &str,
    cause: &(dyn Error + Send + Sync + 'static),
) -> ConfigError {
    let (message, at) = match cause.downcast_ref::<toml::de::Error>() {
        Some(e) => (
            e.message().to_owned(),
            e.span().map(|span| position(text, span.start)),
        ),
        // Not the parser's error (an integer out of range...): its text without any line that
        // looks like a quoted source line (`3 | token = ...`).
        None => (
            cause
                .to_string()
                .lines()
                .filter(|l| {
                    !l.trim_start()
                        .trim_start_matches(char::is_numeric)
                        .trim_start()
                        .starts_with('|')
                })
                .collect::<Vec<_>>()
                .join("; "),
            None,
        ),
    };
    ConfigError::Syntax {
        origin,
        line: at.map(|(line, _)| line),
        column: at.map(|(_, column)| column),
        message: redact(text, message.trim()),
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// `message` with every value of a secret-looking key of `text` masked.
fn redact(text: &str, message: &str) -> String {
    let mut message = message.to_owned();
    for value in secret_values(text) {
        message = message.replace(&value, "***SECRET***");
    }
    message
}

/// The values written for secret-looking keys, found leniently (the text is not valid TOML):
/// `key = "value`, `key = 'value'`, `key = value` anywhere on a line, inline tables included.
fn secret_values(text: &str) -> Vec<String> {
    let mut values = Vec::new();
    for line in text.lines() {
        for (eq, _) in line.match_indices('=') {
            let key: String = line[..eq]
                .trim_end()
                .trim_end_matches(['"', '\''])
                .chars()
                .rev()
                .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '-'))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if !looks_secret(&key) {
                continue;
            }
            let rest = line[eq + 1..].trim_start();
            let value = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let inner = &rest[1..];
                    inner.split(q).next().unwrap_or(inner)
                }
                _ => rest
                    .split([',', '}', '#', ' ', '\t'])
                    .next()
                    .unwrap_or(rest),
            };
            if !value.is_empty() {
                values.push(value.to_owned());
            }
        }
    }
    // Longest first, so a secret that contains a shorter one is masked whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_found_on_broken_lines_and_in_inline_tables() {
        let text = "token = \"abc\nx = 1\nadmin = { kind = \"oauth\", client_secret = 'def' }\nbind_password=ghi # c\n";
        let mut found = secret_values(text);
        found.sort();
        assert_eq!(found, ["abc", "def", "ghi"]);
        assert_eq!(
            redact(text, "near abc and def"),
            "near ***SECRET*** and ***SECRET***"
        );
    }

    #[test]
    fn positions_are_one_based() {
        assert_eq!(position("a\nbc = 1", 3), (2, 2));
        assert_eq!(position("", 0), (1, 1));
    }
}

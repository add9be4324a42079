//! LDIF (RFC 2849) content records: the same entries an LDAP search would return, from a file.
//!
//! Only content records are accepted: a change record (`changetype:`) or a URL value (`attr:< file:`)
//! is an error, as is any malformed line. The whole file is rejected on the first error so a
//! truncated or corrupted export never reads as a smaller directory.

use super::{Entry, SourceError};
use crate::model::Dn;
use base64::Engine;

/// Parses LDIF text into entries. `origin` names the file in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Entry>, SourceError> {
    let err = |line: usize, msg: String| SourceError::Ldif {
        origin: origin.to_owned(),
        line,
        message: msg,
    };
    // Unfold continuation lines (a line starting with one space continues the previous one).
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(cont) = raw.strip_prefix(' ') {
            match lines.last_mut() {
                Some((_, prev)) if !prev.is_empty() => prev.push_str(cont),
                _ => {
                    return Err(err(
                        i + 1,
                        "continuation line without a preceding line".into(),
                    ))
                }
            }
        } else {
            lines.push((i + 1, raw.to_owned()));
        }
    }

    let mut entries = Vec::new();
    let mut current: Option<Entry> = None;
    let mut seen_version = false;
    for (lineno, line) in lines {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if let Some(e) = current.take() {
                entries.push(e);
            }
            continue;
        }
        let (name, value) = parse_line(&line).map_err(|m| err(lineno, m))?;
        match current.as_mut() {
            None => {
                if name.eq_ignore_ascii_case("version") && !seen_version && entries.is_empty() {
                    seen_version = true;
                    if value != "1" {
                        return Err(err(lineno, format!("unsupported LDIF version {value:?}")));
                    }
                    continue;
                }
                if !name.eq_ignore_ascii_case("dn") {
                    return Err(err(
                        lineno,
                        format!("expected `dn:` to start an entry, found `{name}:`"),
                    ));
                }
                if value.trim().is_empty() {
                    return Err(err(lineno, "empty dn".into()));
                }
                current = Some(Entry::new(Dn::new(&value)));
            }
            Some(entry) => {
                if name.eq_ignore_ascii_case("changetype") {
                    return Err(err(
                        lineno,
                        format!("change records are not supported (entry {})", entry.dn),
                    ));
                }
                if name.eq_ignore_ascii_case("dn") {
                    return Err(err(
                        lineno,
                        "`dn:` inside an entry (missing blank line?)".into(),
                    ));
                }
                entry.push(&name, value);
            }
        }
    }
    if let Some(e) = current.take() {
        entries.push(e);
    }
    Ok(entries)
}

fn parse_line(line: &str) -> Result<(String, String), String> {
    let Some(colon) = line.find(':') else {
        return Err(format!("expected `attribute: value`, found {line:?}"));
    };
    let name = line[..colon].trim().to_owned();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ';' | '.'))
    {
        return Err(format!("invalid attribute name {name:?}"));
    }
    let rest = &line[colon + 1..];
    if let Some(b64) = rest.strip_prefix(':') {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("invalid base64 value for {name}: {e}"))?;
        // Binary values (AD objectGUID) are kept as hex so they stay comparable text.
        let value = match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => e.into_bytes().iter().map(|b| format!("{b:02x}")).collect(),
        };
        Ok((name, value))
    } else if rest.starts_with('<') {
        Err(format!("URL values (`{name}:<`) are not supported"))
    } else {
        Ok((
            name,
            rest.strip_prefix(' ').unwrap_or(rest).trim_end().to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_folding_base64_and_comments() {
        let text = "version: 1\n# people\ndn: uid=ann,ou=people,dc=x\nobjectClass: inetOrgPerson\ncn: Ann\n  Lee\nmail:: YW5uQHgudGVzdA==\n\ndn: cn=devs,ou=groups,dc=x\nmember: uid=ann,ou=people,dc=x\n";
        let e = parse(text, "t.ldif").expect("parses");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].first("cn"), Some("Ann Lee"));
        assert_eq!(e[0].first("MAIL"), Some("ann@x.test"));
        assert_eq!(e[1].get("member").len(), 1);
    }

    #[test]
    fn rejects_change_records_and_garbage_naming_the_line() {
        let e = parse("dn: cn=a,dc=x\nchangetype: modify\n", "f.ldif").expect_err("must fail");
        assert!(e.to_string().contains("f.ldif:2"), "{e}");
        let e = parse("dn: cn=a,dc=x\nthis is not ldif\n", "f.ldif").expect_err("must fail");
        assert!(e.to_string().contains("f.ldif:2"), "{e}");
        let e = parse("cn: a\n", "f.ldif").expect_err("must fail");
        assert!(e.to_string().contains("expected `dn:`"), "{e}");
    }
}

//! `source.kind = "csv"`: an HR export as CSV (RFC 4180: quoted fields with commas, quotes
//! and line breaks inside; a UTF-8 byte-order mark and CRLF line ends are accepted). The
//! header row names the columns; `[source.fields]` and `[source.attributes]` say which column
//! holds what (headers compare trimmed and case-insensitively).

use super::hr::Record;
use super::SourceError;
use crate::config::CsvSettings;

/// The records of a CSV text. Fails on a header the configuration names but the file lacks,
/// and on a malformed row (a quote that never closes, a row with another number of columns
/// than the header): a broken export is not a company of fewer people.
pub fn parse(text: &str, cfg: &CsvSettings, origin: &str) -> Result<Vec<Record>, SourceError> {
    let err = |message: String| SourceError::Hr {
        origin: origin.to_owned(),
        message,
    };
    // The reader strips a BOM only from bytes it reads itself; do it here to be sure the
    // first header is not "\u{feff}Employee ID".
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // RFC 4180 doubles every quote inside a quoted field, so a well-formed export has an even
    // number of them. The reader does not report a quote that never closes: it would read the
    // rest of the file as one field, and every later record would be gone without an error.
    if memchr::memchr_iter(b'"', text.as_bytes()).count() % 2 == 1 {
        let line = text
            .lines()
            .position(|l| l.bytes().filter(|&b| b == b'"').count() % 2 == 1)
            .map_or(0, |i| i + 1);
        return Err(err(format!(
            "an unbalanced quote (a field's quote that never closes, first odd line {line}); refusing to read a broken export"
        )));
    }
    let mut r = csv::ReaderBuilder::new()
        .delimiter(cfg.delimiter)
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = r
        .headers()
        .map_err(|e| err(format!("cannot read the header row: {e}")))?
        .clone();
    if headers.iter().all(str::is_empty) {
        return Err(SourceError::Empty {
            origin: origin.to_owned(),
        });
    }
    let column = |key: &str, name: &str| {
        headers
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                err(format!(
                    "{key} names column {name:?}, which the header row does not have (it has {})",
                    headers
                        .iter()
                        .map(|h| format!("{h:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    };
    let f = &cfg.hr.fields;
    let optional = |key: &str, name: &Option<String>| -> Result<Option<usize>, SourceError> {
        name.as_deref()
            .map(|n| column(&format!("source.fields.{key}"), n))
            .transpose()
    };
    let c_stable = column("source.fields.stable_id", &f.stable_id)?;
    let c_email = optional("email", &f.email)?;
    let c_account = optional("account_id", &f.account_id)?;
    let c_name = optional("display_name", &f.display_name)?;
    let c_status = optional("status", &f.status)?;
    let c_end = optional("termination_date", &f.termination_date)?;
    let c_attrs = f
        .attributes
        .iter()
        .map(|(a, n)| Ok((a.clone(), column(&format!("source.attributes.{a}"), n)?)))
        .collect::<Result<Vec<_>, SourceError>>()?;
    let mut out = Vec::new();
    let mut row = csv::StringRecord::new();
    let mut number = 0;
    loop {
        number += 1;
        match r.read_record(&mut row) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                return Err(err(format!(
                    "record {number} (line {line}): {e}; refusing to read a broken export"
                )));
            }
        }
        // A blank line at the end of an export reads as one empty field.
        if row.iter().all(str::is_empty) {
            continue;
        }
        let get = |c: Option<usize>| {
            c.and_then(|c| row.get(c))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        out.push(Record {
            number,
            stable_id: get(Some(c_stable)),
            email: get(c_email),
            account_id: get(c_account),
            display_name: get(c_name),
            status: get(c_status),
            termination_date: get(c_end),
            attributes: c_attrs
                .iter()
                .filter_map(|(a, c)| get(Some(*c)).map(|v| (a.clone(), v)))
                .collect(),
        });
    }
    Ok(out)
}

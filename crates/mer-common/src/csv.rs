//! Headed CSV tables (the sample lists, prediction files), read with the `csv` crate:
//! RFC 4180 quoting, a UTF-8 byte-order mark and blank lines tolerated, fields trimmed,
//! the header checked against the expected columns and every row's field count checked.
//! Each row keeps its line number, so that the reader's own checks can name it too.

use std::path::Path;

use crate::{Error, Result};

/// A data row: its 1-based line in the file and its trimmed fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The line the row starts on.
    pub line: u64,
    /// The fields, trimmed, as many as the header has columns.
    pub fields: Vec<String>,
}

/// Parses CSV `text` whose header must be exactly `header` (after trimming); `path` names
/// the file in errors. Rows whose fields are all empty are skipped.
pub fn read_table(text: &str, path: &Path, header: &[&str]) -> Result<Vec<Row>> {
    let err = |line: u64, message: String| Error::Csv {
        path: path.to_path_buf(),
        line,
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    // The line a record starts on, counted here: csv's own line numbers skip the blank
    // lines it passes over, and its record offsets may point at the line break before
    // the record (CRLF) or at the skipped blank lines.
    let bytes = text.as_bytes();
    let line_of = |byte: u64| {
        let mut end = (byte as usize).min(bytes.len());
        while end < bytes.len() && matches!(bytes[end], b'\r' | b'\n') {
            end += 1;
        }
        1 + bytes[..end].iter().filter(|&&b| b == b'\n').count() as u64
    };
    let mut records = rdr.records();
    let mut next = || -> Option<Result<Row>> {
        for rec in records.by_ref() {
            return Some(match rec {
                Ok(r) => {
                    let line = r.position().map_or(0, |p| line_of(p.byte()));
                    if r.iter().all(str::is_empty) {
                        continue;
                    }
                    Ok(Row {
                        line,
                        fields: r.iter().map(str::to_string).collect(),
                    })
                }
                Err(e) => {
                    let line = e.position().map_or(0, |p| line_of(p.byte()));
                    Err(err(line, format!("not valid CSV: {e}")))
                }
            });
        }
        None
    };
    let want = header.join(",");
    let head = next().ok_or_else(|| err(1, "empty file: no header".into()))??;
    if head.fields != header {
        return Err(err(
            head.line,
            format!("header `{}` is not `{want}`", head.fields.join(",")),
        ));
    }
    let mut rows = Vec::new();
    while let Some(row) = next() {
        let row = row?;
        if row.fields.len() != header.len() {
            return Err(err(
                row.line,
                format!(
                    "{} fields, expected {} ({want})",
                    row.fields.len(),
                    header.len()
                ),
            ));
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<Vec<Row>> {
        read_table(text, Path::new("t.csv"), &["a", "b", "c"])
    }

    #[test]
    fn reads_quotes_bom_blank_lines_and_line_numbers() {
        let rows = table("\u{feff}a, b ,c\r\n1,\"x,y\",\"q\"\"r\"\n\n  \n2, z ,3\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].fields, ["1", "x,y", "q\"r"]);
        assert_eq!((rows[1].line, rows[1].fields[1].as_str()), (5, "z"));
        let rows = table("a,b,c\n\n\n4,5,6\n").unwrap();
        assert_eq!(rows[0].line, 4);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let e = table("a,b\n1,2\n").unwrap_err().to_string();
        assert!(
            e.contains("t.csv, line 1") && e.contains("header `a,b`"),
            "{e}"
        );
        let e = table("a,b,c\n1,2,3\n4,5\n").unwrap_err().to_string();
        assert!(
            e.contains("line 3") && e.contains("2 fields, expected 3"),
            "{e}"
        );
        let e = table("").unwrap_err().to_string();
        assert!(e.contains("empty file"), "{e}");
    }
}

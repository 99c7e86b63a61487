//! Reading annotation workbooks (.xls, .xlsx) with calamine into plain cells.

use crate::{Error, Result};
use calamine::{open_workbook_auto, Data, Reader};
use std::path::{Path, PathBuf};

/// A cell's value, reduced to what the indexers need.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cell {
    Empty,
    Number(f64),
    Text(String),
}

impl Cell {
    /// The cell as trimmed text (integral numbers without a decimal point).
    pub(crate) fn text(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Number(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", *x as i64),
            Cell::Number(x) => format!("{x}"),
            Cell::Text(s) => s.trim().to_string(),
        }
    }

    /// A non-negative integer (a frame, subject or folder number); numeric text is accepted.
    /// The error says what the cell holds instead.
    pub(crate) fn integer(&self) -> Result<u32, String> {
        match self {
            Cell::Empty => Err("is empty".into()),
            Cell::Number(x) if x.fract() == 0.0 && *x >= 0.0 && *x <= u32::MAX as f64 => {
                Ok(*x as u32)
            }
            Cell::Number(x) => Err(format!("is not a whole number ({x})")),
            Cell::Text(s) => {
                let t = s.trim();
                t.parse::<u32>().map_err(|_| format!("is text `{t}`"))
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Cell::Empty => true,
            Cell::Text(s) => s.trim().is_empty(),
            Cell::Number(_) => false,
        }
    }
}

/// One worksheet: rows of cells with absolute positions (row 0 is the sheet's first row).
#[derive(Clone, Debug)]
pub(crate) struct Sheet {
    pub path: PathBuf,
    pub name: String,
    pub rows: Vec<Vec<Cell>>,
}

impl Sheet {
    /// The cell at (row, col), `Empty` outside the used range.
    pub(crate) fn cell(&self, row: usize, col: usize) -> &Cell {
        self.rows
            .get(row)
            .and_then(|r| r.get(col))
            .unwrap_or(&Cell::Empty)
    }
    /// The number of columns of the widest row.
    pub(crate) fn width(&self) -> usize {
        self.rows.iter().map(|r| r.len()).max().unwrap_or(0)
    }
    /// "workbook X, sheet `S`, row N" (N 1-based as in a spreadsheet program).
    pub(crate) fn at(&self, row: usize) -> String {
        format!(
            "{}, sheet `{}`, row {}",
            self.path.display(),
            self.name,
            row + 1
        )
    }
    pub(crate) fn missing_column(&self, column: impl Into<String>) -> Error {
        Error::MissingColumn {
            path: self.path.clone(),
            sheet: self.name.clone(),
            column: column.into(),
        }
    }
    /// Finds a header row among the first 20 rows (SAMM's follows a 13-row preamble) and the columns of the wanted headers
    /// (compared ignoring case, spaces and underscores; each header may have aliases).
    /// Returns the header row and one column per wanted header.
    pub(crate) fn header_columns(&self, wanted: &[&[&str]]) -> Result<(usize, Vec<usize>)> {
        let norm = |s: &str| {
            s.chars()
                .filter(|c| !c.is_whitespace() && *c != '_')
                .collect::<String>()
                .to_lowercase()
        };
        for r in 0..self.rows.len().min(20) {
            let heads: Vec<String> = self.rows[r].iter().map(|c| norm(&c.text())).collect();
            let find = |aliases: &[&str]| {
                aliases
                    .iter()
                    .find_map(|a| heads.iter().position(|h| *h == norm(a)))
            };
            // The header row is the first one naming the first wanted column.
            if find(wanted[0]).is_none() {
                continue;
            }
            let mut cols = Vec::new();
            for w in wanted {
                match find(w) {
                    Some(c) => cols.push(c),
                    None => return Err(self.missing_column(w[0])),
                }
            }
            return Ok((r, cols));
        }
        Err(self.missing_column(wanted[0][0]))
    }
}

/// Reads every sheet of a workbook (.xls or .xlsx), in workbook order.
pub(crate) fn read_workbook(path: &Path) -> Result<Vec<Sheet>> {
    let wb_err = |m: String| Error::Workbook {
        path: path.to_path_buf(),
        message: m,
    };
    let mut wb = open_workbook_auto(path).map_err(|e| wb_err(format!("cannot open: {e}")))?;
    let names = wb.sheet_names();
    if names.is_empty() {
        return Err(wb_err("no sheet".into()));
    }
    let mut sheets = Vec::with_capacity(names.len());
    for name in names {
        let range = wb
            .worksheet_range(&name)
            .map_err(|e| wb_err(format!("sheet `{name}`: {e}")))?;
        let mut rows = Vec::new();
        if let Some((r0, c0)) = range.start() {
            rows.resize(r0 as usize, Vec::new());
            for row in range.rows() {
                let mut cells = vec![Cell::Empty; c0 as usize];
                cells.extend(row.iter().map(convert));
                while cells.last().is_some_and(Cell::is_empty) {
                    cells.pop();
                }
                rows.push(cells);
            }
        }
        sheets.push(Sheet {
            path: path.to_path_buf(),
            name,
            rows,
        });
    }
    Ok(sheets)
}

fn convert(d: &Data) -> Cell {
    match d {
        Data::Empty => Cell::Empty,
        Data::Int(i) => Cell::Number(*i as f64),
        Data::Float(f) => Cell::Number(*f),
        Data::String(s) => Cell::Text(s.clone()),
        Data::Bool(b) => Cell::Text(b.to_string()),
        Data::DateTime(d) => Cell::Number(d.as_f64()),
        Data::DateTimeIso(s) | Data::DurationIso(s) => Cell::Text(s.clone()),
        Data::Error(e) => Cell::Text(format!("#{e:?}")),
    }
}

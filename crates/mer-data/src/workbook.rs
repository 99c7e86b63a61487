//! Spreadsheet writers for the synthetic database's annotation files and the tests:
//! `.xlsx` through rust_xlsxwriter, and `.xls` as BIFF8 records in an OLE2 compound file
//! (written here: no maintained crate writes BIFF8; the tests read it back with calamine
//! and with Python's xlrd). Only values: no formulas, and only the default style and
//! number format (General).

use crate::{Error, Result};
use mer_common::fs::write_atomic;
use std::io::{Cursor, Write};
use std::path::Path;

/// A value to write in a cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// No cell.
    Empty,
    /// A number (integers are stored as RK records in `.xls`, as Excel does).
    Number(f64),
    /// Text.
    Text(String),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Number(x)
    }
}
impl From<u32> for Value {
    fn from(x: u32) -> Self {
        Value::Number(x as f64)
    }
}
impl From<i32> for Value {
    fn from(x: i32) -> Self {
        Value::Number(x as f64)
    }
}

/// A worksheet to write: a name and rows of values (row 0 is the sheet's first row).
#[derive(Clone, Debug, PartialEq)]
pub struct SheetData {
    /// The sheet's name.
    pub name: String,
    /// The rows.
    pub rows: Vec<Vec<Value>>,
}

/// Why a workbook could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No sheets to write.
    #[error("a workbook needs at least one sheet")]
    NoSheets,
    /// A sheet name that the format cannot hold.
    #[error("sheet name `{0}` must have 1 to 31 characters")]
    SheetName(String),
    /// A sheet beyond the `.xls` limits.
    #[error("sheet `{0}` exceeds the .xls limits (65536 rows, 256 columns)")]
    TooLarge(String),
    /// A text cell longer than one BIFF8 LABEL record holds.
    #[error("text cell too long for a LABEL record in sheet `{0}`")]
    TextTooLong(String),
    /// rust_xlsxwriter refused the workbook.
    #[error("xlsx: {0}")]
    Xlsx(#[from] rust_xlsxwriter::XlsxError),
    /// Building the `.xls` compound file failed.
    #[error("xls compound file: {0}")]
    Cfb(#[from] std::io::Error),
}

/// The bytes of an `.xlsx` workbook holding `sheets`, written by rust_xlsxwriter: numbers
/// as numbers, text as shared strings, empty cells absent. Deterministic: the document's
/// creation time is fixed (2000-01-01), and rust_xlsxwriter stamps the zip entries with a
/// fixed date, so the same sheets give the same bytes.
pub fn xlsx_bytes(sheets: &[SheetData]) -> Result<Vec<u8>, WriteError> {
    use rust_xlsxwriter::{DocProperties, ExcelDateTime, Workbook};
    if sheets.is_empty() {
        return Err(WriteError::NoSheets);
    }
    let mut wb = Workbook::new();
    wb.set_properties(
        &DocProperties::new().set_creation_datetime(&ExcelDateTime::from_ymd(2000, 1, 1)?),
    );
    for sh in sheets {
        let ws = wb.add_worksheet();
        ws.set_name(&sh.name)?;
        for (r, row) in sh.rows.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                let (r, c) = (r as u32, c as u16);
                match v {
                    Value::Empty => {}
                    Value::Number(x) => {
                        ws.write_number(r, c, *x)?;
                    }
                    Value::Text(t) => {
                        ws.write_string(r, c, t)?;
                    }
                }
            }
        }
    }
    Ok(wb.save_to_buffer()?)
}

fn record(out: &mut Vec<u8>, typ: u16, data: &[u8]) {
    debug_assert!(data.len() <= 8224, "BIFF8 record too long");
    out.extend_from_slice(&typ.to_le_bytes());
    out.extend_from_slice(&(data.len() as u16).to_le_bytes());
    out.extend_from_slice(data);
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

fn bof(dt: u16) -> Vec<u8> {
    let mut d = Vec::with_capacity(16);
    d.extend_from_slice(&0x0600u16.to_le_bytes()); // BIFF8
    d.extend_from_slice(&dt.to_le_bytes());
    d.extend_from_slice(&0x0DBBu16.to_le_bytes()); // build
    d.extend_from_slice(&0x07CCu16.to_le_bytes()); // year
    d.extend_from_slice(&0u32.to_le_bytes());
    d.extend_from_slice(&0x06u32.to_le_bytes());
    d
}

/// WINDOW1: the workbook window (position and size in twips, as Excel writes them), tab
/// bar shown, first sheet active and selected.
fn window1() -> Vec<u8> {
    let mut d = Vec::with_capacity(18);
    for v in [
        0x01E0u16, // xWn
        0x005A,    // yWn
        0x3FCF,    // dxWn
        0x2A4E,    // dyWn
        0x0038,    // grbit: horizontal and vertical scroll bars, sheet tabs shown
        0,         // itabCur: active sheet
        0,         // itabFirst: first tab shown
        1,         // ctabSel: selected sheets
        0x0258,    // wTabRatio: 600/1000 of the width for the tabs
    ] {
        d.extend_from_slice(&v.to_le_bytes());
    }
    d
}

/// FONT: Arial 10 pt, regular, automatic colour.
fn font_arial_10() -> Vec<u8> {
    let name = "Arial";
    let mut d = Vec::with_capacity(16 + name.len());
    d.extend_from_slice(&200u16.to_le_bytes()); // dyHeight: 10 pt in twips
    d.extend_from_slice(&0u16.to_le_bytes()); // grbit: not italic, struck out...
    d.extend_from_slice(&0x7FFFu16.to_le_bytes()); // icv: window text colour
    d.extend_from_slice(&400u16.to_le_bytes()); // bls: normal weight
    d.extend_from_slice(&0u16.to_le_bytes()); // sss: no super/subscript
    d.push(0); // uls: no underline
    d.push(0); // bFamily: unknown
    d.push(0); // bCharSet: ANSI
    d.push(0); // reserved
    d.push(name.len() as u8); // ShortXLUnicodeString: cch,
    d.push(0); // fHighByte = 0: 8-bit characters
    d.extend_from_slice(name.as_bytes());
    d
}

/// XF (BIFF8, 20 bytes) with number format 0 (General), bottom-aligned, no borders, no
/// fill. A style XF (`style`) has no parent (0xFFF) and `used` lists the attribute groups
/// it leaves undefined; a cell XF has parent style XF 0 and `used` lists the groups it
/// sets itself (none: all from the parent).
fn xf(font: u16, style: bool, used: u8) -> Vec<u8> {
    let mut d = Vec::with_capacity(20);
    d.extend_from_slice(&font.to_le_bytes()); // ifnt
    d.extend_from_slice(&0u16.to_le_bytes()); // ifmt: General
    let kind: u16 = if style {
        0x0001 | 0x0004 | (0x0FFF << 4) // locked, fStyle, ixfParent = none
    } else {
        0x0001 // locked, cell XF, ixfParent = 0 (Normal)
    };
    d.extend_from_slice(&kind.to_le_bytes());
    d.push(0x20); // alc = general, no wrap, alcV = bottom
    d.push(0); // trot: no rotation
    d.push(0); // indent 0, no shrink, context reading order
    d.push(used); // fAtrNum..fAtrProt in bits 2-7
    d.extend_from_slice(&0u32.to_le_bytes()); // no border lines, colours 0, no diagonal
    d.extend_from_slice(&0u32.to_le_bytes()); // no border colours, no fill pattern
    d.extend_from_slice(&(0x40u16 | (0x41 << 7)).to_le_bytes()); // fill: system fg/bg
    d
}

/// The BIFF8 `Workbook` stream of `sheets`: the workbook globals (BOF, CODEPAGE, WINDOW1,
/// 5 FONTs, the 15 built-in style XFs and the default cell XF 15, the STYLE record of
/// "Normal", one BOUNDSHEET per sheet, EOF), then per sheet BOF, DIMENSIONS, RK/NUMBER/
/// LABEL cells (all with XF 15), EOF.
pub fn biff8_stream(sheets: &[SheetData]) -> Result<Vec<u8>, WriteError> {
    if sheets.is_empty() {
        return Err(WriteError::NoSheets);
    }
    let mut bodies = Vec::new();
    for sh in sheets {
        if sh.rows.len() > 65_536 || sh.rows.iter().any(|r| r.len() > 256) {
            return Err(WriteError::TooLarge(sh.name.clone()));
        }
        let mut b = Vec::new();
        record(&mut b, 0x0809, &bof(0x0010));
        let ncols = sh.rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut dim = Vec::new();
        dim.extend_from_slice(&0u32.to_le_bytes());
        dim.extend_from_slice(&(sh.rows.len() as u32).to_le_bytes());
        dim.extend_from_slice(&0u16.to_le_bytes());
        dim.extend_from_slice(&(ncols as u16).to_le_bytes());
        dim.extend_from_slice(&0u16.to_le_bytes());
        record(&mut b, 0x0200, &dim);
        for (r, row) in sh.rows.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                let mut d = Vec::new();
                d.extend_from_slice(&(r as u16).to_le_bytes());
                d.extend_from_slice(&(c as u16).to_le_bytes());
                d.extend_from_slice(&0x000Fu16.to_le_bytes()); // default cell XF
                match v {
                    Value::Empty => continue,
                    Value::Number(x) if x.fract() == 0.0 && x.abs() < (1 << 29) as f64 => {
                        let rk = ((*x as i32 as u32) << 2) | 0x2; // fInt, not x100
                        d.extend_from_slice(&rk.to_le_bytes());
                        record(&mut b, 0x027E, &d);
                    }
                    Value::Number(x) => {
                        d.extend_from_slice(&x.to_le_bytes());
                        record(&mut b, 0x0203, &d);
                    }
                    Value::Text(s) => {
                        let n = s.encode_utf16().count();
                        if n > 4000 {
                            return Err(WriteError::TextTooLong(sh.name.clone()));
                        }
                        d.extend_from_slice(&(n as u16).to_le_bytes());
                        d.push(1); // fHighByte: UTF-16LE
                        d.extend_from_slice(&utf16(s));
                        record(&mut b, 0x0204, &d);
                    }
                }
            }
        }
        record(&mut b, 0x000A, &[]);
        bodies.push(b);
    }
    // The globals first, each BOUNDSHEET with a placeholder stream offset, patched once
    // the globals' length (where the first sheet's BOF goes) is known.
    let mut out = Vec::new();
    record(&mut out, 0x0809, &bof(0x0005));
    record(&mut out, 0x0042, &1200u16.to_le_bytes()); // CODEPAGE: UTF-16
    record(&mut out, 0x003D, &window1());
    // Fonts 0-3 and 5 (index 4 is never written: readers skip it).
    for _ in 0..5 {
        record(&mut out, 0x0031, &font_arial_10());
    }
    // Style XFs 0-14: 0 is "Normal" (all attributes defined); 1-14 (Excel's outline
    // styles, fonts 1 and 2 for the first four) define only the font.
    record(&mut out, 0x00E0, &xf(0, true, 0x00));
    for i in 1..15u16 {
        let font = match i {
            1 | 2 => 1,
            3 | 4 => 2,
            _ => 0,
        };
        record(&mut out, 0x00E0, &xf(font, true, 0xF4));
    }
    // XF 15: the cells' default, everything from "Normal".
    record(&mut out, 0x00E0, &xf(0, false, 0x00));
    // STYLE: built-in style 0 ("Normal", level 0xFF) is XF 0.
    record(&mut out, 0x0293, &[0x00, 0x80, 0x00, 0xFF]);
    let mut offsets = Vec::with_capacity(sheets.len());
    for sh in sheets {
        let name = sh.name.encode_utf16().count();
        if name == 0 || name > 31 {
            return Err(WriteError::SheetName(sh.name.clone()));
        }
        offsets.push(out.len() + 4); // where this record's lbPlyPos goes
        let mut d = Vec::new();
        d.extend_from_slice(&0u32.to_le_bytes()); // lbPlyPos, patched below
        d.push(0); // visible
        d.push(0); // worksheet
        d.push(name as u8);
        d.push(1); // UTF-16LE
        d.extend_from_slice(&utf16(&sh.name));
        record(&mut out, 0x0085, &d);
    }
    record(&mut out, 0x000A, &[]);
    let globals_len = out.len();
    let mut pos = globals_len;
    for (&at, body) in offsets.iter().zip(&bodies) {
        out[at..at + 4].copy_from_slice(&(pos as u32).to_le_bytes());
        pos += body.len();
    }
    for (&at, b) in offsets.iter().zip(bodies) {
        debug_assert_eq!(
            u32::from_le_bytes(out[at..at + 4].try_into().unwrap()) as usize,
            out.len(),
            "BOUNDSHEET offset"
        );
        out.extend_from_slice(&b);
    }
    debug_assert_eq!(out.len(), pos);
    Ok(out)
}

/// The bytes of an `.xls` workbook (BIFF8 in a version-3 compound file) holding `sheets`.
pub fn xls_bytes(sheets: &[SheetData]) -> Result<Vec<u8>, WriteError> {
    let stream = biff8_stream(sheets)?;
    let mut cf = cfb::CompoundFile::create_with_version(cfb::Version::V3, Cursor::new(Vec::new()))?;
    {
        let mut s = cf.create_stream("/Workbook")?;
        s.write_all(&stream)?;
        s.flush()?;
    }
    cf.flush()?;
    Ok(cf.into_inner().into_inner())
}

fn write_with(path: &Path, encode: impl FnOnce() -> Result<Vec<u8>, WriteError>) -> Result<()> {
    let bytes = encode().map_err(|error| Error::WorkbookWrite {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(write_atomic(path, &bytes)?)
}

/// Writes an `.xlsx` workbook atomically.
pub fn write_xlsx(path: &Path, sheets: &[SheetData]) -> Result<()> {
    write_with(path, || xlsx_bytes(sheets))
}

/// Writes an `.xls` (BIFF8) workbook atomically.
pub fn write_xls(path: &Path, sheets: &[SheetData]) -> Result<()> {
    write_with(path, || xls_bytes(sheets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sheet::{read_workbook, Cell};

    fn sample_sheets() -> Vec<SheetData> {
        vec![
            SheetData {
                name: "Sheet1".into(),
                rows: vec![
                    vec![
                        "Subject".into(),
                        "Filename".into(),
                        Value::Empty,
                        "OnsetF".into(),
                    ],
                    vec![1.into(), "EP01_5".into(), Value::Empty, 113.into()],
                    vec![
                        12.into(),
                        "EP13_10".into(),
                        Value::Empty,
                        Value::Number(2.5),
                    ],
                    vec![Value::Empty, "\\".into(), Value::Empty, "/".into()],
                ],
            },
            SheetData {
                name: "naming rule1".into(),
                rows: vec![vec![15.into(), "s15 <&> é".into(), 1.into()]],
            },
        ]
    }

    fn check_round_trip(ext: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("w.{ext}"));
        let sheets = sample_sheets();
        if ext == "xls" {
            write_xls(&path, &sheets).unwrap()
        } else {
            write_xlsx(&path, &sheets).unwrap()
        }
        let back = read_workbook(&path).unwrap();
        assert_eq!(back.len(), 2);
        for (w, r) in sheets.iter().zip(&back) {
            assert_eq!(w.name, r.name);
            for (i, row) in w.rows.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    let want = match v {
                        Value::Empty => Cell::Empty,
                        Value::Number(x) => Cell::Number(*x),
                        Value::Text(s) => Cell::Text(s.clone()),
                    };
                    assert_eq!(r.cell(i, j), &want, "{ext} sheet {} ({i},{j})", w.name);
                }
            }
        }
    }

    #[test]
    fn xls_round_trips_through_calamine() {
        check_round_trip("xls");
    }

    #[test]
    fn xlsx_round_trips_through_calamine() {
        check_round_trip("xlsx");
    }

    #[test]
    fn xls_is_deterministic() {
        assert_eq!(
            xls_bytes(&sample_sheets()).unwrap(),
            xls_bytes(&sample_sheets()).unwrap()
        );
    }

    #[test]
    fn xlsx_is_deterministic() {
        assert_eq!(
            xlsx_bytes(&sample_sheets()).unwrap(),
            xlsx_bytes(&sample_sheets()).unwrap()
        );
    }
}

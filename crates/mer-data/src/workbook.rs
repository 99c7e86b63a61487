//! Minimal spreadsheet writers for the synthetic database's annotation files and the
//! tests' fixtures: `.xlsx` (OOXML parts in a zip, shared strings) and `.xls` (BIFF8
//! records in an OLE2 compound file). Only values: no styles, formulas or formats.
//! calamine reads both back.

use crate::util::write_atomic;
use crate::{Error, Result};
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

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

fn col_name(mut c: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (c % 26) as u8);
        if c < 26 {
            break;
        }
        c = c / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).expect("ASCII")
}

/// The bytes of an `.xlsx` workbook holding `sheets`.
pub fn xlsx_bytes(sheets: &[SheetData]) -> Result<Vec<u8>> {
    const HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#;
    const MAIN: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
    const REL: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    const PKG_REL: &str = "http://schemas.openxmlformats.org/package/2006/relationships";
    let mut strings: Vec<String> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut sheet_xml = Vec::new();
    for sh in sheets {
        let mut x = format!(r#"{HEAD}<worksheet xmlns="{MAIN}"><sheetData>"#);
        for (r, row) in sh.rows.iter().enumerate() {
            x.push_str(&format!(r#"<row r="{}">"#, r + 1));
            for (c, v) in row.iter().enumerate() {
                let at = format!("{}{}", col_name(c), r + 1);
                match v {
                    Value::Empty => {}
                    Value::Number(n) => x.push_str(&format!(r#"<c r="{at}"><v>{n}</v></c>"#)),
                    Value::Text(s) => {
                        let i = *index.entry(s.clone()).or_insert_with(|| {
                            strings.push(s.clone());
                            strings.len() - 1
                        });
                        x.push_str(&format!(r#"<c r="{at}" t="s"><v>{i}</v></c>"#));
                    }
                }
            }
            x.push_str("</row>");
        }
        x.push_str("</sheetData></worksheet>");
        sheet_xml.push(x);
    }
    let mut types = format!(
        r#"{HEAD}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>"#
    );
    let mut wb = format!(r#"{HEAD}<workbook xmlns="{MAIN}" xmlns:r="{REL}"><sheets>"#);
    let mut rels = format!(r#"{HEAD}<Relationships xmlns="{PKG_REL}">"#);
    for (i, sh) in sheets.iter().enumerate() {
        let n = i + 1;
        types.push_str(&format!(r#"<Override PartName="/xl/worksheets/sheet{n}.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>"#));
        wb.push_str(&format!(
            r#"<sheet name="{}" sheetId="{n}" r:id="rId{n}"/>"#,
            xml_escape(&sh.name)
        ));
        rels.push_str(&format!(
            r#"<Relationship Id="rId{n}" Type="{REL}/worksheet" Target="worksheets/sheet{n}.xml"/>"#
        ));
    }
    types.push_str("</Types>");
    wb.push_str("</sheets></workbook>");
    rels.push_str(&format!(
        r#"<Relationship Id="rId{}" Type="{REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#,
        sheets.len() + 1
    ));
    let mut sst = format!(
        r#"{HEAD}<sst xmlns="{MAIN}" count="{0}" uniqueCount="{0}">"#,
        strings.len()
    );
    for s in &strings {
        sst.push_str(&format!(
            r#"<si><t xml:space="preserve">{}</t></si>"#,
            xml_escape(s)
        ));
    }
    sst.push_str("</sst>");
    let root_rels = format!(
        r#"{HEAD}<Relationships xmlns="{PKG_REL}"><Relationship Id="rId1" Type="{REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#
    );

    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut parts: Vec<(String, String)> = vec![
        ("[Content_Types].xml".into(), types),
        ("_rels/.rels".into(), root_rels),
        ("xl/workbook.xml".into(), wb),
        ("xl/_rels/workbook.xml.rels".into(), rels),
        ("xl/sharedStrings.xml".into(), sst),
    ];
    for (i, x) in sheet_xml.into_iter().enumerate() {
        parts.push((format!("xl/worksheets/sheet{}.xml", i + 1), x));
    }
    let zerr = |e: &dyn std::fmt::Display| Error::Invalid(format!("writing xlsx zip: {e}"));
    for (name, body) in parts {
        zip.start_file(name, opts).map_err(|e| zerr(&e))?;
        zip.write_all(body.as_bytes()).map_err(|e| zerr(&e))?;
    }
    Ok(zip.finish().map_err(|e| zerr(&e))?.into_inner())
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

/// The BIFF8 `Workbook` stream of `sheets` (BOF, CODEPAGE, BOUNDSHEET, EOF; then per sheet
/// BOF, DIMENSIONS, RK/NUMBER/LABEL cells, EOF).
pub fn biff8_stream(sheets: &[SheetData]) -> Result<Vec<u8>> {
    if sheets.is_empty() {
        return Err(Error::Invalid("a workbook needs at least one sheet".into()));
    }
    let mut bodies = Vec::new();
    for sh in sheets {
        if sh.rows.len() > 65_536 || sh.rows.iter().any(|r| r.len() > 256) {
            return Err(Error::Invalid(format!(
                "sheet `{}` exceeds the .xls limits (65536 rows, 256 columns)",
                sh.name
            )));
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
                            return Err(Error::Invalid(format!(
                                "text cell too long for a LABEL record in sheet `{}`",
                                sh.name
                            )));
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
    let boundsheet_len = |sh: &SheetData| 4 + 6 + 2 + 2 * sh.name.encode_utf16().count();
    let globals_len = (4 + 16) + (4 + 2) + sheets.iter().map(boundsheet_len).sum::<usize>() + 4;
    let mut out = Vec::new();
    record(&mut out, 0x0809, &bof(0x0005));
    record(&mut out, 0x0042, &1200u16.to_le_bytes()); // CODEPAGE: UTF-16
    let mut pos = globals_len;
    for (sh, body) in sheets.iter().zip(&bodies) {
        let name = sh.name.encode_utf16().count();
        if name == 0 || name > 31 {
            return Err(Error::Invalid(format!(
                "sheet name `{}` must have 1 to 31 characters",
                sh.name
            )));
        }
        let mut d = Vec::new();
        d.extend_from_slice(&(pos as u32).to_le_bytes());
        d.push(0); // visible
        d.push(0); // worksheet
        d.push(name as u8);
        d.push(1); // UTF-16LE
        d.extend_from_slice(&utf16(&sh.name));
        record(&mut out, 0x0085, &d);
        pos += body.len();
    }
    record(&mut out, 0x000A, &[]);
    debug_assert_eq!(out.len(), globals_len);
    for b in bodies {
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// The bytes of an `.xls` workbook (BIFF8 in a version-3 compound file) holding `sheets`.
pub fn xls_bytes(sheets: &[SheetData]) -> Result<Vec<u8>> {
    let stream = biff8_stream(sheets)?;
    let cerr = |e: std::io::Error| Error::Invalid(format!("writing the xls compound file: {e}"));
    let mut cf = cfb::CompoundFile::create_with_version(cfb::Version::V3, Cursor::new(Vec::new()))
        .map_err(cerr)?;
    {
        let mut s = cf.create_stream("/Workbook").map_err(cerr)?;
        s.write_all(&stream).map_err(cerr)?;
        s.flush().map_err(cerr)?;
    }
    cf.flush().map_err(cerr)?;
    Ok(cf.into_inner().into_inner())
}

/// Writes an `.xlsx` workbook atomically.
pub fn write_xlsx(path: &Path, sheets: &[SheetData]) -> Result<()> {
    write_atomic(path, &xlsx_bytes(sheets)?)
}

/// Writes an `.xls` (BIFF8) workbook atomically.
pub fn write_xls(path: &Path, sheets: &[SheetData]) -> Result<()> {
    write_atomic(path, &xls_bytes(sheets)?)
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
    fn column_names() {
        assert_eq!(col_name(0), "A");
        assert_eq!(col_name(25), "Z");
        assert_eq!(col_name(26), "AA");
        assert_eq!(col_name(27), "AB");
    }
}

//! The project's BIFF8 `.xls` writer (`mer_data::workbook`, used for the synthetic
//! database's CASME workbook) read by a reader other than calamine: Python's `xlrd`.
//! Every cell of every sheet is compared (numbers bit for bit). Without `xlrd`
//! (`python3 -m pip install xlrd`; `scripts/test.sh` installs it) the test prints why and
//! skips, except under `CI=true`, where it fails.

use mer_data::workbook::{write_xls, SheetData, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Prints the workbook as tab-separated lines (texts and names as UTF-8 hex, numbers as
/// the hex of their little-endian f64 bytes; the sheet line also has xlrd's view of the
/// DIMENSIONS record); xlrd's warnings go to stderr. `lenient` (second argument) is a
/// diagnosis only: xlrd then accepts cells whose XF record is missing, as numbers or text.
const DUMP: &str = r#"
import collections, struct, sys, xlrd, xlrd.book
if sys.argv[2] == "lenient":
    init = xlrd.book.Book.__init__
    def lenient_init(self, *a, **k):
        init(self, *a, **k)
        self._xf_index_to_xl_type_map = collections.defaultdict(
            lambda: xlrd.XL_CELL_NUMBER, self._xf_index_to_xl_type_map)
    xlrd.book.Book.__init__ = lenient_init
book = xlrd.open_workbook(sys.argv[1], logfile=sys.stderr)
print("book", book.biff_version, book.encoding, book.nsheets, sep="\t")
kinds = {xlrd.XL_CELL_EMPTY: "empty", xlrd.XL_CELL_BLANK: "blank",
         xlrd.XL_CELL_TEXT: "text", xlrd.XL_CELL_NUMBER: "number"}
for i in range(book.nsheets):
    s = book.sheet_by_index(i)
    print("sheet", i, s.name.encode("utf-8").hex(), s.nrows, s.ncols,
          getattr(s, "_dimnrows", -1), getattr(s, "_dimncols", -1), sep="\t")
    for r in range(s.nrows):
        for c in range(s.ncols):
            cell = s.cell(r, c)
            kind = kinds.get(cell.ctype, "ctype%d" % cell.ctype)
            if kind == "text":
                payload = cell.value.encode("utf-8").hex()
            elif kind == "number":
                payload = struct.pack("<d", cell.value).hex()
            else:
                payload = repr(cell.value)
            print("cell", i, r, c, kind, payload, sep="\t")
"#;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `Err(why)` when `python3` cannot import `xlrd`.
fn xlrd_available() -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import xlrd"])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "python3 cannot import xlrd ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn num_hex(x: f64) -> String {
    hex_bytes(&x.to_le_bytes())
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn sheets() -> Vec<SheetData> {
    let t = |s: &str| Value::Text(s.into());
    let n = Value::Number;
    let e = || Value::Empty;
    let long: String = (0..1500)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    // A CASME-like sheet: a header with blank columns, the releases' `\` and `/` marks,
    // integers (RK records), integers outside the RK range and fractions (NUMBER records).
    let casme = SheetData {
        name: "Sheet1".into(),
        rows: vec![
            vec![
                t("Subject"),
                t("Filename"),
                e(),
                t("OnsetF"),
                t("ApexF1"),
                t("ApexF2"),
                t("OffsetF"),
                e(),
                t("Onset"),
                t("Total"),
                t("AU"),
                t("Emotion"),
            ],
            vec![
                n(1.0),
                t("EP01_5"),
                e(),
                n(113.0),
                n(121.0),
                t("\\"),
                n(130.0),
                e(),
                n(133.0),
                n(283.0),
                t("12"),
                t("happiness"),
            ],
            vec![
                n(19.0),
                t("EP13_10"),
                e(),
                n(40.0),
                t("/"),
                e(),
                n(50.0),
                e(),
                n(83.333_333_333_333_33),
                n(166.666_666_666_666_66),
                t("1+2"),
                t("comtempt"),
            ],
            vec![],
            vec![
                n(-7.0),
                n(0.0),
                n(536_870_911.0),
                n(-536_870_911.0),
                n(536_870_912.0),
                n(-536_870_912.0),
                n(4_294_967_296.0),
                n(1e15),
                n(2.5),
                n(0.1),
                n(-1e-300),
                n(1e300),
            ],
            vec![
                n(f64::MAX),
                n(f64::MIN_POSITIVE),
                n(5e-324),
                n(1.0 / 3.0),
                n(-2.75),
                n(123_456.789),
                n(f64::EPSILON),
                n(-0.5),
            ],
            vec![
                t(""),
                t(" padded "),
                t("two\nlines"),
                t("tab\there"),
                t("quote \" and '"),
                t("é µ ß"),
                t("微表情"),
                t("😀 astral"),
                t(&long),
            ],
        ],
    };
    let rule1 = SheetData {
        name: "naming rule1".into(),
        rows: (0..4u32)
            .map(|p| {
                vec![
                    n(f64::from(15 + p)),
                    t(&format!("s{}", 15 + p)),
                    n(f64::from(p + 1)),
                ]
            })
            .collect(),
    };
    // A larger sheet: rows past 255, columns past Z, a mix with holes.
    let big = SheetData {
        name: "big 300x30".into(),
        rows: (0..300usize)
            .map(|r| {
                (0..30usize)
                    .map(|c| match (r * 30 + c) % 13 {
                        _ if r == 299 || c == 29 => n((r * 1000 + c) as f64),
                        0 => e(),
                        3 | 7 => t(&format!("r{r}c{c}")),
                        5 => n(r as f64 + c as f64 / 8.0),
                        _ => n((r * 1000 + c) as f64),
                    })
                    .collect()
            })
            .collect(),
    };
    let unicode = SheetData {
        name: "微表情 ü".into(),
        rows: vec![vec![e(), e(), t("C1 only")], vec![n(42.0)]],
    };
    vec![casme, rule1, big, unicode]
}

/// Runs the dump; `Err` holds xlrd's complaint (a failure or anything on stderr).
fn dump(path: &Path, mode: &str) -> Result<String, String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(DUMP)
        .arg(path)
        .arg(mode)
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        let last = stderr.lines().last().unwrap_or("").to_string();
        return Err(format!("xlrd fails ({last}):\n{stderr}"));
    }
    // No warning (file size, OLE2 inconsistencies...) either.
    if !stderr.is_empty() {
        return Err(format!("xlrd complains: {stderr}"));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

/// Compares xlrd's dump with the sheets written: every cell, names, sizes, DIMENSIONS.
/// Returns the number of cells compared, or the first difference.
fn compare(dump: &str, sheets: &[SheetData]) -> Result<usize, String> {
    let mut lines = dump.lines().map(|l| l.split('\t').collect::<Vec<_>>());
    let book = lines.next().ok_or("no output")?;
    let want_book = ["book", "80", "utf_16_le", &sheets.len().to_string()];
    if book != want_book {
        return Err(format!(
            "book {book:?}, expected {want_book:?} (BIFF8, CODEPAGE 1200)"
        ));
    }
    let mut dims = Vec::new();
    let mut cells: BTreeMap<(usize, usize, usize), (String, String)> = BTreeMap::new();
    for l in lines {
        let num = |s: &str| s.parse::<i64>().map_err(|e| format!("{l:?}: {e}"));
        match l[0] {
            "sheet" => dims.push((
                l[2].to_string(),
                num(l[3])?,
                num(l[4])?,
                num(l[5])?,
                num(l[6])?,
            )),
            "cell" => {
                let k = (
                    num(l[1])? as usize,
                    num(l[2])? as usize,
                    num(l[3])? as usize,
                );
                cells.insert(k, (l[4].to_string(), l[5].to_string()));
            }
            _ => return Err(format!("unexpected line {l:?}")),
        }
    }
    if dims.len() != sheets.len() {
        return Err(format!(
            "{} sheets read, {} written",
            dims.len(),
            sheets.len()
        ));
    }
    let mut compared = 0;
    for (i, sh) in sheets.iter().enumerate() {
        let nrows = sh.rows.len() as i64;
        let ncols = sh.rows.iter().map(Vec::len).max().unwrap_or(0) as i64;
        // (name, rows and columns of the cells, rows and columns of DIMENSIONS)
        let want = (hex(&sh.name), nrows, ncols, nrows, ncols);
        if dims[i] != want {
            return Err(format!(
                "sheet {i} `{}`: read {:?}, expected {want:?}",
                sh.name, dims[i]
            ));
        }
        for (r, row) in sh.rows.iter().enumerate() {
            for c in 0..ncols as usize {
                let v = row.get(c).unwrap_or(&Value::Empty);
                let want = match v {
                    Value::Empty => ("empty".to_string(), "''".to_string()),
                    Value::Number(x) => ("number".into(), num_hex(*x)),
                    Value::Text(s) => ("text".into(), hex(s)),
                };
                match cells.get(&(i, r, c)) {
                    Some(got) if *got == want => compared += 1,
                    got => {
                        return Err(format!(
                            "sheet `{}` row {r} col {c}: wrote {v:?}, xlrd read {got:?}",
                            sh.name
                        ))
                    }
                }
            }
        }
    }
    if compared != cells.len() {
        return Err(format!(
            "xlrd lists {} cells, {compared} written",
            cells.len()
        ));
    }
    Ok(compared)
}

#[test]
fn xls_writer_is_read_by_xlrd() {
    if let Err(why) = xlrd_available() {
        assert!(!ci(), "CI=true and xlrd is missing: {why}");
        eprintln!("skipped: {why} (python3 -m pip install xlrd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.xls");
    let sheets = sheets();
    write_xls(&path, &sheets).unwrap();
    match dump(&path, "strict") {
        Ok(out) => {
            let n = compare(&out, &sheets).unwrap_or_else(|e| panic!("{e}"));
            eprintln!("xlrd read {n} cells of {} sheets as written", sheets.len());
        }
        Err(strict) => {
            // Say whether the cell records are right apart from the missing formats.
            let lenient = match dump(&path, "lenient").and_then(|o| compare(&o, &sheets)) {
                Ok(n) => format!(
                    "with missing XF records tolerated, all {n} cells read back exactly, so \
                     only the workbook globals (FONT/XF records that the cells' XF index \
                     refers to) are missing"
                ),
                Err(e) => format!("even with missing XF records tolerated: {e}"),
            };
            panic!("xlrd cannot read the .xls written by mer_data::workbook: {strict}\n{lenient}");
        }
    }
}

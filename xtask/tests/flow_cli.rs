//! `cargo xtask flow` end to end: one pair, a list with bad lines, strain output.

use opencv::{core, imgcodecs, prelude::*};
use std::path::Path;
use std::process::Command;

fn write_png(path: &Path, w: i32, h: i32, shift: f32, colour: bool) {
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let xf = x as f32
                - shift * (-((x as f32 - 30.0).powi(2) + (y as f32 - 25.0).powi(2)) / 150.0).exp();
            let v = (128.0 + 60.0 * (xf * 0.25).sin() * (y as f32 * 0.2).cos()).round() as u8;
            px.extend_from_slice(&[v, v.wrapping_add(10), v / 2]);
        }
    }
    let m = core::Mat::new_rows_cols_with_data(h, w * 3, &px)
        .unwrap()
        .try_clone()
        .unwrap();
    let m = m.reshape(3, h).unwrap().try_clone().unwrap();
    let m = if colour {
        m
    } else {
        let mut g = core::Mat::default();
        opencv::imgproc::cvt_color_def(&m, &mut g, opencv::imgproc::COLOR_BGR2GRAY).unwrap();
        g
    };
    assert!(imgcodecs::imwrite_def(path.to_str().unwrap(), &m).unwrap());
}

fn xtask(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn one_pair_and_a_list() {
    let dir = std::env::temp_dir().join(format!("xtask-flow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_png(&dir.join("a.png"), 64, 48, 0.0, true);
    write_png(&dir.join("b.png"), 64, 48, 1.5, true);
    write_png(&dir.join("g.png"), 64, 48, 1.0, false);
    std::fs::write(dir.join("junk.png"), b"not an image").unwrap();

    let o = xtask(
        &[
            "flow",
            "a.png",
            "b.png",
            "-o",
            "ab.flo",
            "--strain",
            "ab_strain.npy",
            "--threads",
            "1",
        ],
        &dir,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = mer_flow::io::read_flo(&dir.join("ab.flo")).unwrap();
    assert_eq!((f.width(), f.height()), (64, 48));
    // The bump moved right around (30, 25).
    assert!(f.get(30, 25).0 > 0.5, "{:?}", f.get(30, 25));
    let npy = std::fs::read(dir.join("ab_strain.npy")).unwrap();
    assert!(String::from_utf8_lossy(&npy[..80]).contains("'shape': (48, 64)"));

    let o = xtask(
        &["flow", "a.png", "b.png", "-o", "small.npy", "--size", "32"],
        &dir,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&std::fs::read(dir.join("small.npy")).unwrap()[..80])
            .contains("(32, 32, 2)")
    );

    std::fs::write(
        dir.join("list.csv"),
        "prev,next,out\na.png,b.png,out/1.flo\na.png,g.png,out/2.npy\nonly-two,cols\na.png,junk.png,out/3.flo\na.png,missing.png,out/4.flo\n",
    )
    .unwrap();
    let o = xtask(&["flow", "--pairs", "list.csv", "--threads", "2"], &dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("line 4:"), "{err}");
    assert!(err.contains("line 5:") && err.contains("junk.png"), "{err}");
    assert!(
        err.contains("line 6:") && err.contains("missing.png"),
        "{err}"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("2 of 5 pairs written; 3 failed"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // The good pair of the list equals the single-pair command's output.
    assert_eq!(mer_flow::io::read_flo(&dir.join("out/1.flo")).unwrap(), f);
    assert!(dir.join("out/2.npy").exists());

    std::fs::write(dir.join("ok.csv"), "prev,next,out\na.png,b.png,out/5.flo\n").unwrap();
    let o = xtask(&["flow", "--pairs", "ok.csv"], &dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

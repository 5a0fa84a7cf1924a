//! Prints the Rust code gannet-build generates for `.proto` files, without a build script.
//!
//! `cargo run -p gannet-build --example show -- examples/greeter/proto/greeter.proto`
//!
//! Each file's folder is where its imports are looked up; `-I DIR` adds another.

use std::path::{Path, PathBuf};

fn main() {
    if let Err(e) = run() {
        eprintln!("show: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut protos = Vec::new();
    let mut includes: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-I" {
            includes.push(args.next().ok_or("-I needs a folder")?.into());
        } else {
            protos.push(PathBuf::from(a));
        }
    }
    if protos.is_empty() {
        return Err("usage: show [-I DIR]... FILE.proto...".into());
    }
    for p in &protos {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        includes.push(dir.unwrap_or(Path::new(".")).to_path_buf());
    }
    let out = tempfile::tempdir()?;
    gannet_build::configure()
        .out_dir(out.path())
        .rerun_if_changed(false)
        .compile(&protos, &includes)?;
    let mut files: Vec<_> = std::fs::read_dir(out.path())?.collect::<Result<_, _>>()?;
    files.sort_by_key(std::fs::DirEntry::file_name);
    for f in files {
        println!("// ===== {} =====", f.file_name().to_string_lossy());
        println!("{}", std::fs::read_to_string(f.path())?);
    }
    Ok(())
}

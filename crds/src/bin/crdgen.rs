//! Writes the Gatehouse CRDs as YAML into `charts/gatehouse/crds/` (or the directory given as
//! the first argument). `--check` writes nothing and exits 1 if any file is missing or stale.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/gatehouse/crds"
    ));
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [DIR]   (default DIR: charts/gatehouse/crds)");
                return ExitCode::SUCCESS;
            }
            other => dir = PathBuf::from(other),
        }
    }
    let manifests = match gatehouse_crds::crd_manifests() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = 0;
    for manifest in manifests {
        let path = dir.join(&manifest.file_name);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(manifest.yaml.as_str()) {
            continue;
        }
        if check {
            eprintln!(
                "crdgen: {} is stale; run `cargo run -p gatehouse-crds --bin crdgen`",
                path.display()
            );
            stale += 1;
            continue;
        }
        if let Err(e) =
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &manifest.yaml))
        {
            eprintln!("crdgen: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    if stale > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

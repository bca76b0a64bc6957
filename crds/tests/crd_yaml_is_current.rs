//! The CRD YAML in the chart is generated from the Rust types; this fails when someone changed
//! the types without regenerating (or edited the YAML by hand).

use std::path::Path;

#[test]
fn checked_in_crd_yaml_matches_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/gatehouse/crds");
    let manifests = gatehouse_crds::crd_manifests().unwrap();
    assert_eq!(manifests.len(), 3, "three Gatehouse kinds");
    let mut stale = Vec::new();
    for m in &manifests {
        let on_disk = std::fs::read_to_string(dir.join(&m.file_name)).unwrap_or_default();
        if on_disk != m.yaml {
            stale.push(m.file_name.clone());
        }
    }
    let mut extra: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            entry
                .ok()
                .map(|e| e.file_name().to_string_lossy().into_owned())
        })
        .filter(|name| !manifests.iter().any(|m| &m.file_name == name))
        .collect();
    extra.sort();
    assert!(
        stale.is_empty() && extra.is_empty(),
        "charts/gatehouse/crds is out of date (stale: {stale:?}, not generated: {extra:?}); \
         run `cargo run -p gatehouse-crds --bin crdgen`"
    );
}

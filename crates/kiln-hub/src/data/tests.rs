//! Unit tests of the data sets: the built-in table, and pulls through a fake fetcher (URLs served
//! from a map, tar archives built with python3's tarfile, calls counted) over made-up tables.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::*;
use crate::tests::files_under;
use crate::{fetch, hash_file};

#[derive(Default)]
struct Fake {
    /// URL -> body.
    urls: HashMap<String, Vec<u8>>,
    calls: AtomicUsize,
}

impl Fake {
    fn url(mut self, url: &str, body: &[u8]) -> Self {
        self.urls.insert(url.to_string(), body.to_vec());
        self
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Fetcher for Fake {
    fn pip_download(&self, requirement: &str, _: &Path, _: &Path) -> Result<(), HubError> {
        panic!("data pulls never call pip (asked for {requirement})");
    }

    fn http_get(&self, url: &str, dest: &Path) -> Result<(), HubError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.urls.get(url) {
            Some(body) => {
                fs::write(dest, body).unwrap();
                Ok(())
            }
            None if url.starts_with("https://offline.example") => {
                Err(fetch::curl_error(url, 6, "curl: (6) Could not resolve host".into()))
            }
            None => Err(fetch::curl_error(url, 22, "curl: (22) The requested URL returned error: 404".into())),
        }
    }
}

fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn file_entry(path: &str, body: &[u8], url: &str, member: Option<&str>) -> DataFile {
    DataFile {
        path: path.to_string(),
        size: body.len() as u64,
        sha256: sha_hex(body),
        url: url.to_string(),
        member: member.map(String::from),
    }
}

fn set(name: &str, files: Vec<DataFile>) -> DataSet {
    DataSet {
        name: name.to_string(),
        aliases: vec![format!("{name}-alias")],
        description: format!("{name}, made up for a test"),
        licence: "CC0".to_string(),
        homepage: format!("https://example.org/{name}"),
        files,
    }
}

fn leak(sets: Vec<DataSet>) -> &'static [DataSet] {
    Box::leak(sets.into_boxed_slice())
}

const POEM: &[u8] = b"Shall I compare thee to a summer's day?\n";
const QUIZ: &[u8] = b"question,A,B,C,D,answer\n2+2?,3,4,5,6,B\n";
const TRAIN: &[u8] = b"{\"question\": \"1+1\", \"answer\": \"#### 2\"}\n";
const TEST: &[u8] = b"{\"question\": \"2+3\", \"answer\": \"#### 5\"}\n";
const POEM_URL: &str = "https://example.org/poem.txt";
const TRAIN_URL: &str = "https://example.org/train.jsonl";
const TEST_URL: &str = "https://example.org/test.jsonl";
const TAR_URL: &str = "https://example.org/quiz.tar";

/// poem (one file), quiz (two members of one tar archive), maths (files in two sections).
fn test_sets() -> &'static [DataSet] {
    leak(vec![
        set("poem", vec![file_entry("pretrain/poem.txt", POEM, POEM_URL, None)]),
        set(
            "quiz",
            vec![
                file_entry("eval/quiz/dev/a.csv", QUIZ, TAR_URL, Some("data/dev/a.csv")),
                file_entry("eval/quiz/test/a.csv", POEM, TAR_URL, Some("data/test/a.csv")),
            ],
        ),
        set(
            "maths",
            vec![
                file_entry("sft/maths_train.jsonl", TRAIN, TRAIN_URL, None),
                file_entry("eval/maths_test.jsonl", TEST, TEST_URL, None),
            ],
        ),
    ])
}

/// A tar archive holding `members`, built with python3's tarfile.
fn tar_bytes(members: &[(&str, &[u8])], scratch: &Path) -> Vec<u8> {
    let archive = scratch.join("built.tar");
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(
        "import sys, tarfile\n\
         with tarfile.open(sys.argv[1], 'w') as t:\n\
         \x20   a = sys.argv[2:]\n\
         \x20   for name, src in zip(a[::2], a[1::2]): t.add(src, name)\n",
    );
    cmd.arg(&archive);
    for (i, (name, bytes)) in members.iter().enumerate() {
        let src = scratch.join(format!("member{i}"));
        fs::write(&src, bytes).unwrap();
        cmd.arg(name).arg(&src);
    }
    assert!(cmd.status().expect("python3 runs").success(), "building a test tar failed");
    fs::read(&archive).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    store: DataStore,
    fake: Arc<Fake>,
}

fn setup(fake: Fake, sources: DataSources) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(fake);
    let store =
        DataStore::new(Hub::new(dir.path().join("kiln")), sources).with_sets(test_sets()).with_fetcher(fake.clone());
    Setup { _dir: dir, store, fake }
}

fn assert_nothing_installed(store: &DataStore) {
    assert_eq!(files_under(&store.cache_dir()), Vec::<String>::new());
    assert_eq!(files_under(&store.hub.tmp_dir()), Vec::<String>::new());
}

// ---------------------------------------------------------------- the built-in table

#[test]
fn the_table_is_sane() {
    let sets = known_data_sets();
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for s in sets {
        for name in std::iter::once(&s.name).chain(&s.aliases) {
            assert!(names.insert(name.clone()), "name {name} is used twice");
            assert_eq!(*name, name.to_ascii_lowercase(), "names are lowercase");
        }
        assert!(!s.files.is_empty(), "{} has files", s.name);
        assert!(!s.description.is_empty() && !s.licence.is_empty(), "{}", s.name);
        assert!(s.homepage.starts_with("https://"), "{}", s.homepage);
        for f in &s.files {
            assert!(paths.insert(f.path.clone()), "{} is listed twice", f.path);
            assert!(is_plain_relative(&f.path), "{}", f.path);
            let section = f.path.split('/').next().unwrap();
            assert!(["eval", "pretrain", "sft", "prefs"].contains(&section), "{}", f.path);
            assert_eq!(f.sha256.len(), 64, "{}", f.path);
            assert!(
                f.sha256.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                "{}: lowercase hex sha256",
                f.path
            );
            assert!(f.size > 0, "{}", f.path);
            assert!(f.url.starts_with("https://"), "{}", f.url);
            if let Some(m) = &f.member {
                assert!(f.url.ends_with(".tar"), "{}: members come out of tar archives", f.path);
                assert!(is_plain_relative(m), "{m}");
            }
        }
    }
    for name in [
        "hellaswag",
        "mmlu",
        "core",
        "arc",
        "truthfulqa",
        "gsm8k",
        "humaneval",
        "wikitext2",
        "tinyshakespeare",
        "wiki-demo",
        "alpaca",
        "identity",
        "glaive-toolcall",
        "dpo-demo",
        "hh-rlhf",
    ] {
        assert!(names.contains(name), "the table has {name}");
    }
    let count = |name: &str| sets.iter().find(|s| s.is_named(name)).unwrap().files.len();
    assert_eq!(count("mmlu"), 57 * 3);
    assert_eq!(count("arc"), 14, "arc is the CORE files");
    assert_eq!(count("gsm8k"), 2);
    for path in [
        "eval/hellaswag_val_full.txt.bz2",
        "eval/mmlu/test/abstract_algebra_test.csv",
        "eval/core/world_knowledge_arc_easy.jsonl",
        "pretrain/tinyshakespeare.txt",
        "sft/alpaca_en_demo.json",
        "prefs/hh-rlhf_harmless-base_test.jsonl.gz",
    ] {
        assert!(paths.contains(path), "the table has {path}");
    }
}

/// The table was written from the mirror beside the checkout; where it is, every size and
/// sha256 still matches (else: rerun scripts/data-table.py).
#[test]
fn the_table_matches_the_mirror_beside_the_checkout() {
    let mirror = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if !mirror.is_dir() {
        eprintln!("SKIP: no data mirror at {}", mirror.display());
        return;
    }
    for s in known_data_sets() {
        for f in &s.files {
            let path = mirror.join(&f.path);
            let (sha, size) = hash_file(&path, false).unwrap();
            assert_eq!((size, sha.as_str()), (f.size, f.sha256.as_str()), "{}", f.path);
        }
    }
}

// ---------------------------------------------------------------- pulls

#[test]
fn a_pull_fetches_checks_installs_and_then_hits_the_cache() {
    let t = setup(Fake::default().url(POEM_URL, POEM), DataSources::default());
    let pulled = t.store.pull("poem", false).unwrap();
    let file = t.store.cache_dir().join("pretrain/poem.txt");
    assert_eq!(pulled.locations(), std::slice::from_ref(&file));
    assert_eq!(pulled.files[0].origin, DataOrigin::Fetched(POEM_URL.into()));
    assert_eq!(fs::read(&file).unwrap(), POEM);
    let manifest = read_manifest(&file).unwrap();
    assert_eq!(manifest.spec, "data:poem");
    assert_eq!(manifest.source, POEM_URL);
    assert!(manifest.verified);
    assert_eq!(manifest.sha256, sha_hex(POEM));
    assert_eq!(t.fake.calls(), 1);

    // By alias, case-insensitive, and by path: the cache answers.
    let again = t.store.pull("POEM-alias", false).unwrap();
    assert_eq!(again.files[0].origin, DataOrigin::Cache);
    assert_eq!(t.store.resolve("pretrain/poem.txt", false).unwrap(), file);
    assert_eq!(t.fake.calls(), 1, "no second download");
    assert_eq!(files_under(&t.store.hub.tmp_dir()), Vec::<String>::new());
}

#[test]
fn a_file_that_fails_its_checksum_installs_nothing() {
    let t = setup(Fake::default().url(POEM_URL, b"not the poem"), DataSources::default());
    let e = t.store.pull("poem", false).unwrap_err().to_string();
    assert!(e.starts_with("checksum mismatch for pretrain/poem.txt from https://example.org/poem.txt"), "{e}");
    assert!(e.contains(&sha_hex(POEM)) && e.contains(&sha_hex(b"not the poem")), "{e}");
    assert_nothing_installed(&t.store);
}

#[test]
fn a_damaged_cached_file_is_fetched_again() {
    let t = setup(Fake::default().url(POEM_URL, POEM), DataSources::default());
    let file = t.store.pull("poem", false).unwrap().files[0].location();
    fs::write(&file, b"truncated").unwrap();
    assert!(t.store.present(&test_sets()[0]).files.is_empty());
    let pulled = t.store.pull("poem", false).unwrap();
    assert!(matches!(pulled.files[0].origin, DataOrigin::Fetched(_)));
    assert_eq!(fs::read(&file).unwrap(), POEM);
    assert_eq!(t.fake.calls(), 2);
}

#[test]
fn archive_members_come_from_one_download() {
    let scratch = tempfile::tempdir().unwrap();
    let tar =
        tar_bytes(&[("data/dev/a.csv", QUIZ), ("data/test/a.csv", POEM), ("data/other.txt", b"x")], scratch.path());
    let t = setup(Fake::default().url(TAR_URL, &tar), DataSources::default());
    let pulled = t.store.pull("quiz", false).unwrap();
    assert_eq!(t.fake.calls(), 1, "the archive is downloaded once");
    assert_eq!(pulled.locations(), [t.store.cache_dir().join("eval/quiz")]);
    let cache = t.store.cache_dir();
    assert_eq!(fs::read(cache.join("eval/quiz/dev/a.csv")).unwrap(), QUIZ);
    assert_eq!(fs::read(cache.join("eval/quiz/test/a.csv")).unwrap(), POEM);
    let manifest = read_manifest(&cache.join("eval/quiz/dev/a.csv")).unwrap();
    assert_eq!(manifest.source, format!("{TAR_URL}:data/dev/a.csv"));
    assert!(!cache.join("data/other.txt").exists() && !cache.join("other.txt").exists());
    assert_eq!(files_under(&t.store.hub.tmp_dir()), Vec::<String>::new());
}

#[test]
fn an_archive_without_the_member_installs_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let tar = tar_bytes(&[("data/dev/a.csv", QUIZ)], scratch.path());
    let t = setup(Fake::default().url(TAR_URL, &tar), DataSources::default());
    let e = t.store.pull("quiz", false).unwrap_err().to_string();
    assert_eq!(e, "cannot read archive https://example.org/quiz.tar: it has no member data/test/a.csv");
    assert_nothing_installed(&t.store);
}

#[test]
fn a_directory_mirror_is_copied_from_without_downloads() {
    let mirror = tempfile::tempdir().unwrap();
    fs::create_dir_all(mirror.path().join("sft")).unwrap();
    fs::create_dir_all(mirror.path().join("eval")).unwrap();
    fs::write(mirror.path().join("sft/maths_train.jsonl"), TRAIN).unwrap();
    fs::write(mirror.path().join("eval/maths_test.jsonl"), TEST).unwrap();
    let sources = DataSources { local: None, mirror: Some(Mirror::Dir(mirror.path().to_path_buf())) };
    let t = setup(Fake::default(), sources);
    let pulled = t.store.pull("maths", false).unwrap();
    assert_eq!(t.fake.calls(), 0);
    let cache = t.store.cache_dir();
    assert_eq!(
        pulled.locations(),
        [cache.join("sft/maths_train.jsonl"), cache.join("eval/maths_test.jsonl")],
        "files in two sections are shown one by one"
    );
    let from = mirror.path().join("sft/maths_train.jsonl");
    assert_eq!(pulled.files[0].origin, DataOrigin::Fetched(from.display().to_string()));
    assert_eq!(fs::read(cache.join("eval/maths_test.jsonl")).unwrap(), TEST);
}

#[test]
fn a_url_mirror_comes_first_and_the_source_backs_it_up() {
    let mirror = "http://mirror.example/data";
    let fake = Fake::default().url(&format!("{mirror}/sft/maths_train.jsonl"), TRAIN).url(TEST_URL, TEST);
    let sources = DataSources { local: None, mirror: Some(Mirror::parse(&format!("{mirror}/")).unwrap()) };
    let t = setup(fake, sources);
    let pulled = t.store.pull("maths", false).unwrap();
    let origins: Vec<_> = pulled.files.iter().map(|f| f.origin.clone()).collect();
    assert_eq!(
        origins,
        [DataOrigin::Fetched(format!("{mirror}/sft/maths_train.jsonl")), DataOrigin::Fetched(TEST_URL.into()),]
    );
    assert_eq!(t.fake.calls(), 3, "mirror hit, mirror miss, source");
}

#[test]
fn a_file_from_nowhere_is_one_line_naming_the_set_the_places_and_the_remedies() {
    let sources = DataSources { local: None, mirror: Some(Mirror::Url("http://mirror.example".into())) };
    let sets = leak(vec![set("offline", vec![file_entry("eval/x.txt", POEM, "https://offline.example/x.txt", None)])]);
    let t = setup(Fake::default(), sources);
    let store = t.store.clone().with_sets(sets);
    let e = store.pull("offline", false).unwrap_err().to_string();
    assert_eq!(
        e,
        "cannot fetch eval/x.txt of data set offline from http://mirror.example/eval/x.txt \
         (curl: (22) The requested URL returned error: 404 (no such repository or file)) \
         nor from https://offline.example/x.txt (cannot reach offline.example); point kiln at \
         a copy: KILN_DATA=DIR for a directory holding DIR/eval/x.txt (for kiln eval, also \
         --data DIR/eval), or KILN_DATA_MIRROR=DIR|URL for a mirror laid out the same way"
    );
    assert!(!e.contains('\n'));
    assert_nothing_installed(&store);
}

#[test]
fn kiln_data_is_used_in_place_and_completed_through_the_cache() {
    let local = tempfile::tempdir().unwrap();
    fs::create_dir_all(local.path().join("sft")).unwrap();
    fs::write(local.path().join("sft/maths_train.jsonl"), TRAIN).unwrap();
    fs::create_dir_all(local.path().join("pretrain")).unwrap();
    fs::write(local.path().join("pretrain/notes.txt"), b"mine").unwrap();
    let sources = DataSources { local: Some(local.path().to_path_buf()), mirror: None };
    let t = setup(Fake::default().url(TEST_URL, TEST), sources);

    // In place: no copy, no download, also for a file no data set lists.
    let f = t.store.file("sft/maths_train.jsonl", false).unwrap();
    assert_eq!((f.origin, f.root.as_path()), (DataOrigin::Local, local.path()));
    let own = t.store.resolve("pretrain/notes.txt", false).unwrap();
    assert_eq!(own, local.path().join("pretrain/notes.txt"));
    assert_eq!(t.store.root_for(&["sft/maths_train.jsonl"], false).unwrap(), local.path());
    assert_eq!(t.fake.calls(), 0);

    // A set partly there: its missing file is fetched into the cache.
    let pulled = t.store.pull("maths", false).unwrap();
    assert_eq!(pulled.files[0].origin, DataOrigin::Local);
    assert!(matches!(pulled.files[1].origin, DataOrigin::Fetched(_)));

    // One directory for all: the cache, with KILN_DATA's file copied (and checked) into it.
    let root = t.store.root_for(&["maths"], false).unwrap();
    assert_eq!(root, t.store.cache_dir());
    assert_eq!(fs::read(root.join("sft/maths_train.jsonl")).unwrap(), TRAIN);
    assert_eq!(t.fake.calls(), 1);
}

#[test]
fn unknown_names_and_paths_say_what_is_known() {
    let t = setup(Fake::default(), DataSources::default());
    let e = t.store.pull("nope", false).unwrap_err().to_string();
    assert_eq!(
        e,
        "no data set named nope: kiln knows poem (poem-alias), quiz (quiz-alias), maths \
         (maths-alias) (`kiln data list` describes them)"
    );
    for path in ["eval/nope.txt", "../etc/passwd", "/etc/passwd", "eval/../x"] {
        let e = t.store.file(path, false).unwrap_err();
        assert!(matches!(e, HubError::UnknownDataFile { .. }), "{path}: {e}");
    }
    assert!(t.store.root_for(&["eval/nope.txt"], false).is_err());
    assert_eq!(t.fake.calls(), 0);
    assert_nothing_installed(&t.store);
}

#[test]
fn mirrors_and_data_directories_parse() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    assert_eq!(Mirror::parse("https://host/data/").unwrap(), Mirror::Url("https://host/data".into()));
    assert_eq!(Mirror::parse(&d).unwrap(), Mirror::Dir(dir.path().into()));
    assert_eq!(Mirror::parse(&format!("file://{d}")).unwrap(), Mirror::Dir(dir.path().into()));
    for bad in ["ftp://host/data", "/no/such/dir", "https://"] {
        let e = Mirror::parse(bad).unwrap_err().to_string();
        assert!(e.starts_with(&format!("KILN_DATA_MIRROR={bad:?}: ")), "{e}");
    }
    let e = DataSources::from_values(Some(OsString::from("/no/such/dir")), None).unwrap_err();
    assert!(e.to_string().starts_with("KILN_DATA=\"/no/such/dir\": not a directory"), "{e}");
    let ok = DataSources::from_values(Some(d.clone().into()), Some(d.into())).unwrap();
    assert_eq!(ok.local.as_deref(), Some(dir.path()));
}

#[test]
fn io_errors_show_their_cause_once() {
    let e = HubError::io("cannot read x", std::io::Error::new(std::io::ErrorKind::NotFound, "gone"));
    assert_eq!(e.to_string(), "cannot read x: gone");
    assert!(std::error::Error::source(&e).is_none(), "a chain printer would repeat it");
}

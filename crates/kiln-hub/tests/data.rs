//! Data pulls over real HTTP: a small server on 127.0.0.1 stands in for a mirror and for the
//! canonical sources, and the real fetcher (curl, python3's tarfile) does the work. Where the
//! data mirror is beside the checkout (`../shared/data`), real files are pulled and compared
//! byte for byte; elsewhere small made-up files with a test-only table are.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kiln_hub::{known_data_sets, DataFile, DataOrigin, DataSet, DataSources, DataStore, Hub, HubError, Mirror};
use sha2::{Digest as _, Sha256};

/// An HTTP server answering `GET /<path>` with the file `<root>/<path>`, or 404.
struct Server {
    base: String,
    requests: Arc<AtomicUsize>,
}

impl Server {
    fn start(root: PathBuf) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        // Serves until the test process ends.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = answer(stream, &root);
            }
        });
        Server { base, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn answer(stream: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let rel = request.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/');
    let plain = !rel.is_empty() && rel.split('/').all(|p| !p.is_empty() && p != "..");
    let body = if plain { std::fs::read(root.join(rel)).ok() } else { None };
    let mut stream = stream;
    match body {
        Some(body) => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            stream.write_all(head.as_bytes())?;
            stream.write_all(&body)
        }
        None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    }
}

/// Whether curl runs here (the real fetcher needs it); says so when not.
fn have_curl() -> bool {
    let ok = Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: curl is not installed");
    }
    ok
}

fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn leak(sets: Vec<DataSet>) -> &'static [DataSet] {
    Box::leak(sets.into_boxed_slice())
}

fn made_up_set(name: &str, files: Vec<DataFile>) -> DataSet {
    DataSet {
        name: name.into(),
        aliases: Vec::new(),
        description: "made up for a test".into(),
        licence: "CC0".into(),
        homepage: "https://example.org".into(),
        files,
    }
}

fn entry(path: &str, body: &[u8], url: String, member: Option<&str>) -> DataFile {
    DataFile {
        path: path.into(),
        size: body.len() as u64,
        sha256: sha_hex(body),
        url,
        member: member.map(String::from),
    }
}

/// A data mirror to pull `name` from: the real one beside the checkout with the real table,
/// else a temp dir holding a made-up file under a test-only table.
struct MirrorFixture {
    root: PathBuf,
    sets: &'static [DataSet],
    name: &'static str,
    _temp: Option<tempfile::TempDir>,
}

fn mirror_fixture() -> MirrorFixture {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if shared.join("eval/hellaswag_val_full.txt.bz2").is_file() {
        return MirrorFixture { root: shared, sets: known_data_sets(), name: "hellaswag", _temp: None };
    }
    eprintln!("no ../shared/data: pulling a made-up file instead of HellaSwag");
    let temp = tempfile::tempdir().expect("temp dir");
    let body = b"A man is sitting on a roof. he\n3\nx\ny\nz\nstarts pulling up roofing.\n";
    std::fs::create_dir_all(temp.path().join("eval")).expect("mkdir");
    std::fs::write(temp.path().join("eval/hellaswag_val_full.txt"), body).expect("write");
    let file = entry("eval/hellaswag_val_full.txt", body, "https://offline.invalid/hellaswag".into(), None);
    MirrorFixture {
        root: temp.path().to_path_buf(),
        sets: leak(vec![made_up_set("hellaswag", vec![file])]),
        name: "hellaswag",
        _temp: Some(temp),
    }
}

fn store(home: &Path, mirror: Option<Mirror>, sets: &'static [DataSet]) -> DataStore {
    let sources = DataSources { local: None, mirror };
    DataStore::new(Hub::new(home.to_path_buf()), sources).with_sets(sets)
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries.flatten().map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum()
    })
}

#[test]
fn an_http_mirror_gives_the_mirror_bytes_and_a_second_pull_is_served_from_the_cache() {
    if !have_curl() {
        return;
    }
    let fixture = mirror_fixture();
    let server = Server::start(fixture.root.clone());
    let home = tempfile::tempdir().expect("temp dir");
    let mirror = Mirror::parse(&server.base).expect("a URL mirror");
    let store = store(home.path(), Some(mirror), fixture.sets);

    let pulled = store.pull(fixture.name, false).expect("pull from the mirror");
    assert!(pulled.is_complete());
    for f in &pulled.files {
        let DataOrigin::Fetched(from) = &f.origin else {
            panic!("{} should have been fetched: {:?}", f.path, f.origin);
        };
        assert_eq!(*from, format!("{}/{}", server.base, f.path));
        let got = std::fs::read(f.location()).expect("pulled file");
        let want = std::fs::read(fixture.root.join(&f.path)).expect("mirror file");
        assert!(got == want, "{}: the pulled bytes are the mirror's", f.path);
        assert!(f.location().starts_with(home.path().join("data")));
    }
    let served = server.requests();
    assert_eq!(served, pulled.files.len());

    let again = store.pull(fixture.name, false).expect("second pull");
    assert!(again.files.iter().all(|f| f.origin == DataOrigin::Cache));
    assert_eq!(server.requests(), served, "the cache answers the second pull");
    assert_eq!(files_under(&home.path().join("tmp")), 0);
}

#[test]
fn a_corrupted_mirror_file_gives_the_checksum_error_and_installs_nothing() {
    if !have_curl() {
        return;
    }
    let mirror_dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(mirror_dir.path().join("pretrain")).expect("mkdir");
    let damaged = b"First Citizen:\nBefore we proceed any further, hear me spea";
    std::fs::write(mirror_dir.path().join("pretrain/tinyshakespeare.txt"), damaged).expect("write");
    let server = Server::start(mirror_dir.path().to_path_buf());
    let home = tempfile::tempdir().expect("temp dir");
    let store = store(home.path(), Some(Mirror::parse(&server.base).expect("URL")), known_data_sets());

    let e = store.pull("tinyshakespeare", false).expect_err("a damaged file");
    assert!(matches!(e, HubError::DataChecksumMismatch { .. }), "{e}");
    let expected = &store.find("tinyshakespeare").expect("known").files[0].sha256;
    let message = e.to_string();
    assert!(
        message.starts_with(&format!(
            "checksum mismatch for pretrain/tinyshakespeare.txt from {}/pretrain/tinyshakespeare.txt: expected sha256 {expected}, got {}",
            server.base,
            sha_hex(damaged)
        )),
        "{message}"
    );
    assert_eq!(files_under(&home.path().join("data")), 0, "nothing installed");
    assert_eq!(files_under(&home.path().join("tmp")), 0, "no work left behind");
}

#[test]
fn a_directory_mirror_works() {
    let fixture = mirror_fixture();
    let home = tempfile::tempdir().expect("temp dir");
    let mirror = Mirror::parse(&fixture.root.display().to_string()).expect("a directory mirror");
    let store = store(home.path(), Some(mirror), fixture.sets);
    let pulled = store.pull(fixture.name, false).expect("pull from the directory");
    for f in &pulled.files {
        let got = std::fs::read(f.location()).expect("pulled file");
        let want = std::fs::read(fixture.root.join(&f.path)).expect("mirror file");
        assert!(got == want, "{}", f.path);
    }
}

#[test]
fn canonical_sources_are_fetched_over_http_with_archive_members_extracted() {
    if !have_curl() {
        return;
    }
    let upstream = tempfile::tempdir().expect("temp dir");
    let poem = b"Shall I compare thee to a summer's day?\n".as_slice();
    let quiz = b"2+2?,3,4,5,6,B\n".as_slice();
    std::fs::write(upstream.path().join("poem.txt"), poem).expect("write");
    let scratch = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(scratch.path().join("data/test")).expect("mkdir");
    std::fs::write(scratch.path().join("data/test/q_test.csv"), quiz).expect("write");
    std::fs::write(scratch.path().join("data/test/p_test.csv"), poem).expect("write");
    let tar = Command::new("tar")
        .arg("-cf")
        .arg(upstream.path().join("bundle.tar"))
        .arg("-C")
        .arg(scratch.path())
        .arg("data")
        .status()
        .expect("tar runs");
    assert!(tar.success());
    let server = Server::start(upstream.path().to_path_buf());
    let base = &server.base;
    let sets = leak(vec![
        made_up_set("poem", vec![entry("pretrain/poem.txt", poem, format!("{base}/poem.txt"), None)]),
        made_up_set(
            "quiz",
            vec![
                entry("eval/quiz/q_test.csv", quiz, format!("{base}/bundle.tar"), Some("data/test/q_test.csv")),
                entry("eval/quiz/p_test.csv", poem, format!("{base}/bundle.tar"), Some("data/test/p_test.csv")),
            ],
        ),
    ]);
    let home = tempfile::tempdir().expect("temp dir");
    let store = store(home.path(), None, sets);

    let poem_path = store.resolve("poem", false).expect("pull poem");
    assert_eq!(std::fs::read(&poem_path).expect("read"), poem);
    let quiz_dir = store.resolve("quiz", false).expect("pull quiz");
    assert_eq!(quiz_dir, home.path().join("data/eval/quiz"));
    assert_eq!(std::fs::read(quiz_dir.join("q_test.csv")).expect("read"), quiz);
    assert_eq!(std::fs::read(quiz_dir.join("p_test.csv")).expect("read"), poem);
    assert_eq!(server.requests(), 2, "one download for the file, one for the archive");
    assert_eq!(files_under(&home.path().join("tmp")), 0);
}

#[test]
fn a_file_with_no_mirror_and_no_network_is_one_clear_line() {
    if !have_curl() {
        return;
    }
    // A port nothing listens on: connection refused, as without a network.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let body = b"text";
    let sets = leak(vec![made_up_set(
        "tiny",
        vec![entry("pretrain/tiny.txt", body, format!("http://127.0.0.1:{port}/tiny.txt"), None)],
    )]);
    let home = tempfile::tempdir().expect("temp dir");
    let e = store(home.path(), None, sets).pull("tiny", false).expect_err("nothing to fetch from").to_string();
    assert_eq!(
        e,
        format!(
            "cannot fetch pretrain/tiny.txt of data set tiny from http://127.0.0.1:{port}/tiny.txt \
             (cannot reach 127.0.0.1:{port}); point kiln at a copy: KILN_DATA=DIR for a directory \
             holding DIR/pretrain/tiny.txt (for kiln eval, also --data DIR/eval), or \
             KILN_DATA_MIRROR=DIR|URL for a mirror laid out the same way"
        )
    );
    assert_eq!(files_under(&home.path().join("data")), 0);
}

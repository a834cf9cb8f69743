//! Custom assistants: a named profile (model, instructions, tools, a folder of files, sampling)
//! kept as a small JSON file, `$KILN_HOME/assistants/NAME.json`, and used by name.

use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// A named assistant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Assistant {
    /// Its name (lower-case letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The model (a name or a path), or the default model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The system message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Built-in tools it may call (`calc`, `python`, `files`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// The folder the `files` tool searches (kept as an absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<PathBuf>,
    /// Sampling temperature, when it sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// The most tokens per answer, when it sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    /// Whether it runs behind kiln guard (as `--guard` wherever it is used).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guard: bool,
}

/// Why a profile could not be saved, found or read.
#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    /// A name that cannot be a file name.
    #[error("bad assistant name {0:?}: use lower-case letters, digits, '-', '_' and '.', starting with a letter or digit (at most 64)")]
    BadName(String),
    /// No profile of that name.
    #[error("no assistant named {name:?} (kiln assistant list shows them{known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// `: a, b` when there are some.
        known: String,
    },
    /// One exists already.
    #[error("an assistant named {0:?} exists already (pass --force to replace it)")]
    Exists(String),
    /// Reading or writing failed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Whether `name` is a valid assistant name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// The profiles in one directory.
pub struct AssistantStore {
    dir: PathBuf,
}

impl AssistantStore {
    /// The store in `dir` (created on the first save).
    pub fn new(dir: impl Into<PathBuf>) -> AssistantStore {
        AssistantStore { dir: dir.into() }
    }

    fn path(&self, name: &str) -> Result<PathBuf, AssistantError> {
        if !valid_name(name) {
            return Err(AssistantError::BadName(name.to_string()));
        }
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Saves a profile (written whole, then renamed into place); `replace` allows overwriting.
    pub fn save(&self, assistant: &Assistant, replace: bool) -> Result<PathBuf, AssistantError> {
        let path = self.path(&assistant.name)?;
        if path.exists() && !replace {
            return Err(AssistantError::Exists(assistant.name.clone()));
        }
        let file_err = |p: &Path, e: std::io::Error| AssistantError::File {
            path: p.display().to_string(),
            message: e.to_string(),
        };
        fs::create_dir_all(&self.dir).map_err(|e| file_err(&self.dir, e))?;
        let tmp = self.dir.join(format!(".{}.json.{}", assistant.name, std::process::id()));
        let json = serde_json::to_string_pretty(assistant).expect("a profile serializes") + "\n";
        fs::write(&tmp, json).map_err(|e| file_err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| file_err(&path, e))?;
        Ok(path)
    }

    /// Reads the profile called `name`.
    pub fn load(&self, name: &str) -> Result<Assistant, AssistantError> {
        let path = self.path(name)?;
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let names = self.names();
                let known = if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) };
                return Err(AssistantError::Unknown { name: name.to_string(), known });
            }
            Err(e) => return Err(AssistantError::File { path: path.display().to_string(), message: e.to_string() }),
        };
        let mut a: Assistant = serde_json::from_str(&text).map_err(|e| AssistantError::File {
            path: path.display().to_string(),
            message: format!("not a valid assistant profile: {e}"),
        })?;
        a.name = name.to_string();
        Ok(a)
    }

    /// The names of the saved profiles, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(String::from))
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        names
    }

    /// Deletes the profile called `name`.
    pub fn remove(&self, name: &str) -> Result<(), AssistantError> {
        self.load(name)?;
        let path = self.path(name)?;
        fs::remove_file(&path)
            .map_err(|e| AssistantError::File { path: path.display().to_string(), message: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip_and_errors_name_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let store = AssistantStore::new(tmp.path().join("assistants"));
        assert!(store.names().is_empty());
        let tutor = Assistant {
            name: "tutor".into(),
            model: Some("smollm2".into()),
            instructions: Some("Explain step by step.".into()),
            tools: vec!["calc".into()],
            temperature: Some(0.2),
            guard: true,
            ..Default::default()
        };
        store.save(&tutor, false).unwrap();
        assert_eq!(store.load("tutor").unwrap(), tutor);
        assert!(matches!(store.save(&tutor, false), Err(AssistantError::Exists(_))));
        store.save(&Assistant { tools: vec![], ..tutor.clone() }, true).unwrap();
        assert!(store.load("tutor").unwrap().tools.is_empty());
        assert_eq!(store.names(), ["tutor"]);
        let err = store.load("tutr").unwrap_err().to_string();
        assert!(err.contains("no assistant named \"tutr\"") && err.contains(": tutor"), "{err}");
        for bad in ["", "../x", "Tutor", "-a", &"a".repeat(65)] {
            assert!(matches!(store.load(bad), Err(AssistantError::BadName(_))), "{bad}");
        }
        fs::write(tmp.path().join("assistants/broken.json"), "{").unwrap();
        assert!(store.load("broken").unwrap_err().to_string().contains("not a valid assistant profile"));
        store.remove("tutor").unwrap();
        assert!(store.load("tutor").is_err());
    }
}

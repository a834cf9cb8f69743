//! The Hugging Face files beside tokenizer.json: tokenizer_config.json (special tokens, whether to
//! add BOS/EOS, the chat template), chat_template.jinja / chat_template.json, and the EOS ids of
//! generation_config.json.

use crate::TextError;
use serde_json::Value as Json;
use std::path::Path;

/// What the configuration files of a Hugging Face model directory say about its tokenizer.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct HfConfig {
    /// Whether tokenizer_config.json exists (when it does not, BOS/EOS are guessed).
    pub present: bool,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    pub chat_template: Option<String>,
    /// `eos_token_id` of generation_config.json (one id or a list).
    pub generation_eos_ids: Vec<u32>,
}

fn read_json(path: &Path) -> Result<Option<Json>, TextError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            serde_json::from_str(&text).map(Some).map_err(|source| TextError::Json { path: path.to_path_buf(), source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TextError::Io { path: path.to_path_buf(), source }),
    }
}

/// A special token written either as `"<s>"` or as `{"content": "<s>", ...}`.
fn token_text(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of `{"name", "template"}` of which "default" is the one.
fn template_text(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => {
            let named = |name: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(Json::as_str) == Some(name))
                    .and_then(|t| t.get("template")?.as_str())
            };
            named("default").or_else(|| list.first().and_then(|t| t.get("template")?.as_str())).map(str::to_string)
        }
        _ => None,
    }
}

impl HfConfig {
    /// Reads whichever of the files exist in `dir`.
    pub(crate) fn read(dir: &Path) -> Result<HfConfig, TextError> {
        let mut config = HfConfig::default();
        if let Some(json) = read_json(&dir.join("tokenizer_config.json"))? {
            config.present = true;
            config.bos_token = token_text(json.get("bos_token"));
            config.eos_token = token_text(json.get("eos_token"));
            config.add_bos_token = json.get("add_bos_token").and_then(Json::as_bool);
            config.add_eos_token = json.get("add_eos_token").and_then(Json::as_bool);
            config.chat_template = template_text(json.get("chat_template"));
        }
        // Newer exports keep the template in its own file, which then takes precedence.
        let jinja = dir.join("chat_template.jinja");
        match std::fs::read_to_string(&jinja) {
            Ok(text) => config.chat_template = Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(json) = read_json(&dir.join("chat_template.json"))? {
                    if let Some(t) = template_text(json.get("chat_template")) {
                        config.chat_template = Some(t);
                    }
                }
            }
            Err(source) => return Err(TextError::Io { path: jinja, source }),
        }
        if let Some(json) = read_json(&dir.join("generation_config.json"))? {
            let ids = match json.get("eos_token_id") {
                Some(Json::Array(a)) => a.iter().filter_map(Json::as_u64).collect(),
                Some(v) => v.as_u64().into_iter().collect(),
                None => Vec::new(),
            };
            config.generation_eos_ids = ids.into_iter().filter_map(|id| u32::try_from(id).ok()).collect();
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_tokens_in_both_spellings() {
        let j: Json = serde_json::json!({"a": "<s>", "b": {"content": "</s>", "lstrip": false}, "c": null});
        assert_eq!(token_text(j.get("a")).as_deref(), Some("<s>"));
        assert_eq!(token_text(j.get("b")).as_deref(), Some("</s>"));
        assert_eq!(token_text(j.get("c")), None);
    }

    #[test]
    fn named_templates_prefer_default() {
        let j: Json = serde_json::json!([
            {"name": "tool_use", "template": "T"},
            {"name": "default", "template": "D"}
        ]);
        assert_eq!(template_text(Some(&j)).as_deref(), Some("D"));
    }
}

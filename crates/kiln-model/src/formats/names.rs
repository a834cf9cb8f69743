//! The one table between GGUF tensor names (llama.cpp's `gguf-py/gguf/tensor_mapping.py`) and
//! Hugging Face `transformers` state-dict names, for the llama / mistral / qwen2 / qwen3 /
//! gemma3 families. Loading a Hugging Face directory and exporting to one both go through it.
//!
//! Only names map here; values may differ between the formats (GGUF llama Q/K rows are
//! permuted, GGUF Gemma norms hold `1 + w`), which the readers and writers handle.

use crate::config::Family;

/// Which families a block entry applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Only {
    All,
    Gemma3,
    NotGemma3,
}

impl Only {
    fn admits(self, family: Family) -> bool {
        match self {
            Only::All => true,
            Only::Gemma3 => family == Family::Gemma3,
            Only::NotGemma3 => family != Family::Gemma3,
        }
    }
}

/// Tensors outside the blocks: (Hugging Face, GGUF).
const GLOBAL: &[(&str, &str)] = &[
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// Tensors of block `i`: Hugging Face `model.layers.{i}.<hf>` ↔ GGUF `blk.{i}.<gguf>`.
/// Gemma 3 has four norms per block where llama has two, so `post_attention_layernorm` means
/// a different GGUF tensor in each.
const LAYER: &[(&str, &str, Only)] = &[
    ("input_layernorm.weight", "attn_norm.weight", Only::All),
    ("self_attn.q_proj.weight", "attn_q.weight", Only::All),
    ("self_attn.k_proj.weight", "attn_k.weight", Only::All),
    ("self_attn.v_proj.weight", "attn_v.weight", Only::All),
    ("self_attn.o_proj.weight", "attn_output.weight", Only::All),
    ("self_attn.q_proj.bias", "attn_q.bias", Only::All),
    ("self_attn.k_proj.bias", "attn_k.bias", Only::All),
    ("self_attn.v_proj.bias", "attn_v.bias", Only::All),
    ("self_attn.q_norm.weight", "attn_q_norm.weight", Only::All),
    ("self_attn.k_norm.weight", "attn_k_norm.weight", Only::All),
    ("post_attention_layernorm.weight", "ffn_norm.weight", Only::NotGemma3),
    ("post_attention_layernorm.weight", "post_attention_norm.weight", Only::Gemma3),
    ("pre_feedforward_layernorm.weight", "ffn_norm.weight", Only::Gemma3),
    ("post_feedforward_layernorm.weight", "post_ffw_norm.weight", Only::Gemma3),
    ("mlp.gate_proj.weight", "ffn_gate.weight", Only::All),
    ("mlp.up_proj.weight", "ffn_up.weight", Only::All),
    ("mlp.down_proj.weight", "ffn_down.weight", Only::All),
];

const HF_LAYER_PREFIX: &str = "model.layers.";
const GGUF_LAYER_PREFIX: &str = "blk.";

/// Splits `<prefix><index>.<rest>`, accepting only canonical indices (`0`, `17`, not `017`).
fn split_layer<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let tail = name.strip_prefix(prefix)?;
    let (index, rest) = tail.split_once('.')?;
    let canonical =
        !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) && (index == "0" || !index.starts_with('0'));
    if !canonical {
        return None;
    }
    Some((index.parse().ok()?, rest))
}

/// The Hugging Face name of GGUF tensor `name` in a model of `family`, if the table has one.
pub fn gguf_to_hf(name: &str, family: Family) -> Option<String> {
    if let Some(&(hf, _)) = GLOBAL.iter().find(|(_, g)| *g == name) {
        return Some(hf.to_string());
    }
    let (i, rest) = split_layer(name, GGUF_LAYER_PREFIX)?;
    let &(hf, _, _) = LAYER.iter().find(|(_, g, only)| *g == rest && only.admits(family))?;
    Some(format!("{HF_LAYER_PREFIX}{i}.{hf}"))
}

/// The GGUF name of Hugging Face tensor `name` in a model of `family`, if the table has one.
pub fn hf_to_gguf(name: &str, family: Family) -> Option<String> {
    if let Some(&(_, gguf)) = GLOBAL.iter().find(|(h, _)| *h == name) {
        return Some(gguf.to_string());
    }
    let (i, rest) = split_layer(name, HF_LAYER_PREFIX)?;
    let &(_, gguf, _) = LAYER.iter().find(|(h, _, only)| *h == rest && only.admits(family))?;
    Some(format!("{GGUF_LAYER_PREFIX}{i}.{gguf}"))
}

/// Whether GGUF tensor `name` is an RMSNorm weight (Gemma stores these as `w` in Hugging Face
/// files and `1 + w` in GGUF ones).
pub fn is_norm_weight(gguf_name: &str) -> bool {
    gguf_name.ends_with("norm.weight")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAMILIES: [Family; 4] = [Family::Llama, Family::Qwen2, Family::Qwen3, Family::Gemma3];

    /// Every pair written out by hand, per family group, so a typo in the table shows here.
    fn expected(family: Family) -> Vec<(&'static str, &'static str)> {
        let mut pairs = vec![
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
            ("model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"),
            ("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight"),
            ("model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight"),
            ("model.layers.0.self_attn.v_proj.weight", "blk.0.attn_v.weight"),
            ("model.layers.0.self_attn.o_proj.weight", "blk.0.attn_output.weight"),
            ("model.layers.0.self_attn.q_proj.bias", "blk.0.attn_q.bias"),
            ("model.layers.0.self_attn.k_proj.bias", "blk.0.attn_k.bias"),
            ("model.layers.0.self_attn.v_proj.bias", "blk.0.attn_v.bias"),
            ("model.layers.0.self_attn.q_norm.weight", "blk.0.attn_q_norm.weight"),
            ("model.layers.0.self_attn.k_norm.weight", "blk.0.attn_k_norm.weight"),
            ("model.layers.0.mlp.gate_proj.weight", "blk.0.ffn_gate.weight"),
            ("model.layers.0.mlp.up_proj.weight", "blk.0.ffn_up.weight"),
            ("model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight"),
            ("model.layers.17.mlp.down_proj.weight", "blk.17.ffn_down.weight"),
        ];
        if family == Family::Gemma3 {
            pairs.extend([
                ("model.layers.3.post_attention_layernorm.weight", "blk.3.post_attention_norm.weight"),
                ("model.layers.3.pre_feedforward_layernorm.weight", "blk.3.ffn_norm.weight"),
                ("model.layers.3.post_feedforward_layernorm.weight", "blk.3.post_ffw_norm.weight"),
            ]);
        } else {
            pairs.push(("model.layers.3.post_attention_layernorm.weight", "blk.3.ffn_norm.weight"));
        }
        pairs
    }

    #[test]
    fn every_pair_maps_both_ways() {
        for family in FAMILIES {
            for (hf, gguf) in expected(family) {
                assert_eq!(hf_to_gguf(hf, family).as_deref(), Some(gguf), "{family:?} {hf}");
                assert_eq!(gguf_to_hf(gguf, family).as_deref(), Some(hf), "{family:?} {gguf}");
            }
        }
    }

    #[test]
    fn table_is_covered_by_the_expected_pairs() {
        // Each table entry admitted for a family appears in that family's hand-written list.
        for family in FAMILIES {
            let exp = expected(family);
            for &(hf, gguf, only) in LAYER.iter().filter(|e| e.2.admits(family)) {
                let found = exp.iter().any(|(h, g)| h.ends_with(&format!(".{hf}")) && g.ends_with(&format!(".{gguf}")));
                assert!(found, "{family:?}: {hf} ↔ {gguf} ({only:?}) is not tested");
            }
        }
    }

    #[test]
    fn one_to_one_within_each_family() {
        for family in FAMILIES {
            let rows: Vec<_> = LAYER.iter().filter(|e| e.2.admits(family)).collect();
            for (a, ra) in rows.iter().enumerate() {
                for rb in &rows[a + 1..] {
                    assert_ne!(ra.0, rb.0, "{family:?}: two GGUF names for {}", ra.0);
                    assert_ne!(ra.1, rb.1, "{family:?}: two HF names for {}", ra.1);
                }
            }
        }
    }

    #[test]
    fn gemma_only_norms_do_not_leak_into_other_families() {
        assert_eq!(hf_to_gguf("model.layers.0.pre_feedforward_layernorm.weight", Family::Llama), None);
        assert_eq!(gguf_to_hf("blk.0.post_ffw_norm.weight", Family::Qwen3), None);
        assert_eq!(gguf_to_hf("blk.0.post_attention_norm.weight", Family::Llama), None);
    }

    #[test]
    fn unknown_and_malformed_names_map_to_none() {
        for family in FAMILIES {
            for name in [
                "",
                "blk.",
                "blk.0",
                "blk.x.attn_q.weight",
                "blk.-1.attn_q.weight",
                "blk.01.attn_q.weight",
                "blk.0.attn_qq.weight",
                "rope_freqs.weight",
                "model.layers.0.self_attn.rotary_emb.inv_freq",
                "model.layers..mlp.up_proj.weight",
                "model.layers.99999999999999999999999.mlp.up_proj.weight",
            ] {
                assert_eq!(gguf_to_hf(name, family), None, "{name}");
                assert_eq!(hf_to_gguf(name, family), None, "{name}");
            }
        }
    }

    #[test]
    fn norm_weights_are_recognised() {
        assert!(is_norm_weight("blk.2.attn_q_norm.weight"));
        assert!(is_norm_weight("blk.2.post_ffw_norm.weight"));
        assert!(is_norm_weight("output_norm.weight"));
        assert!(!is_norm_weight("blk.2.attn_q.weight"));
        assert!(!is_norm_weight("token_embd.weight"));
    }
}

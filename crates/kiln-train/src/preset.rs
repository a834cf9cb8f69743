//! Model-size presets and the training configuration. A preset fixes the shape (width, depth,
//! heads, context) and sensible optimisation defaults for that size; every field can then be
//! overridden. The resolved [`TrainConfig`] is saved in the run directory, so `--resume` needs
//! nothing else.

use crate::schedule::Decay;
use crate::{Result, TrainError};
use kiln_model::config::{Family, RopeStyle};
use kiln_model::ModelConfig;
use serde::{Deserialize, Serialize};

/// The shape of a model, independent of the vocabulary (which the tokenizer fixes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    /// The block's family (norms, biases, activation, attention pattern): see
    /// [`TrainConfig::model_config`]. Runs saved before families existed are llama.
    #[serde(default = "llama")]
    pub family: Family,
    /// Residual width.
    pub dim: usize,
    /// Blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Feed-forward hidden width.
    pub ffn_dim: usize,
    /// Context length (also the training sequence length).
    pub context: usize,
    /// RoPE base.
    pub rope_theta: f32,
    /// Output projection shares the embedding matrix.
    pub tied: bool,
}

/// Everything a training run needs, saved as `train_config.json` in the run directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The preset this started from (informational).
    pub preset: String,
    /// Model shape.
    pub shape: Shape,
    /// Vocabulary size (from the tokenizer).
    pub vocab_size: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per forward/backward pass.
    pub micro_batch: usize,
    /// Tokens per optimizer step (gradient accumulation fills it with micro-batches).
    pub batch_tokens: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_frac: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Decay after warm-up.
    pub decay: Decay,
    /// AdamW decoupled weight decay (matrices only).
    pub weight_decay: f64,
    /// AdamW β1.
    pub beta1: f64,
    /// AdamW β2.
    pub beta2: f64,
    /// AdamW ε.
    pub eps: f64,
    /// The optimizer of the hidden weight matrices (AdamW takes everything else either way).
    #[serde(default)]
    pub optimizer: MatrixOptimizer,
    /// Muon's peak learning rate (it follows the same schedule as `lr`).
    #[serde(default = "default_muon_lr")]
    pub muon_lr: f64,
    /// Muon's momentum.
    #[serde(default = "default_muon_momentum")]
    pub muon_momentum: f64,
    /// Global gradient-norm clip (0 disables).
    pub grad_clip: f64,
    /// Evaluate validation loss every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Micro-batches per validation estimate.
    pub eval_batches: usize,
    /// Print a sample every this many steps (0: never).
    pub sample_every: usize,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub ckpt_every: usize,
    /// Checkpoints kept.
    pub keep: usize,
    /// Seed for initialisation and batch sampling.
    pub seed: u64,
}

/// Which optimizer updates the hidden weight matrices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatrixOptimizer {
    /// AdamW, like every other parameter.
    #[default]
    AdamW,
    /// Muon ([`crate::optim::Muon`]); embeddings, the head and norms stay on AdamW.
    Muon,
}

fn llama() -> Family {
    Family::Llama
}

fn default_muon_lr() -> f64 {
    0.02
}

fn default_muon_momentum() -> f64 {
    0.95
}

/// The preset names, smallest first.
pub const PRESETS: &[&str] = &["nano", "micro", "mini", "small", "gpt2-small"];

impl TrainConfig {
    /// The defaults of preset `name` for a vocabulary of `vocab_size`.
    pub fn preset(name: &str, vocab_size: usize) -> Result<TrainConfig> {
        // (dim, layers, heads, kv heads, ffn, context, micro-batch, batch tokens, lr, steps)
        let (dim, n_layers, n_heads, n_kv_heads, ffn_dim, context, micro_batch, batch_tokens, lr, steps) = match name {
            "nano" => (64, 2, 4, 2, 192, 64, 16, 1024, 3e-3, 200),
            "micro" => (128, 4, 4, 2, 352, 128, 16, 4096, 2e-3, 1000),
            "mini" => (256, 6, 8, 4, 704, 256, 8, 8192, 1e-3, 2000),
            "small" => (384, 8, 6, 6, 1024, 512, 8, 16384, 8e-4, 5000),
            "gpt2-small" => (768, 12, 12, 12, 2048, 1024, 4, 524_288, 6e-4, 19_073),
            other => {
                return Err(TrainError::Config(format!("unknown preset {other:?}; presets: {}", PRESETS.join(", "))))
            }
        };
        let mut config = TrainConfig {
            preset: name.to_string(),
            shape: Shape {
                family: Family::Llama,
                dim,
                n_layers,
                n_heads,
                n_kv_heads,
                ffn_dim,
                context,
                rope_theta: 10_000.0,
                tied: true,
            },
            vocab_size,
            steps,
            micro_batch,
            batch_tokens,
            lr,
            min_lr_frac: 0.1,
            warmup: 0,
            decay: Decay::Cosine,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            optimizer: MatrixOptimizer::AdamW,
            muon_lr: default_muon_lr(),
            muon_momentum: default_muon_momentum(),
            grad_clip: 1.0,
            eval_every: 0,
            eval_batches: 8,
            sample_every: 0,
            ckpt_every: 0,
            keep: 2,
            seed: 1337,
        };
        config.set_steps(steps);
        Ok(config)
    }

    /// Sets the number of optimizer steps; warm-up (a twentieth) and the evaluation and
    /// checkpoint (a tenth) and sampling (a quarter) intervals follow it. Set those after this
    /// call to override them.
    pub fn set_steps(&mut self, steps: usize) {
        self.steps = steps;
        self.warmup = (steps / 20).max(1);
        self.eval_every = (steps / 10).max(1);
        self.sample_every = (steps / 4).max(1);
        self.ckpt_every = (steps / 10).max(1);
    }

    /// Micro-batches accumulated per optimizer step.
    pub fn accum_steps(&self) -> usize {
        (self.batch_tokens / (self.micro_batch * self.shape.context)).max(1)
    }

    /// Tokens actually processed per optimizer step.
    pub fn tokens_per_step(&self) -> usize {
        self.accum_steps() * self.micro_batch * self.shape.context
    }

    /// Rejects impossible combinations with one clear message.
    pub fn validate(&self) -> Result<()> {
        let s = &self.shape;
        let bad = |m: &str| Err(TrainError::Config(m.to_string()));
        if s.n_heads == 0 || !s.dim.is_multiple_of(s.n_heads) || !(s.dim / s.n_heads).is_multiple_of(2) {
            return bad("--dim must be a multiple of --heads with an even head width");
        }
        if s.n_kv_heads == 0 || !s.n_heads.is_multiple_of(s.n_kv_heads) {
            return bad("--heads must be a multiple of --kv-heads");
        }
        if s.context < 2 || self.micro_batch == 0 || self.steps == 0 {
            return bad("--context must be at least 2, --micro-batch and --steps at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && (0.0..=1.0).contains(&self.min_lr_frac)) {
            return bad("--lr must be positive and --min-lr-frac in [0, 1]");
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("AdamW betas must be in [0, 1)");
        }
        if self.keep == 0 {
            return bad("--keep must be at least 1");
        }
        if !(self.muon_lr > 0.0 && self.muon_lr.is_finite() && (0.0..1.0).contains(&self.muon_momentum)) {
            return bad("--muon-lr must be positive and --muon-momentum in [0, 1)");
        }
        self.model_config().validate()?;
        Ok(())
    }

    /// The kiln-model configuration of this shape. The family's switches come from
    /// [`ModelConfig::for_family`]; the rest follows the released models of the family at this
    /// width: Qwen and Gemma use RMSNorm ε 1e-6, Gemma 3 a local RoPE base of 10 000 and a
    /// sliding window of half the context (at most 512, Gemma 3's own) on five layers of six.
    pub fn model_config(&self) -> ModelConfig {
        let s = &self.shape;
        let head_dim = s.dim / s.n_heads.max(1);
        let family = ModelConfig::for_family(s.family);
        let gemma = s.family == Family::Gemma3;
        ModelConfig {
            vocab_size: self.vocab_size,
            dim: s.dim,
            n_layers: s.n_layers,
            n_heads: s.n_heads,
            n_kv_heads: s.n_kv_heads,
            head_dim,
            ffn_dim: s.ffn_dim,
            context_length: s.context,
            rms_eps: if s.family == Family::Llama { 1e-5 } else { 1e-6 },
            rope_theta: s.rope_theta,
            rope_theta_local: if gemma { 10_000.0 } else { s.rope_theta },
            rope_dim: head_dim,
            rope_style: RopeStyle::Halves,
            sliding_window: gemma.then(|| (s.context / 2).clamp(1, 512)),
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            ..family
        }
    }

    /// Forward+backward FLOPs per token: 6·N for the matrices plus attention's 6·layers·ctx·dim
    /// (Kaplan et al. 2020, PaLM's MFU accounting), the numerator of the MFU estimate.
    pub fn flops_per_token(&self, n_params: usize) -> f64 {
        let s = &self.shape;
        let embed = if s.tied { 0 } else { self.vocab_size * s.dim };
        6.0 * (n_params - embed) as f64 + 6.0 * (s.n_layers * s.context * s.dim) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Transformer;

    #[test]
    fn schedule_follows_the_step_count() {
        let micro = TrainConfig::preset("micro", 512).unwrap();
        assert_eq!(
            (micro.steps, micro.warmup, micro.eval_every, micro.sample_every, micro.ckpt_every),
            (1000, 50, 100, 250, 100)
        );
        let mut short = micro.clone();
        short.set_steps(30);
        assert_eq!(
            (short.steps, short.warmup, short.eval_every, short.sample_every, short.ckpt_every),
            (30, 1, 3, 7, 3)
        );
        short.set_steps(5);
        assert_eq!((short.warmup, short.eval_every, short.sample_every, short.ckpt_every), (1, 1, 1, 1));
    }

    #[test]
    fn presets_validate_and_sizes_grow() {
        let mut last = 0;
        for name in PRESETS {
            let c = TrainConfig::preset(name, 8192).unwrap();
            c.validate().unwrap();
            let n: usize = Transformer::param_shapes(&c.model_config(), c.shape.tied)
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum();
            assert!(n > last, "{name}: {n}");
            last = n;
        }
        let gpt2 = TrainConfig::preset("gpt2-small", 50_257).unwrap();
        let n: usize = Transformer::param_shapes(&gpt2.model_config(), true)
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert!((120_000_000..130_000_000).contains(&n), "{n}");
        assert!(TrainConfig::preset("huge", 10).is_err());
    }
}

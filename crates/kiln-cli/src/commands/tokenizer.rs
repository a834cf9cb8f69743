//! `kiln tokenizer train`: a byte-level BPE tokenizer from a corpus
//! ([`kiln_train::tokenizer_train`] reads the corpus, [`kiln_text::bpe_train`] trains).

use crate::output::outln;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `kiln tokenizer`.
#[derive(Args, Debug)]
pub struct TokenizerArgs {
    #[command(subcommand)]
    pub action: TokenizerAction,
}

/// What to do with tokenizers.
#[derive(Subcommand, Debug)]
pub enum TokenizerAction {
    /// Train a byte-level BPE tokenizer (GPT-4-style splits, ChatML special tokens).
    Train(TokenizerTrainArgs),
}

/// `kiln tokenizer train`.
#[derive(Args, Debug)]
pub struct TokenizerTrainArgs {
    /// Text files or folders (.txt and other text, .jsonl with a "text" field, .parquet).
    #[arg(long)]
    pub data: PathBuf,
    /// Vocabulary size, special tokens included.
    #[arg(long, default_value_t = 8192)]
    pub vocab: usize,
    /// Learn merges from at most this many bytes of the corpus.
    #[arg(long, default_value_t = 1 << 30)]
    pub max_bytes: u64,
    /// Output directory (tokenizer.json, tokenizer_config.json, tokenizer_report.json).
    #[arg(short, long)]
    pub out: PathBuf,
}

/// Runs the command.
pub fn tokenizer(args: &TokenizerArgs) -> Result<()> {
    match &args.action {
        TokenizerAction::Train(a) => {
            let report = kiln_model::threads::pool()
                .install(|| kiln_train::tokenizer_train::train_tokenizer(&a.data, a.vocab, a.max_bytes, &a.out))
                .with_context(|| format!("cannot train a tokenizer on {}", a.data.display()))?;
            outln!(
                "wrote {} ({} tokens) in {:.1}s: {:.2} bytes/token on {} held-out bytes",
                a.out.display(),
                report.vocab_size,
                report.seconds,
                report.bytes_per_token,
                report.heldout_bytes
            );
            Ok(())
        }
    }
}

//! `kiln ppl`: perplexity of a text file by llama-perplexity's method, so the figures compare.
//!
//! The text is tokenized whole (BOS added when the model wants it), cut into chunks of `ctx`
//! tokens; each chunk is evaluated from an empty cache with its first token replaced by BOS
//! (when the model uses one), and only the second half of each chunk is scored, so every
//! scored token has at least ctx/2 tokens of context.

use crate::args::PplArgs;
use crate::load::load;
use crate::output::{out, outln};
use anyhow::{bail, Context, Result};
use kiln_eval::score::log_softmax_at;
use kiln_eval::tasks::ppl::NllTotals;

/// Runs the command.
pub fn ppl(args: &PplArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.text).with_context(|| format!("cannot read {}", args.text.display()))?;
    let lm = load(args.model.model.as_deref())?;
    let ctx = args.model.ctx.unwrap_or(512);
    if ctx < 8 {
        bail!("--ctx must be at least 8 for perplexity");
    }
    // As llama-perplexity: special tokens written in the text are plain text.
    let tokens = lm.tokenizer.encode_with(&text, true, false)?;
    let n_chunks_max = tokens.len() / ctx;
    if n_chunks_max == 0 {
        bail!("{} tokenizes to {} tokens, fewer than one chunk of --ctx {ctx}", args.text.display(), tokens.len());
    }
    let n_chunks = args.chunks.map_or(n_chunks_max, |c| c.min(n_chunks_max));
    let bos = lm.tokenizer.bos_id().filter(|_| lm.tokenizer.adds_bos());
    eprintln!("perplexity: {} tokens, {n_chunks} chunks of {ctx}", tokens.len());
    let mut state = lm.model.new_state(ctx);
    let first = ctx / 2;
    let mut stats = NllTotals::default();
    let mut chunk = vec![0u32; ctx];
    let vocab = lm.model.config.vocab_size;
    for i in 0..n_chunks {
        chunk.copy_from_slice(&tokens[i * ctx..(i + 1) * ctx]);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        state.cache.clear();
        let logits = lm.model.forward(&mut state, &chunk, true)?;
        for pos in first..ctx - 1 {
            stats.add(-log_softmax_at(&logits[pos * vocab..(pos + 1) * vocab], tokens[i * ctx + pos + 1]));
        }
        out!("[{}]{:.4},", i + 1, stats.ppl().0);
    }
    outln!();
    let (ppl, err) = stats.ppl();
    outln!("PPL = {ppl:.4} +/- {err:.5}");
    Ok(())
}

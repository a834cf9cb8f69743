//! `kiln tokenizer train`'s corpus: the files under a path read as pretraining reads them, every
//! `VAL_EVERY`th chunk held out to measure compression, the rest (up to a byte budget) handed
//! to kiln-text's BPE trainer ([`kiln_text::bpe_train`]).

use crate::data::{for_each_chunk, source_files, VAL_EVERY};
use crate::{Result, TrainError};
use kiln_text::bpe_train::{train_bpe, TokenizerReport, MIN_VOCAB};
use std::path::Path;

/// Trains a tokenizer of `vocab_size` tokens on the files under `data` (at most `max_bytes` of
/// them) and writes it to `out`.
pub fn train_tokenizer(data: &Path, vocab_size: usize, max_bytes: u64, out: &Path) -> Result<TokenizerReport> {
    if vocab_size < MIN_VOCAB {
        return Err(TrainError::Config(format!("--vocab must be at least {MIN_VOCAB} (256 bytes + special tokens)")));
    }
    let (mut train, mut heldout) = (Vec::new(), Vec::new());
    let mut taken = 0u64;
    let mut k = 0usize;
    for file in source_files(data)? {
        if taken >= max_bytes {
            break;
        }
        for_each_chunk(&file, &mut |text| {
            k += 1;
            if k.is_multiple_of(VAL_EVERY) {
                heldout.push(text);
            } else if taken < max_bytes {
                taken += text.len() as u64;
                train.push(text);
            }
            Ok(())
        })?;
    }
    if train.is_empty() {
        return Err(TrainError::Data(format!("{}: no text to train a tokenizer on", data.display())));
    }
    Ok(train_bpe(&train, heldout, vocab_size, out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_out_every_tenth_chunk_and_names_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("c.txt");
        let line = "ROMEO: But soft, what light through yonder window breaks? JULIET: O Romeo.\n";
        std::fs::write(&corpus, line.repeat(20_000)).unwrap();
        let report = train_tokenizer(&corpus, 300, u64::MAX, &dir.path().join("tok")).unwrap();
        assert_eq!(report.measured_on, "held-out");
        assert!(report.heldout_bytes > 0 && report.train_bytes > 8 * report.heldout_bytes, "{report:?}");
        let e = train_tokenizer(&corpus, 100, u64::MAX, &dir.path().join("t")).unwrap_err();
        assert!(e.to_string().contains("--vocab must be at least"), "{e}");
    }
}

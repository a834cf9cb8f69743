//! Supervised fine-tuning: next-token cross-entropy on the assistant's tokens only (the mask
//! [`kiln_text::Tokenizer::encode_segments`] gives for the chat template as inference renders
//! it), averaged over the trained tokens of an optimizer step.

use crate::finetune::{
    batches, encode_example, pack, pass_budget, read_data, scalar, weighted_logps, Example, Loader, Net, Run,
    StepStats, Task,
};
use crate::optim::GradAccum;
use crate::Result;
use kiln_text::conversation::conversation_from_json;
use kiln_text::{ChatTemplate, Tokenizer};

/// SFT's data: encoded conversations, split into training and validation.
pub struct Sft {
    /// Training examples.
    pub train: Vec<Example>,
    /// Held-out examples.
    pub val: Vec<Example>,
    batch_tokens: usize,
    batch_rows: Option<usize>,
    max_len: usize,
    pack: bool,
}

/// Reads and encodes the conversations of `run`'s data (bad rows reported through `report`).
pub fn load(run: &Run, report: &mut dyn FnMut(&str)) -> Result<Sft> {
    let cfg = &run.cfg;
    let rows = read_data(&cfg.data, conversation_from_json, cfg.fail_on_bad_row, report)?;
    let examples = encode_all(&run.tok, &run.template, &rows, cfg.max_len, cfg.fail_on_bad_row, report)?;
    let (train, val) = crate::finetune::split(&examples, cfg.val_rows, cfg.seed);
    report(&format!(
        "{} conversations: {} for training ({} trained tokens), {} held out",
        examples.len(),
        train.len(),
        train.iter().map(Example::n_trained).sum::<usize>(),
        val.len()
    ));
    Ok(Sft {
        train,
        val,
        batch_tokens: cfg.batch_tokens,
        batch_rows: cfg.batch_rows,
        max_len: cfg.max_len,
        pack: cfg.pack,
    })
}

/// Encodes conversations; one the template cannot render is a bad row (skipped or fatal).
pub fn encode_all(
    tok: &Tokenizer,
    template: &ChatTemplate,
    rows: &[(String, kiln_text::conversation::Conversation)],
    max_len: usize,
    fail: bool,
    report: &mut dyn FnMut(&str),
) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for (loc, conv) in rows {
        match encode_example(tok, template, &conv.messages, 0, max_len) {
            Ok(Some(ex)) => out.push(ex),
            Ok(None) => report(&format!("skipped {loc}: nothing to learn within {max_len} tokens")),
            Err(e) if fail => return Err(crate::TrainError::Data(format!("{loc}: {e}"))),
            Err(e) => report(&format!("skipped {loc}: {e}")),
        }
    }
    if out.is_empty() {
        return Err(crate::TrainError::Data("no conversation left to train on".into()));
    }
    Ok(out)
}

/// Mean negative log-likelihood per trained token of `examples` (no gradient used).
pub fn mean_nll(net: &Net, examples: &[Example], max_len: usize) -> Result<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    let refs: Vec<&Example> = examples.iter().collect();
    for batch in batches(&refs, pass_budget(max_len)) {
        sum -= scalar(&net.model.no_grad(|| weighted_logps(&net.model, &batch))?.sum_all()?)?;
        n += batch.iter().map(|ex| ex.n_trained()).sum::<usize>();
    }
    Ok(sum / n.max(1) as f64)
}

impl Task for Sft {
    fn n_train(&self) -> usize {
        self.train.len()
    }

    fn step(&mut self, net: &Net, loader: &mut Loader, acc: &mut GradAccum) -> Result<StepStats> {
        let mut picked: Vec<&Example> = Vec::new();
        let mut trained = 0;
        let more = |picked: &[&Example], trained: usize| match self.batch_rows {
            Some(n) => picked.len() < n,
            None => trained < self.batch_tokens,
        };
        while more(&picked, trained) {
            let ex = &self.train[loader.next_index()];
            trained += ex.n_trained();
            picked.push(ex);
        }
        let rows = if self.pack { pack(&picked, self.max_len) } else { picked.into_iter().cloned().collect() };
        let params = net.trainable();
        let (mut nll, mut tokens) = (0.0, 0);
        let refs: Vec<&Example> = rows.iter().collect();
        for batch in batches(&refs, pass_budget(self.max_len)) {
            let logp = weighted_logps(&net.model, &batch)?.sum_all()?;
            nll -= scalar(&logp)?;
            tokens += batch.iter().map(|row| row.ids.len() - 1).sum::<usize>();
            // The step's loss is the mean over its trained tokens: each row's share is its sum.
            let loss = (logp * (-1.0 / trained as f64))?;
            acc.add(&params, &loss.backward()?, 1.0)?;
        }
        Ok(StepStats { loss: nll / trained as f64, tokens, extra: vec![("rows".into(), rows.len() as f64)] })
    }

    fn evaluate(&mut self, net: &Net) -> Result<Vec<(String, f64)>> {
        if self.val.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![("val_loss".into(), mean_nll(net, &self.val, self.max_len)?)])
    }
}

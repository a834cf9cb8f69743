//! `--think N`: N answers sampled together (the prompt computed once), one chosen by vote,
//! by the calculator's check of the working, or by a reward model.

use crate::load::LoadedModel;
use crate::output::Stdout;
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_assist::verify::Chooser;
use kiln_generate::think::{self, final_answer, Budget};
use kiln_generate::{GenerateOptions, Scheduler, SchedulerConfig};
use std::path::Path;
use std::sync::Arc;

/// Most samples one answer may draw (each holds a KV cache).
const MAX_SAMPLES: usize = 64;

/// How long to think: shared by run and eval.
#[derive(Args, Debug, Clone)]
pub struct ThinkFlags {
    /// Think longer: sample N answers, decoded together with the prompt computed once, and
    /// choose one (1 answers as usual).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub think: usize,
    /// How one of the N is chosen: vote (the final answer most samples give), calc (the vote
    /// among samples whose arithmetic the calculator confirms), rm:DIR (the answer a `kiln rm`
    /// run scores highest). eval takes several, comma-separated, and scores each on the same
    /// samples.
    #[arg(long, value_name = "HOW", default_value = "vote")]
    pub choose: String,
    /// Stop sampling at a budget: 30s, 2m or 5000t (tokens over all samples), comma-separated.
    #[arg(long, value_name = "LIMIT")]
    pub think_budget: Option<String>,
}

impl ThinkFlags {
    /// The budget, or None when not thinking longer.
    pub fn budget(&self) -> Result<Option<Budget>> {
        if self.think == 0 {
            bail!("--think must be at least 1");
        }
        if self.think > MAX_SAMPLES {
            bail!("--think {} is more than the {MAX_SAMPLES} samples one answer may draw", self.think);
        }
        if self.think == 1 && self.think_budget.is_none() {
            if self.choose != "vote" {
                bail!("--choose needs --think N with N > 1");
            }
            return Ok(None);
        }
        let budget = Budget::samples(self.think);
        Ok(Some(match &self.think_budget {
            Some(spec) => budget.limit(spec).map_err(anyhow::Error::msg)?,
            None => budget,
        }))
    }

    /// The one chooser `--choose` names (a reward model is loaded here).
    pub fn chooser(&self) -> Result<Chooser<'static>> {
        if self.choose.contains(',') {
            bail!("--choose takes one way to choose here; eval compares several");
        }
        named_chooser(&self.choose)
    }

    /// Every chooser `--choose` names, comma-separated, with its name.
    pub fn choosers(&self) -> Result<Vec<(String, Chooser<'static>)>> {
        let names: Vec<&str> = self.choose.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if names.is_empty() {
            bail!("--choose is empty: use vote, calc or rm:DIR");
        }
        names.into_iter().map(|n| Ok((n.to_string(), named_chooser(n)?))).collect()
    }
}

fn named_chooser(name: &str) -> Result<Chooser<'static>> {
    match name.strip_prefix("rm:") {
        Some(dir) => reward_chooser(Path::new(dir)),
        None => Chooser::named(name).map_err(anyhow::Error::msg),
    }
}

/// Best-of-N by a reward model: each (question, answer) scored as `kiln rm score` scores it.
fn reward_chooser(dir: &Path) -> Result<Chooser<'static>> {
    let mut score = super::rm::scorer(dir)?;
    Ok(Chooser::Score(Box::new(move |question, answer| score(question, answer).map_err(|e| format!("{e:#}")))))
}

/// A scheduler with one slot per sample, so the N samples decode as one batch.
pub fn scheduler(
    model: Arc<kiln_model::Model>,
    tokenizer: Arc<kiln_text::Tokenizer>,
    budget: &Budget,
    ctx: usize,
) -> Scheduler {
    Scheduler::start(model, tokenizer, SchedulerConfig { parallel: budget.samples, queue: 0, context: ctx })
}

/// The user's question, as text (for a reward model) and as prompt tokens.
pub struct Question<'a> {
    /// The user's message.
    pub text: &'a str,
    /// The whole prompt, template applied.
    pub tokens: &'a [u32],
}

/// `kiln run --think N`: prints the chosen answer; the samples' answers and the cost go to
/// stderr.
pub fn run(
    lm: LoadedModel,
    ctx: usize,
    question: Question,
    opts: &GenerateOptions,
    mut chooser: Chooser,
    budget: &Budget,
    quiet: bool,
) -> Result<()> {
    let scheduler = scheduler(Arc::new(lm.model), Arc::new(lm.tokenizer), budget, ctx);
    let got = think::sample(&scheduler, question.tokens, opts, budget).context("sampling failed")?;
    let choice = chooser.choose(question.text, &got.samples).map_err(anyhow::Error::msg)?;
    let mut out = Stdout::new();
    let Some(choice) = choice else {
        bail!("the budget ran out before any answer was sampled; raise --think-budget");
    };
    out.write(&got.samples[choice.index].text)?;
    if !out.closed() {
        out.write("\n")?;
    }
    if !quiet {
        let answers: Vec<String> =
            got.samples.iter().map(|s| final_answer(&s.text).unwrap_or_else(|| "–".into())).collect();
        let secs = got.elapsed.as_secs_f64().max(1e-9);
        eprintln!(
            "[{} samples, final answers {} | chosen: sample {} by {} | prompt {} tokens, {} computed | generated {} tokens in {:.1} s, {:.1} tok/s]",
            got.samples.len(),
            answers.join(" "),
            choice.index + 1,
            choice.reason,
            got.prompt_tokens,
            got.prompt_tokens_computed,
            got.generated_tokens,
            secs,
            got.generated_tokens as f64 / secs
        );
    }
    Ok(())
}

/// One chat answer thought longer: `n` samples decoded together in this thread, the chosen
/// one returned, the samples' final answers on stderr.
pub fn answer_in_chat(
    lm: &LoadedModel,
    ctx: usize,
    (question, prompt): (&str, &[u32]),
    opts: &GenerateOptions,
    chooser: &mut Chooser,
    n: usize,
) -> Result<String> {
    let got = think::sample_batch(&lm.model, &lm.tokenizer, &[(prompt, opts.sampling.seed)], n, opts, ctx)?;
    let samples = &got[0].samples;
    let choice = chooser.choose(question, samples).map_err(anyhow::Error::msg)?.context("no sample was drawn")?;
    let answers: Vec<String> = samples.iter().map(|s| final_answer(&s.text).unwrap_or_else(|| "–".into())).collect();
    eprintln!(
        "[{n} samples, final answers {} | chosen: sample {} by {}]",
        answers.join(" "),
        choice.index + 1,
        choice.reason
    );
    Ok(samples[choice.index].text.clone())
}

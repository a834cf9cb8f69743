//! `kiln rm`: a reward model (scalar head on the transformer, Bradley–Terry loss) trained on
//! comparisons into a run directory; `kiln rm score` scores answers with one
//! ([`kiln_train::reward`] does the work).

use crate::commands::sft::{describe, train_and_write, FinetuneArgs};
use crate::output::outln;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kiln_text::ChatMessage;
use kiln_train::finetune::{encode_example, template_of};
use kiln_train::reward::{self, Rm};
use std::path::{Path, PathBuf};

/// `kiln rm`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RmArgs {
    #[command(subcommand)]
    pub action: Option<RmAction>,
    #[command(flatten)]
    pub common: FinetuneArgs,
    /// Comparisons per optimizer step.
    #[arg(long)]
    pub batch_pairs: Option<usize>,
}

/// What `kiln rm` does besides training.
#[derive(Subcommand, Debug)]
pub enum RmAction {
    /// Print the reward of answers: --prompt and --answer, or a JSONL file of {prompt, answer}.
    Score(ScoreArgs),
}

/// `kiln rm score`.
#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// A reward-model run directory made by `kiln rm`.
    #[arg(short, long)]
    pub model: PathBuf,
    /// The user's message.
    #[arg(long, requires = "answer")]
    pub prompt: Option<String>,
    /// Answers to score (repeat for several).
    #[arg(long)]
    pub answer: Vec<String>,
    /// JSON Lines of {"prompt", "answer"}: one score per line.
    #[arg(long, conflicts_with = "prompt")]
    pub data: Option<PathBuf>,
}

/// Runs `kiln rm`.
pub fn rm(args: &RmArgs) -> Result<()> {
    if let Some(RmAction::Score(s)) = &args.action {
        return score(s);
    }
    let mut run = args.common.open(
        "rm",
        |c| {
            if let Some(b) = args.batch_pairs {
                c.batch_pairs = b;
            }
            if args.common.lr.is_none() {
                // The head starts at zero and needs larger steps than the body.
                c.lr = if c.lora.is_some() { 2e-4 } else { 2e-5 };
            }
            Ok(())
        },
        |cfg| Ok(vec![(reward::HEAD.to_string(), reward::zero_head(cfg.dim)?)]),
    )?;
    let mut data = Rm::load(&run, &mut |l| eprintln!("{l}"))?;
    describe(&run);
    let last = train_and_write(&mut run, &mut data, args.common.quiet)?;
    let head = run.net.extra.iter().find(|(n, _)| n == reward::HEAD).map(|(_, v)| v.as_tensor().clone());
    if let Some(h) = head {
        reward::save_head(&run.dir, &h)?;
    }
    let f = |k: &str| last[k].as_f64().unwrap_or(f64::NAN);
    outln!(
        "{}: step {}, loss {:.4}; held out: loss {:.4}, accuracy {:.3} (one-sided binomial p against chance {:.3}); score answers with `kiln rm score --model {0}`",
        run.dir.display(),
        run.step,
        f("loss"),
        f("val_loss"),
        f("val_accuracy"),
        f("val_accuracy_p"),
    );
    Ok(())
}

/// The reward of an answer to a user's message, by the reward model of run `dir`.
pub fn scorer(dir: &Path) -> Result<impl FnMut(&str, &str) -> Result<f64>> {
    let (model, head, tok) =
        reward::load_reward_model(dir).with_context(|| format!("cannot load the reward model {}", dir.display()))?;
    let template = template_of(&tok)?;
    let pool = kiln_model::threads::pool();
    Ok(move |prompt: &str, answer: &str| {
        let msgs = [ChatMessage::new("user", prompt), ChatMessage::new("assistant", answer)];
        let ex = encode_example(&tok, &template, &msgs, 0, usize::MAX - 1)
            .map_err(anyhow::Error::msg)?
            .context("the answer is empty")?;
        Ok(pool.install(|| reward::score_example(&model, &head, &ex))?)
    })
}

fn score(args: &ScoreArgs) -> Result<()> {
    let mut score = scorer(&args.model)?;
    let mut items: Vec<(String, String)> = Vec::new();
    match (&args.prompt, &args.data) {
        (Some(p), None) => items.extend(args.answer.iter().map(|a| (p.clone(), a.clone()))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
                match (v["prompt"].as_str(), v["answer"].as_str()) {
                    (Some(p), Some(a)) => items.push((p.into(), a.into())),
                    _ => bail!("{} line {}: needs \"prompt\" and \"answer\" strings", path.display(), i + 1),
                }
            }
        }
        _ => bail!("kiln rm score needs --prompt and --answer, or --data FILE"),
    }
    for (p, a) in &items {
        let r = score(p, a)?;
        outln!("{r:.4}\t{}", a.replace('\n', " "));
    }
    Ok(())
}

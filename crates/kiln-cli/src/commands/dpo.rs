//! `kiln dpo`: direct preference optimization of a fine-tuned model on comparisons, full or
//! LoRA, into a run directory ([`kiln_train::dpo`] does the work).

use crate::commands::sft::{describe, train_and_write, FinetuneArgs};
use crate::output::outln;
use anyhow::Result;
use clap::Args;
use kiln_train::dpo::Dpo;

/// `kiln dpo`.
#[derive(Args, Debug)]
pub struct DpoArgs {
    #[command(flatten)]
    pub common: FinetuneArgs,
    /// β: how far the policy may move from the reference (higher: closer).
    #[arg(long)]
    pub beta: Option<f64>,
    /// Comparisons per optimizer step.
    #[arg(long)]
    pub batch_pairs: Option<usize>,
}

/// Runs `kiln dpo`.
pub fn dpo(args: &DpoArgs) -> Result<()> {
    let mut run = args.common.open(
        "dpo",
        |c| {
            if let Some(b) = args.beta {
                c.beta = b;
            }
            if let Some(b) = args.batch_pairs {
                c.batch_pairs = b;
            }
            Ok(())
        },
        |_| Ok(Vec::new()),
    )?;
    let mut data = kiln_model::threads::pool().install(|| Dpo::load(&run, &mut |l| eprintln!("{l}")))?;
    describe(&run);
    let before = data.reference_stats();
    let before_mean = data.reference_mean_logp_accuracy();
    eprintln!(
        "held-out preference accuracy of the starting model: {:.3} by summed, {before_mean:.3} by mean reply log-prob",
        before.logp_accuracy
    );
    let last = train_and_write(&mut run, &mut data, args.common.quiet)?;
    let f = |k: &str| last[k].as_f64().unwrap_or(f64::NAN);
    outln!(
        "{}: step {}, loss {:.4}, rewards/margins {:.4}, rewards/accuracies {:.3}; held out: loss {:.4}, reward accuracy {:.3}; model in {}",
        run.dir.display(),
        run.step,
        f("loss"),
        f("rewards/margins"),
        f("rewards/accuracies"),
        f("val_loss"),
        f("val_rewards/accuracies"),
        run.dir.join("model").display()
    );
    // The model's own preference on the held-out pairs, against the starting model's, with the
    // pairs that changed (McNemar's exact test, one-sided).
    for (what, key, start) in [("summed", "val_logp", before.logp_accuracy), ("mean", "val_mean_logp", before_mean)] {
        outln!(
            "held-out preference accuracy by {what} reply log-prob: {:.3} (starting model {start:.3}); {} pairs gained, {} lost, sign test p = {:.3}",
            f(&format!("{key}_accuracy")),
            f(&format!("{key}_gained")),
            f(&format!("{key}_lost")),
            f(&format!("{key}_sign_p")),
        );
    }
    Ok(())
}

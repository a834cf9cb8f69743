//! Direct preference optimization (Rafailov et al. 2023), sigmoid loss as TRL computes it:
//! `−log σ(β·((π_c − ref_c) − (π_r − ref_r)))`, where π and ref are the summed log-probabilities
//! of the reply tokens under the policy and the frozen starting model. The reference numbers are
//! computed once, before the first update, and cached in the run directory
//! (`reference_logps.json`), so a resumed run does not recompute them (it could not: the policy
//! has moved). Metrics follow TRL: `rewards/chosen` = β·(π_c − ref_c), `rewards/rejected`,
//! `rewards/margins` (their difference) and `rewards/accuracies` (margin > 0), batch means.

use crate::finetune::{
    encode_example, group_within, log_sigmoid, pass_budget, read_data, sigmoid, sign_test_p, split, weighted_logps,
    Example, Loader, Net, Run, StepStats, Task,
};
use crate::model::Transformer;
use crate::optim::GradAccum;
use crate::{checkpoint, io_err, Result, TrainError};
use candle_core::{DType, Device, Tensor};
use kiln_text::conversation::{preference_from_json, Preference};
use kiln_text::{ChatTemplate, Tokenizer};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A comparison encoded for training: the prompt followed by each reply, weights on the reply.
#[derive(Clone, Debug)]
pub struct Pair {
    /// Prompt + preferred reply.
    pub chosen: Example,
    /// Prompt + other reply.
    pub rejected: Example,
}

/// Encodes a comparison; None when a reply does not fit in `max_len` tokens after the prompt.
pub fn encode_pair(
    tok: &Tokenizer,
    template: &ChatTemplate,
    p: &Preference,
    max_len: usize,
) -> std::result::Result<Option<Pair>, String> {
    let before = p.prompt.iter().filter(|m| m.role == "assistant").count();
    let side = |reply: &[kiln_text::ChatMessage]| {
        let mut msgs = p.prompt.clone();
        msgs.extend_from_slice(reply);
        encode_example(tok, template, &msgs, before, max_len)
    };
    Ok(match (side(&p.chosen)?, side(&p.rejected)?) {
        (Some(chosen), Some(rejected)) => Some(Pair { chosen, rejected }),
        _ => None,
    })
}

/// Reads and encodes the comparisons of `run`'s data, split into training and held-out pairs.
pub fn load_pairs(run: &Run, report: &mut dyn FnMut(&str)) -> Result<(Vec<Pair>, Vec<Pair>)> {
    let cfg = &run.cfg;
    let rows = read_data(&cfg.data, preference_from_json, cfg.fail_on_bad_row, report)?;
    let mut pairs = Vec::new();
    for (loc, p) in &rows {
        match encode_pair(&run.tok, &run.template, p, cfg.max_len) {
            Ok(Some(pair)) => pairs.push(pair),
            Ok(None) => {
                report(&format!("skipped {loc}: the prompt leaves no room for a reply within {} tokens", cfg.max_len))
            }
            Err(e) if cfg.fail_on_bad_row => return Err(TrainError::Data(format!("{loc}: {e}"))),
            Err(e) => report(&format!("skipped {loc}: {e}")),
        }
    }
    if pairs.len() < 2 {
        return Err(TrainError::Data("fewer than two usable comparisons".into()));
    }
    let (train, val) = split(&pairs, cfg.val_rows, cfg.seed);
    report(&format!("{} comparisons: {} for training, {} held out", pairs.len(), train.len(), val.len()));
    Ok((train, val))
}

/// Summed reply log-probabilities (chosen, rejected) of each pair under `net` as it is now.
pub fn pair_logps(net: &Net, pairs: &[Pair]) -> Result<Vec<(f64, f64)>> {
    let refs: Vec<&Pair> = pairs.iter().collect();
    let longest = pairs.iter().map(|p| p.chosen.ids.len().max(p.rejected.ids.len())).max();
    let mut out = Vec::with_capacity(pairs.len());
    for group in pair_groups(&refs, pass_budget(longest.unwrap_or(0))) {
        let logps = net.model.no_grad(|| group_logps(&net.model, &group))?.to_vec1::<f32>()?;
        out.extend(logps.chunks(2).map(|c| (f64::from(c[0]), f64::from(c[1]))));
    }
    Ok(out)
}

/// Consecutive pairs whose rows together fit in `budget` tokens (a pair too long for it alone
/// is a group of its own): one forward pass each, with a pair's two rows always together.
pub(crate) fn pair_groups<'a>(pairs: &[&'a Pair], budget: usize) -> Vec<Vec<&'a Pair>> {
    group_within(pairs, budget, |p| p.chosen.ids.len() + p.rejected.ids.len() - 2, |_| false)
}

/// The summed reply log-probabilities of a group's rows, `[chosen₀, rejected₀, chosen₁, …]`.
fn group_logps(model: &Transformer, group: &[&Pair]) -> Result<Tensor> {
    let rows: Vec<&Example> = group.iter().flat_map(|p| [&p.chosen, &p.rejected]).collect();
    weighted_logps(model, &rows)
}

/// `reference_logps.json`. The numbers are f32 sums (exact as f32), stored as f32 so that
/// reading them back gives the same bits: a resumed run repeats the uninterrupted one.
#[derive(Serialize, Deserialize)]
struct RefCache {
    train: Vec<(f32, f32)>,
    val: Vec<(f32, f32)>,
}

fn to_f32(v: Vec<(f64, f64)>) -> Vec<(f32, f32)> {
    v.into_iter().map(|(a, b)| (a as f32, b as f32)).collect()
}

fn to_f64(v: Vec<(f32, f32)>) -> Vec<(f64, f64)> {
    v.into_iter().map(|(a, b)| (f64::from(a), f64::from(b))).collect()
}

/// DPO's data and reference numbers.
pub struct Dpo {
    train: Vec<Pair>,
    val: Vec<Pair>,
    ref_train: Vec<(f64, f64)>,
    ref_val: Vec<(f64, f64)>,
    beta: f64,
    batch_pairs: usize,
    /// Tokens per forward pass ([`pass_budget`]).
    pass_tokens: usize,
}

/// Batch means of TRL's DPO metrics, and the loss.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DpoStats {
    /// Mean sigmoid DPO loss.
    pub loss: f64,
    /// β·(π_c − ref_c).
    pub chosen: f64,
    /// β·(π_r − ref_r).
    pub rejected: f64,
    /// chosen − rejected.
    pub margin: f64,
    /// Fraction with margin > 0.
    pub accuracy: f64,
    /// Fraction where the model gives the chosen reply the higher summed log-probability.
    pub logp_accuracy: f64,
}

/// The DPO numbers of policy and reference log-probabilities.
pub fn dpo_stats(beta: f64, policy: &[(f64, f64)], reference: &[(f64, f64)]) -> DpoStats {
    let n = policy.len().max(1) as f64;
    let mut s = DpoStats::default();
    for (&(pc, pr), &(rc, rr)) in policy.iter().zip(reference) {
        let (c, r) = (beta * (pc - rc), beta * (pr - rr));
        s.loss -= log_sigmoid(c - r) / n;
        s.chosen += c / n;
        s.rejected += r / n;
        s.margin += (c - r) / n;
        s.accuracy += f64::from(u8::from(c > r)) / n;
        s.logp_accuracy += f64::from(u8::from(pc > pr)) / n;
    }
    s
}

impl Dpo {
    /// DPO over `train` and `val` pairs with their reference log-probabilities.
    pub fn new(
        train: Vec<Pair>,
        val: Vec<Pair>,
        ref_train: Vec<(f64, f64)>,
        ref_val: Vec<(f64, f64)>,
        beta: f64,
        batch_pairs: usize,
    ) -> Dpo {
        Dpo { train, val, ref_train, ref_val, beta, batch_pairs, pass_tokens: pass_budget(0) }
    }

    /// Loads the pairs and the reference log-probabilities: from the cache in the run directory,
    /// or computed now with the model as it starts (only before the first update).
    pub fn load(run: &Run, report: &mut dyn FnMut(&str)) -> Result<Dpo> {
        let (train, val) = load_pairs(run, report)?;
        let path = run.dir.join("reference_logps.json");
        let cache = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let c: RefCache = serde_json::from_str(&text)
                    .map_err(|e| TrainError::Checkpoint(format!("{}: corrupted ({e})", path.display())))?;
                if c.train.len() != train.len() || c.val.len() != val.len() {
                    return Err(TrainError::Checkpoint(format!(
                        "{}: cached for {} + {} pairs, the data now gives {} + {}",
                        path.display(),
                        c.train.len(),
                        c.val.len(),
                        train.len(),
                        val.len()
                    )));
                }
                c
            }
            Err(_) if run.step == 0 => {
                report(&format!(
                    "reference log-probabilities of {} pairs (once; cached in {})",
                    train.len() + val.len(),
                    path.display()
                ));
                run.net.set_training(false);
                let c =
                    RefCache { train: to_f32(pair_logps(&run.net, &train)?), val: to_f32(pair_logps(&run.net, &val)?) };
                write_cache(&path, &c)?;
                c
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        Ok(Dpo {
            train,
            val,
            ref_train: to_f64(cache.train),
            ref_val: to_f64(cache.val),
            beta: run.cfg.beta,
            batch_pairs: run.cfg.batch_pairs,
            pass_tokens: pass_budget(run.cfg.max_len),
        })
    }

    /// The held-out numbers of the reference (starting) model: margin and DPO accuracy are 0
    /// by definition; `logp_accuracy` is its preference accuracy.
    pub fn reference_stats(&self) -> DpoStats {
        dpo_stats(self.beta, &self.ref_val, &self.ref_val)
    }
}

fn write_cache(path: &Path, c: &RefCache) -> Result<()> {
    let text = serde_json::to_string(c).expect("cache serializes");
    checkpoint::write_atomic(path, text.as_bytes())
}

impl Task for Dpo {
    fn n_train(&self) -> usize {
        self.train.len()
    }

    fn step(&mut self, net: &Net, loader: &mut Loader, acc: &mut GradAccum) -> Result<StepStats> {
        let params = net.trainable();
        let (mut policy, mut reference) = (Vec::new(), Vec::new());
        let mut tokens = 0;
        let n = self.batch_pairs as f64;
        let picked: Vec<usize> = (0..self.batch_pairs).map(|_| loader.next_index()).collect();
        let pairs: Vec<&Pair> = picked.iter().map(|&i| &self.train[i]).collect();
        let mut next = picked.iter();
        for group in pair_groups(&pairs, self.pass_tokens) {
            let logps = group_logps(&net.model, &group)?;
            let values = logps.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            // d/dπ_c of −log σ(z), z = β((π_c − rc) − (π_r − rr)), is −β·σ(−z); backward through
            // Σ coef·(π_c − π_r) gives the loss gradient without forming the loss graph.
            let mut coefs = Vec::with_capacity(values.len());
            for (pair, lp) in group.iter().zip(values.chunks(2)) {
                let i = *next.next().expect("one index per pair");
                let ((pc, pr), (rc, rr)) = ((lp[0], lp[1]), self.ref_train[i]);
                let z = self.beta * ((pc - rc) - (pr - rr));
                let coef = -self.beta * sigmoid(-z) / n;
                coefs.extend([coef, -coef]);
                policy.push((pc, pr));
                reference.push((rc, rr));
                tokens += pair.chosen.ids.len() + pair.rejected.ids.len() - 2;
            }
            let coefs = Tensor::new(coefs.as_slice(), &Device::Cpu)?.to_dtype(logps.dtype())?;
            let surrogate = (logps * coefs)?.sum_all()?;
            acc.add(&params, &surrogate.backward()?, 1.0)?;
        }
        let s = dpo_stats(self.beta, &policy, &reference);
        Ok(StepStats {
            loss: s.loss,
            tokens,
            extra: vec![
                ("rewards/chosen".into(), s.chosen),
                ("rewards/rejected".into(), s.rejected),
                ("rewards/margins".into(), s.margin),
                ("rewards/accuracies".into(), s.accuracy),
            ],
        })
    }

    fn evaluate(&mut self, net: &Net) -> Result<Vec<(String, f64)>> {
        let policy = pair_logps(net, &self.val)?;
        Ok(self.val_metrics(&policy))
    }

    fn evaluate_start(&mut self, _net: &Net) -> Result<Vec<(String, f64)>> {
        // The starting model is the reference: its numbers are cached.
        Ok(self.val_metrics(&self.ref_val.clone()))
    }
}

/// Whether the model whose reply log-probabilities are `(chosen, rejected)` prefers the chosen
/// reply: by summed log-probability, or by mean per reply token (`by_mean`: the replies'
/// lengths taken out; summed log-probabilities mostly prefer the shorter reply).
fn prefers_chosen(pair: &Pair, (c, r): (f64, f64), by_mean: bool) -> bool {
    if by_mean {
        c / pair.chosen.n_trained().max(1) as f64 > r / pair.rejected.n_trained().max(1) as f64
    } else {
        c > r
    }
}

/// Fraction of pairs whose chosen reply has the higher mean log-probability per reply token.
pub fn mean_logp_accuracy(pairs: &[Pair], logps: &[(f64, f64)]) -> f64 {
    let right = pairs.iter().zip(logps).filter(|&(p, &lp)| prefers_chosen(p, lp, true)).count();
    right as f64 / pairs.len().max(1) as f64
}

/// How a policy's preferences on the same pairs differ from the reference's, pair by pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flips {
    /// Pairs the policy prefers rightly and the reference did not.
    pub gained: usize,
    /// The reverse.
    pub lost: usize,
}

impl Flips {
    /// Counts the changed pairs (summed or mean log-probabilities, as [`prefers_chosen`]).
    pub fn count(pairs: &[Pair], policy: &[(f64, f64)], reference: &[(f64, f64)], by_mean: bool) -> Flips {
        let mut f = Flips { gained: 0, lost: 0 };
        for ((p, &now), &before) in pairs.iter().zip(policy).zip(reference) {
            match (prefers_chosen(p, before, by_mean), prefers_chosen(p, now, by_mean)) {
                (false, true) => f.gained += 1,
                (true, false) => f.lost += 1,
                _ => {}
            }
        }
        f
    }

    /// McNemar's exact test, one-sided: the chance of at least `gained` gains among the changed
    /// pairs if each change were a fair coin. Accuracy differences of a few points on a few
    /// hundred pairs are noise unless this is small.
    pub fn p_value(&self) -> f64 {
        sign_test_p(self.gained, self.gained + self.lost)
    }
}

impl Dpo {
    fn val_metrics(&self, policy: &[(f64, f64)]) -> Vec<(String, f64)> {
        if self.val.is_empty() {
            return Vec::new();
        }
        let s = dpo_stats(self.beta, policy, &self.ref_val);
        let summed = Flips::count(&self.val, policy, &self.ref_val, false);
        let mean = Flips::count(&self.val, policy, &self.ref_val, true);
        vec![
            ("val_loss".into(), s.loss),
            ("val_rewards/margins".into(), s.margin),
            ("val_rewards/accuracies".into(), s.accuracy),
            ("val_logp_accuracy".into(), s.logp_accuracy),
            ("val_mean_logp_accuracy".into(), mean_logp_accuracy(&self.val, policy)),
            // Against the starting model, pair by pair: see Flips.
            ("val_logp_gained".into(), summed.gained as f64),
            ("val_logp_lost".into(), summed.lost as f64),
            ("val_logp_sign_p".into(), summed.p_value()),
            ("val_mean_logp_gained".into(), mean.gained as f64),
            ("val_mean_logp_lost".into(), mean.lost as f64),
            ("val_mean_logp_sign_p".into(), mean.p_value()),
        ]
    }

    /// The starting model's held-out preference by mean reply log-probability.
    pub fn reference_mean_logp_accuracy(&self) -> f64 {
        mean_logp_accuracy(&self.val, &self.ref_val)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_accuracy_takes_reply_length_out() {
        let reply = |len: usize| Example { ids: vec![1; len + 1], weights: vec![1.0; len], starts: Vec::new() };
        // A long chosen reply with the lower sum but the higher mean, then the reverse.
        let pairs = [Pair { chosen: reply(10), rejected: reply(2) }, Pair { chosen: reply(2), rejected: reply(10) }];
        let logps = [(-5.0, -2.0), (-3.0, -10.0)];
        assert_eq!(mean_logp_accuracy(&pairs, &logps), 0.5, "-0.5 > -1.0 right; -1.5 < -1.0 wrong");
        let s = dpo_stats(0.1, &logps, &logps);
        assert_eq!(s.logp_accuracy, 0.5, "summed: -5 < -2 wrong, -3 > -10 right");
    }

    #[test]
    fn flips_count_changed_pairs_and_the_sign_test_is_binomial() {
        let reply = |len: usize| Example { ids: vec![1; len + 1], weights: vec![1.0; len], starts: Vec::new() };
        let pairs: Vec<Pair> = (0..3).map(|_| Pair { chosen: reply(4), rejected: reply(2) }).collect();
        // Pair 0 wrong → right, pair 1 right → wrong, pair 2 right both times.
        let before = [(-9.0, -2.0), (-1.0, -2.0), (-1.0, -2.0)];
        let after = [(-1.0, -2.0), (-9.0, -2.0), (-1.5, -2.0)];
        assert_eq!(Flips::count(&pairs, &after, &before, false), Flips { gained: 1, lost: 1 });
        // By mean (4 and 2 reply tokens) the same pairs change: -2.25 < -1 is wrong, -0.25 and
        // -0.375 > -1 are right.
        assert_eq!(Flips::count(&pairs, &after, &before, true), Flips { gained: 1, lost: 1 });
        assert_eq!(sign_test_p(0, 7), 1.0);
        assert_eq!(sign_test_p(0, 0), 1.0);
        assert!((sign_test_p(10, 10) - 1.0 / 1024.0).abs() < 1e-15);
        assert!((sign_test_p(9, 10) - 11.0 / 1024.0).abs() < 1e-15);
        assert!((sign_test_p(3, 4) - 5.0 / 16.0).abs() < 1e-15);
        // Symmetry: P(X ≥ 51 | 100) = (1 − P(X = 50)) / 2, P(X = 50) = C(100, 50) / 2^100.
        let p50 = 0.079_589_237_387_178_78;
        assert!((sign_test_p(51, 100) - (1.0 - p50) / 2.0).abs() < 1e-12);
        assert!(sign_test_p(600, 1000) < 1e-9 && sign_test_p(600, 1000) > 0.0);
    }
}

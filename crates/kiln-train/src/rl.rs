//! Reinforcement learning on tasks whose answers can be checked (`kiln rl`): each step samples
//! a group of answers to each of a few problems through the inference engine (the policy's
//! current weights, every group decoded as one batch with its prompt computed once), scores
//! them against the reference answer, and updates the model:
//!
//! - **RFT** (rejection-sampling fine-tuning): the correct answers, each distinct one once,
//!   are trained on as SFT data (mean negative log-likelihood over their tokens);
//! - **GRPO** (group-relative policy optimisation): each answer's advantage is its reward
//!   minus its group's mean, over the group's standard deviation, and the loss is
//!   `−Σ A·log π(answer) / |answer|`, averaged over the step's answers. Sampling is on-policy
//!   with one update per batch, so the clipped ratio of PPO is 1 and drops out. With `kl > 0`
//!   the reward is `r − kl·(log π − log π_ref)` per answer, `π_ref` being the starting model.
//!
//! It plugs into the fine-tuning loop ([`crate::finetune::Run`]), so LoRA or full weights,
//! checkpoints, resume, `metrics.jsonl` and plots are the same as SFT's. Every sample is
//! seeded from the run's seed and the data position, so a resumed run draws the same answers.

use crate::export::to_f32_tensors;
use crate::finetune::{batches, pass_budget, scalar, weighted_logps, Example, Loader, Net, Run, StepStats, Task};
use crate::optim::GradAccum;
use crate::plot::{plot_lines, Lines, Points};
use crate::{io_err, Result, TrainError};
use kiln_generate::think::{final_answer, sample_batch, sample_seed, Samples};
use kiln_generate::{GenerateOptions, SamplingParams};
use kiln_gguf::GgmlType;
use kiln_model::{Model, ModelConfig};
use kiln_text::{ChatMessage, Tokenizer};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How `kiln rl` learns (saved in `finetune.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RlConfig {
    /// `grpo` or `rft`.
    pub method: String,
    /// The task the problems come from (`arith`, `gsm8k`), for the record.
    pub task: String,
    /// Answers sampled per problem (the group).
    pub group: usize,
    /// Problems per optimizer step.
    pub problems_per_step: usize,
    /// Sampling temperature.
    pub temperature: f32,
    /// Most tokens per answer.
    pub max_new_tokens: usize,
    /// Samples per held-out problem at evaluation (the k of `val_pass@k`).
    pub val_k: usize,
    /// Weight of the KL penalty to the starting model (GRPO; 0: none).
    pub kl: f64,
    /// The type the policy's matrices are sampled in: `q8_0` (several times faster on a CPU,
    /// logits within about 1 % of f32's) or `f32` (exactly the trained weights).
    #[serde(default = "default_sample_type")]
    pub sample_type: String,
}

fn default_sample_type() -> String {
    "q8_0".into()
}

impl Default for RlConfig {
    fn default() -> Self {
        RlConfig {
            method: "grpo".into(),
            task: "arith".into(),
            group: 8,
            problems_per_step: 4,
            temperature: 1.0,
            max_new_tokens: 256,
            val_k: 4,
            kl: 0.0,
            sample_type: default_sample_type(),
        }
    }
}

impl RlConfig {
    /// The type of `sample_type`.
    pub fn matrix_type(&self) -> Result<GgmlType> {
        match self.sample_type.as_str() {
            "q8_0" => Ok(GgmlType::Q8_0),
            "f32" => Ok(GgmlType::F32),
            other => Err(TrainError::Config(format!("--sample-type must be q8_0 or f32, got {other:?}"))),
        }
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Config(m.into()));
        if self.method != "grpo" && self.method != "rft" {
            return bad("--method must be grpo or rft");
        }
        if self.group < 2 && self.method == "grpo" {
            return bad("GRPO needs a group of at least 2 answers per problem (--group)");
        }
        if self.group == 0 || self.problems_per_step == 0 || self.val_k == 0 || self.max_new_tokens == 0 {
            return bad("--group, --problems, --val-k and --max-new-tokens must be positive");
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad("--temp must be positive: RL learns from differences between sampled answers");
        }
        if !(self.kl >= 0.0 && self.kl.is_finite()) {
            return bad("--kl must be zero or positive");
        }
        self.matrix_type()?;
        Ok(())
    }
}

/// A problem with a checkable answer: the user's message and the reference final answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    /// What the user asks (instructions included).
    pub prompt: String,
    /// The reference final answer, as [`final_answer`] writes it.
    pub answer: String,
}

/// Reads problems (JSON Lines of `{"prompt", "answer"}`).
pub fn read_problems(path: &Path) -> Result<Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let p: Problem = serde_json::from_str(line).map_err(|e| {
            TrainError::Config(format!(
                "{} line {}: not a {{\"prompt\", \"answer\"}} object ({e})",
                path.display(),
                i + 1
            ))
        })?;
        out.push(p);
    }
    if out.is_empty() {
        return Err(TrainError::Config(format!("{}: no problems", path.display())));
    }
    Ok(out)
}

/// Writes problems as JSON Lines.
pub fn write_problems(path: &Path, problems: &[Problem]) -> Result<()> {
    let text: String = problems.iter().map(|p| serde_json::to_string(p).expect("serializes") + "\n").collect();
    crate::checkpoint::write_atomic(path, text.as_bytes())
}

/// Whether `text` ends in the reference answer.
pub fn reward(text: &str, answer: &str) -> f64 {
    if final_answer(text).as_deref() == Some(answer) {
        1.0
    } else {
        0.0
    }
}

/// Advantages of one group: reward minus the group's mean, over its standard deviation (all
/// zero when every answer scored the same: the group has nothing to teach).
pub fn group_advantages(rewards: &[f64]) -> Vec<f64> {
    let n = rewards.len() as f64;
    let mean = rewards.iter().sum::<f64>() / n;
    let sd = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
    if sd < 1e-9 {
        return vec![0.0; rewards.len()];
    }
    rewards.iter().map(|r| (r - mean) / (sd + 1e-4)).collect()
}

/// A training row: `prompt` then `answer`, each answer token weighted `weight`, the prompt 0.
pub fn answer_row(prompt: &[u32], answer: &[u32], weight: f32) -> Example {
    let mut ids = prompt.to_vec();
    ids.extend_from_slice(answer);
    let mut weights = vec![0.0f32; prompt.len() - 1];
    weights.extend(std::iter::repeat_n(weight, answer.len()));
    Example { ids, weights, starts: Vec::new() }
}

/// The sum of the log-probabilities of `answer` after `prompt` under the inference `model`:
/// what [`answer_row`] weighs, computed the way sampling computes it.
pub fn answer_logp(model: &Model, prompt: &[u32], answer: &[u32]) -> Result<f64> {
    if answer.is_empty() {
        return Ok(0.0);
    }
    let mut state = model.new_state(prompt.len() + answer.len());
    let mut ids = prompt.to_vec();
    ids.extend_from_slice(&answer[..answer.len() - 1]);
    let logits = model.forward(&mut state, &ids, true)?;
    let vocab = model.config.vocab_size;
    let mut sum = 0.0;
    for (k, &t) in answer.iter().enumerate() {
        let row = &logits[(prompt.len() - 1 + k) * vocab..][..vocab];
        sum += kiln_generate::sampler::logprobs(row, t, 0).0.logprob as f64;
    }
    Ok(sum)
}

/// Draws `rl.svg` and `rl.png` in the run directory: the reward of each step's samples, and
/// held-out pass@1 and pass@k at each evaluation (step 0: the starting model, from
/// `start.json`).
pub fn plot(dir: &Path, lines: &[serde_json::Value]) -> Result<()> {
    let start: Option<serde_json::Value> =
        std::fs::read_to_string(dir.join("start.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    let series = |key: &str| -> Points {
        start.iter().chain(lines).filter_map(|l| Some((l["step"].as_f64()?, l[key].as_f64()?))).collect()
    };
    let lines = Lines {
        title: "reinforcement learning",
        x_desc: "step",
        y_desc: "share right",
        log2_x: false,
        series: vec![
            ("reward (training samples)".into(), series("reward")),
            ("held-out pass@1".into(), series("val_pass@1")),
            ("held-out pass@k".into(), series("val_pass@k")),
        ],
    };
    plot_lines(dir, "rl", &lines)
}

/// The RL task: training and held-out problems, encoded.
pub struct Rl {
    cfg: RlConfig,
    seed: u64,
    tok: Tokenizer,
    model_config: ModelConfig,
    train: Vec<(Vec<u32>, String)>,
    val: Vec<(Vec<u32>, String)>,
    /// The starting model, for the KL penalty.
    reference: Option<Model>,
}

impl Rl {
    /// Reads `run`'s problems (`data[0]` to train on, `data[1]` held out) and renders their
    /// prompts with the run's chat template.
    pub fn load(run: &Run) -> Result<Rl> {
        let cfg = run
            .cfg
            .rl
            .clone()
            .ok_or_else(|| TrainError::Config("not an RL run (no \"rl\" in finetune.json)".into()))?;
        cfg.validate()?;
        let [train, val] = &run.cfg.data[..] else {
            return Err(TrainError::Config("an RL run reads two problem files: training and held out".into()));
        };
        let encode = |problems: Vec<Problem>| -> Result<Vec<(Vec<u32>, String)>> {
            problems
                .into_iter()
                .map(|p| {
                    let text = run.template.render(&[ChatMessage::new("user", p.prompt)], true)?;
                    Ok((run.tok.encode_prompt(&text)?, p.answer))
                })
                .collect()
        };
        // The starting weights themselves (a resumed full fine-tuning run holds trained ones).
        let reference = match cfg.kl > 0.0 {
            true => {
                let base = crate::finetune::load_base(&run.cfg.base)?;
                let f32s = to_f32_tensors(&base.tensors)?;
                Some(kiln_model::formats::f32::model_from_f32_as(&base.config, &f32s, cfg.matrix_type()?)?)
            }
            false => None,
        };
        Ok(Rl {
            seed: run.cfg.seed,
            tok: run.tok.clone(),
            model_config: run.net.model.config.clone(),
            train: encode(read_problems(train)?)?,
            val: encode(read_problems(val)?)?,
            reference,
            cfg,
        })
    }

    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.cfg.max_new_tokens,
            sampling: SamplingParams {
                temperature: self.cfg.temperature,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Samples `n` answers to each problem with the current policy.
    fn sample(&self, model: &Model, problems: &[(&[u32], u64)], n: usize) -> Result<Vec<Samples>> {
        let longest = problems.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
        let ctx = longest + self.cfg.max_new_tokens + 1;
        sample_batch(model, &self.tok, problems, n, &self.options(), ctx).map_err(|e| TrainError::Config(e.to_string()))
    }
}

/// The inference model of the current weights (adapters merged), matrices in `matrices`.
pub fn policy(net: &Net, config: &ModelConfig, matrices: GgmlType) -> Result<Model> {
    let tensors = to_f32_tensors(&net.merged_tensors()?)?;
    Ok(kiln_model::formats::f32::model_from_f32_as(config, &tensors, matrices)?)
}

impl Task for Rl {
    fn n_train(&self) -> usize {
        self.train.len()
    }

    fn step(&mut self, net: &Net, loader: &mut Loader, acc: &mut GradAccum) -> Result<StepStats> {
        // Seeds follow the data position, which checkpoints keep: a resumed run samples the same.
        let step_seed = sample_seed(self.seed, loader.cursor as usize);
        let picked: Vec<usize> = (0..self.cfg.problems_per_step).map(|_| loader.next_index()).collect();
        let model = policy(net, &self.model_config, self.cfg.matrix_type()?)?;
        let jobs: Vec<(&[u32], u64)> =
            picked.iter().enumerate().map(|(k, &i)| (self.train[i].0.as_slice(), sample_seed(step_seed, k))).collect();
        let groups = self.sample(&model, &jobs, self.cfg.group)?;

        let mut rows: Vec<Example> = Vec::new();
        let (mut reward_sum, mut answers, mut answer_tokens, mut with_signal) = (0.0, 0usize, 0usize, 0usize);
        let mut kl_sum = 0.0;
        for (group, &i) in groups.iter().zip(&picked) {
            let (prompt, gold) = (&self.train[i].0, &self.train[i].1);
            let mut rewards: Vec<f64> = group.samples.iter().map(|s| reward(&s.text, gold)).collect();
            reward_sum += rewards.iter().sum::<f64>();
            answers += rewards.len();
            answer_tokens += group.samples.iter().map(|s| s.token_ids.len()).sum::<usize>();
            if let (Some(reference), "grpo") = (&self.reference, self.cfg.method.as_str()) {
                for (r, s) in rewards.iter_mut().zip(&group.samples) {
                    let gap =
                        answer_logp(&model, prompt, &s.token_ids)? - answer_logp(reference, prompt, &s.token_ids)?;
                    kl_sum += gap;
                    *r -= self.cfg.kl * gap;
                }
            }
            let weights: Vec<f64> = match self.cfg.method.as_str() {
                "rft" => {
                    // Each distinct correct answer once.
                    let mut seen = std::collections::HashSet::new();
                    group
                        .samples
                        .iter()
                        .map(
                            |s| if reward(&s.text, gold) > 0.0 && seen.insert(s.token_ids.clone()) { 1.0 } else { 0.0 },
                        )
                        .collect()
                }
                _ => group_advantages(&rewards)
                    .iter()
                    .zip(&group.samples)
                    .map(|(a, s)| a / s.token_ids.len().max(1) as f64)
                    .collect(),
            };
            if weights.iter().any(|&w| w != 0.0) {
                with_signal += 1;
            }
            for (w, s) in weights.iter().zip(&group.samples) {
                if *w == 0.0 || s.token_ids.is_empty() {
                    continue;
                }
                rows.push(answer_row(prompt, &s.token_ids, *w as f32));
            }
        }
        // RFT averages over the kept answers' tokens; GRPO over the step's answers (each
        // already divided by its own length).
        let norm = match self.cfg.method.as_str() {
            "rft" => rows.iter().map(|r| r.weights.iter().filter(|&&w| w != 0.0).count()).sum::<usize>().max(1) as f64,
            _ => answers.max(1) as f64,
        };
        let params = net.trainable();
        let (mut objective, mut tokens) = (0.0, 0);
        let refs: Vec<&Example> = rows.iter().collect();
        let max_len = refs.iter().map(|r| r.ids.len()).max().unwrap_or(1);
        for batch in batches(&refs, pass_budget(max_len)) {
            let logp = weighted_logps(&net.model, &batch)?.sum_all()?;
            objective += scalar(&logp)?;
            tokens += batch.iter().map(|row| row.ids.len() - 1).sum::<usize>();
            let loss = (logp * (-1.0 / norm))?;
            acc.add(&params, &loss.backward()?, 1.0)?;
        }
        let mut extra = vec![
            ("reward".to_string(), reward_sum / answers.max(1) as f64),
            ("groups_with_signal".to_string(), with_signal as f64),
            ("answer_tokens".to_string(), answer_tokens as f64 / answers.max(1) as f64),
        ];
        if self.reference.is_some() {
            extra.push(("kl".to_string(), kl_sum / answers.max(1) as f64));
        }
        Ok(StepStats { loss: -objective / norm, tokens, extra })
    }

    fn evaluate(&mut self, net: &Net) -> Result<Vec<(String, f64)>> {
        let model = policy(net, &self.model_config, self.cfg.matrix_type()?)?;
        // The same seeds at every evaluation: differences between steps are the model's.
        let eval_seed = sample_seed(self.seed ^ 0x7661_6c5f_7365_6564, 0);
        let (mut pass1, mut passk) = (0.0, 0.0);
        // A few problems per batch, so that the batch stays near the training batch's size.
        let per_batch = (self.cfg.group * self.cfg.problems_per_step / self.cfg.val_k).max(1);
        let indexed: Vec<(usize, &(Vec<u32>, String))> = self.val.iter().enumerate().collect();
        for chunk in indexed.chunks(per_batch) {
            let jobs: Vec<(&[u32], u64)> =
                chunk.iter().map(|(k, (p, _))| (p.as_slice(), sample_seed(eval_seed, *k))).collect();
            for (group, (_, (_, gold))) in self.sample(&model, &jobs, self.cfg.val_k)?.iter().zip(chunk) {
                let right = group.samples.iter().filter(|s| reward(&s.text, gold) > 0.0).count();
                pass1 += right as f64 / group.samples.len() as f64;
                passk += (right > 0) as u8 as f64;
            }
        }
        let n = self.val.len().max(1) as f64;
        Ok(vec![("val_pass@1".into(), pass1 / n), ("val_pass@k".into(), passk / n)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_are_relative_to_the_group() {
        let a = group_advantages(&[1.0, 0.0, 0.0, 1.0]);
        assert!((a[0] - 1.0).abs() < 1e-3 && (a[1] + 1.0).abs() < 1e-3, "{a:?}");
        assert!((a.iter().sum::<f64>()).abs() < 1e-9);
        assert_eq!(group_advantages(&[1.0, 1.0, 1.0]), vec![0.0; 3]);
        assert_eq!(group_advantages(&[0.0, 0.0]), vec![0.0; 2]);
        let b = group_advantages(&[1.0, 0.0, 0.0, 0.0]);
        assert!(b[0] > 1.5 && b[1] < 0.0, "a rare success weighs more: {b:?}");
    }

    #[test]
    fn rewards_check_the_final_answer() {
        assert_eq!(reward("12 + 5 = 17\n#### 17", "17"), 1.0);
        assert_eq!(reward("The answer is 1,234.", "1234"), 1.0);
        assert_eq!(reward("#### 16", "17"), 0.0);
        assert_eq!(reward("no idea", "17"), 0.0);
    }

    #[test]
    fn bad_settings_are_named() {
        let ok = RlConfig::default();
        ok.validate().unwrap();
        for (cfg, needle) in [
            (RlConfig { method: "ppo".into(), ..ok.clone() }, "grpo or rft"),
            (RlConfig { group: 1, ..ok.clone() }, "at least 2"),
            (RlConfig { temperature: 0.0, ..ok.clone() }, "--temp"),
            (RlConfig { kl: -1.0, ..ok.clone() }, "--kl"),
        ] {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}

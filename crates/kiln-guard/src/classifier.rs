//! The learned layer: a sentence encoder (all-MiniLM-L6-v2 by default) and a small head on its
//! embedding (one hidden layer, ReLU, a logistic output), trained on labelled attacks and
//! benign prompts. The encoder stays frozen; the head and its threshold are the guard's own
//! parameters, kept in `guard.json`.

use crate::data::{Example, Split};
use crate::GuardError;
use kiln_model::embed::Embedder;
use std::path::Path;
use std::sync::Arc;

/// The name of the file a guard directory holds.
pub const GUARD_FILE: &str = "guard.json";
const FORMAT: &str = "kiln-guard-1";

/// A one-hidden-layer network on an embedding: `sigmoid(w2 · relu(W1 x + b1) + b2)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    /// Width of the embedding it reads.
    pub input: usize,
    /// Hidden units.
    pub hidden: usize,
    /// `hidden × input`, row-major.
    pub w1: Vec<f32>,
    /// `hidden`.
    pub b1: Vec<f32>,
    /// `hidden`.
    pub w2: Vec<f32>,
    /// The output bias.
    pub b2: f32,
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Head {
    /// A head with small random weights (a fixed seed: training is reproducible).
    pub fn new(input: usize, hidden: usize, seed: u64) -> Head {
        let mut state = seed.max(1);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        };
        let s1 = (6.0 / (input + hidden) as f32).sqrt();
        let s2 = (6.0 / (hidden + 1) as f32).sqrt();
        Head {
            input,
            hidden,
            w1: (0..input * hidden).map(|_| next() * s1).collect(),
            b1: vec![0.0; hidden],
            w2: (0..hidden).map(|_| next() * s2).collect(),
            b2: 0.0,
        }
    }

    fn hidden_of(&self, x: &[f32]) -> Vec<f32> {
        self.w1.chunks_exact(self.input).zip(&self.b1).map(|(row, b)| (dot(row, x) + b).max(0.0)).collect()
    }

    /// The logit for one embedding.
    pub fn logit(&self, x: &[f32]) -> f32 {
        dot(&self.w2, &self.hidden_of(x)) + self.b2
    }

    /// The probability that the embedding is an attack.
    pub fn score(&self, x: &[f32]) -> f32 {
        sigmoid(self.logit(x))
    }

    /// Adds to `grad` (laid out as [`Head::params`]) `weight ×` the gradient of the logistic
    /// loss of one example; returns that loss.
    fn accumulate(&self, x: &[f32], attack: bool, weight: f32, grad: &mut [f32]) -> f32 {
        let h = self.hidden_of(x);
        let z = dot(&self.w2, &h) + self.b2;
        let y = if attack { 1.0 } else { 0.0 };
        // log(1 + e^z) - y z, computed without overflow.
        let loss = z.max(0.0) + (-z.abs()).exp().ln_1p() - y * z;
        let dz = (sigmoid(z) - y) * weight;
        let (gw1, rest) = grad.split_at_mut(self.w1.len());
        let (gb1, rest) = rest.split_at_mut(self.hidden);
        let (gw2, gb2) = rest.split_at_mut(self.hidden);
        gb2[0] += dz;
        for j in 0..self.hidden {
            gw2[j] += dz * h[j];
            if h[j] > 0.0 {
                let dh = dz * self.w2[j];
                gb1[j] += dh;
                gw1[j * self.input..(j + 1) * self.input].iter_mut().zip(x).for_each(|(g, xi)| *g += dh * xi);
            }
        }
        loss * weight
    }

    fn n_params(&self) -> usize {
        self.w1.len() + 2 * self.hidden + 1
    }

    fn params_mut(&mut self) -> impl Iterator<Item = &mut f32> {
        self.w1.iter_mut().chain(self.b1.iter_mut()).chain(self.w2.iter_mut()).chain(std::iter::once(&mut self.b2))
    }
}

/// How the head is fitted.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainOptions {
    /// Hidden units.
    pub hidden: usize,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per Adam step.
    pub batch: usize,
    /// Adam's step size.
    pub learning_rate: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// The most benign validation prompts the threshold may flag (a share, 0.01 = 1 %).
    pub max_false_positive_rate: f64,
    /// The seed of the initial weights and the row order.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            hidden: 64,
            epochs: 30,
            batch: 128,
            learning_rate: 2e-3,
            weight_decay: 1e-4,
            max_false_positive_rate: 0.01,
            seed: 17,
        }
    }
}

/// Fits a head on embeddings and labels, each class weighted to count as much as the other.
/// `on_epoch(epoch, mean_loss)` reports progress.
pub fn fit_head(xs: &[Vec<f32>], ys: &[bool], opts: &TrainOptions, mut on_epoch: impl FnMut(usize, f32)) -> Head {
    let dim = xs.first().map_or(0, Vec::len);
    let mut head = Head::new(dim, opts.hidden, opts.seed);
    let attacks = ys.iter().filter(|&&y| y).count().max(1) as f32;
    let benign = (ys.len() as f32 - attacks).max(1.0);
    let n = ys.len() as f32;
    let class_weight = |y: bool| if y { n / (2.0 * attacks) } else { n / (2.0 * benign) };
    let np = head.n_params();
    let (mut m, mut v) = (vec![0.0f32; np], vec![0.0f32; np]);
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut order: Vec<usize> = (0..ys.len()).collect();
    let mut rng = opts.seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut t = 0i32;
    for epoch in 0..opts.epochs {
        // Fisher-Yates with a xorshift: reproducible, no extra dependency.
        for i in (1..order.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        let mut total = 0.0f64;
        for batch in order.chunks(opts.batch.max(1)) {
            let grad = batch_gradient(&head, xs, ys, batch, &class_weight, &mut total);
            t += 1;
            let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
            for (((p, g), m), v) in head.params_mut().zip(&grad).zip(&mut m).zip(&mut v) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= opts.learning_rate * ((*m / c1) / ((*v / c2).sqrt() + eps) + opts.weight_decay * *p);
            }
        }
        on_epoch(epoch, (total / ys.len().max(1) as f64) as f32);
    }
    head
}

/// The mean gradient of one batch, its rows split over kiln's worker threads.
fn batch_gradient(
    head: &Head,
    xs: &[Vec<f32>],
    ys: &[bool],
    batch: &[usize],
    class_weight: &(impl Fn(bool) -> f32 + Sync),
    total: &mut f64,
) -> Vec<f32> {
    use rayon::prelude::*;
    let np = head.n_params();
    let per = batch.len().div_ceil(rayon::current_num_threads().max(1)).max(8);
    let (grad, loss) = kiln_model::threads::pool().install(|| {
        batch
            .par_chunks(per)
            .map(|rows| {
                let mut g = vec![0.0f32; np];
                let loss: f32 = rows.iter().map(|&i| head.accumulate(&xs[i], ys[i], class_weight(ys[i]), &mut g)).sum();
                (g, loss)
            })
            .reduce(
                || (vec![0.0f32; np], 0.0),
                |(mut a, la), (b, lb)| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    (a, la + lb)
                },
            )
    });
    *total += loss as f64;
    let scale = 1.0 / batch.len() as f32;
    grad.into_iter().map(|g| g * scale).collect()
}

/// Counts of one threshold's decisions, with the rates reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Confusion {
    /// Attacks flagged.
    pub true_positives: usize,
    /// Benign prompts flagged.
    pub false_positives: usize,
    /// Benign prompts passed.
    pub true_negatives: usize,
    /// Attacks passed.
    pub false_negatives: usize,
}

impl Confusion {
    /// The decisions of `threshold` over scores and labels.
    pub fn of(scores: &[f32], labels: &[bool], threshold: f32) -> Confusion {
        let mut c = Confusion::default();
        for (&s, &y) in scores.iter().zip(labels) {
            match (s >= threshold, y) {
                (true, true) => c.true_positives += 1,
                (true, false) => c.false_positives += 1,
                (false, false) => c.true_negatives += 1,
                (false, true) => c.false_negatives += 1,
            }
        }
        c
    }

    /// Flagged attacks over flagged prompts.
    pub fn precision(&self) -> f64 {
        ratio(self.true_positives, self.true_positives + self.false_positives)
    }

    /// Flagged attacks over attacks.
    pub fn recall(&self) -> f64 {
        ratio(self.true_positives, self.true_positives + self.false_negatives)
    }

    /// Flagged benign prompts over benign prompts.
    pub fn false_positive_rate(&self) -> f64 {
        ratio(self.false_positives, self.false_positives + self.true_negatives)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The 95 % Wilson interval of `k` successes in `n` trials.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (z, n, p) = (1.959964f64, n as f64, k as f64 / n as f64);
    let centre = p + z * z / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    let denom = 1.0 + z * z / n;
    (((centre - spread) / denom).max(0.0), ((centre + spread) / denom).min(1.0))
}

/// The lowest threshold whose false-positive rate on the benign rows stays within
/// `max_fpr` (a lower threshold catches more attacks).
pub fn choose_threshold(scores: &[f32], labels: &[bool], max_fpr: f64) -> f32 {
    let mut benign: Vec<f32> = scores.iter().zip(labels).filter(|(_, &y)| !y).map(|(&s, _)| s).collect();
    if benign.is_empty() {
        return 0.5;
    }
    benign.sort_by(|a, b| b.total_cmp(a));
    let allowed = (max_fpr * benign.len() as f64).floor() as usize;
    // Flag strictly above the (allowed+1)-th highest benign score.
    let edge = benign[allowed.min(benign.len() - 1)];
    let above = f32::from_bits(edge.to_bits() + 1);
    if allowed >= benign.len() {
        0.0
    } else {
        above.clamp(f32::MIN_POSITIVE, 1.0)
    }
}

/// A trained guard as stored: which encoder it reads, its head, its threshold, and the report
/// of its training.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GuardModel {
    /// Always `kiln-guard-1`.
    pub format: String,
    /// The sentence encoder, as `kiln pull` names it (`all-minilm-l6-v2`) or a directory.
    pub encoder: String,
    /// The head.
    pub head: Head,
    /// Scores at or above this are attacks.
    pub threshold: f32,
    /// How it was trained and what it measured (free-form, shown by `kiln guard train`).
    #[serde(default)]
    pub report: serde_json::Value,
}

impl GuardModel {
    /// Reads `dir/guard.json`.
    pub fn load(dir: &Path) -> Result<GuardModel, GuardError> {
        let path = dir.join(GUARD_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|e| GuardError::io(format!("cannot read {}", path.display()), e))?;
        let model: GuardModel = serde_json::from_str(&text)
            .map_err(|e| GuardError::Format(format!("{}: not a kiln guard: {e}", path.display())))?;
        if model.format != FORMAT {
            return Err(GuardError::Format(format!(
                "{}: format {:?}, this kiln reads {FORMAT:?}",
                path.display(),
                model.format
            )));
        }
        let h = &model.head;
        if h.w1.len() != h.input * h.hidden || h.b1.len() != h.hidden || h.w2.len() != h.hidden {
            return Err(GuardError::Format(format!("{}: head sizes do not agree", path.display())));
        }
        Ok(model)
    }

    /// Writes `dir/guard.json` whole (a temporary file renamed into place).
    pub fn save(&self, dir: &Path) -> Result<(), GuardError> {
        std::fs::create_dir_all(dir).map_err(|e| GuardError::io(format!("cannot create {}", dir.display()), e))?;
        let path = dir.join(GUARD_FILE);
        let tmp = dir.join(format!(".{GUARD_FILE}.{}", std::process::id()));
        let text = serde_json::to_string(self).map_err(|e| GuardError::Format(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| GuardError::io(format!("cannot write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| GuardError::io(format!("cannot write {}", path.display()), e))
    }
}

/// A guard model with its encoder loaded: scores texts.
pub struct Classifier {
    /// The stored model.
    pub model: GuardModel,
    embedder: Arc<Embedder>,
}

impl Classifier {
    /// Pairs a stored model with its encoder; the widths must agree.
    pub fn new(model: GuardModel, embedder: Arc<Embedder>) -> Result<Classifier, GuardError> {
        if embedder.dim() != model.head.input {
            return Err(GuardError::Format(format!(
                "the guard reads {}-wide embeddings; the encoder gives {}",
                model.head.input,
                embedder.dim()
            )));
        }
        Ok(Classifier { model, embedder })
    }

    /// The probability that each text is an attack.
    pub fn scores(&self, texts: &[&str]) -> Result<Vec<f32>, GuardError> {
        Ok(self.embedder.embed_all(texts)?.iter().map(|x| self.model.head.score(x)).collect())
    }

    /// Scores at or above this are attacks.
    pub fn threshold(&self) -> f32 {
        self.model.threshold
    }
}

/// What one split measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SplitReport {
    /// Prompts in the split.
    pub rows: usize,
    /// The decisions at the chosen threshold.
    pub confusion: Confusion,
    /// Precision, recall and false-positive rate, each with its 95 % Wilson interval.
    pub precision: (f64, f64, f64),
    /// See `precision`.
    pub recall: (f64, f64, f64),
    /// See `precision`.
    pub false_positive_rate: (f64, f64, f64),
}

impl SplitReport {
    /// The report of `threshold` over scores and labels.
    pub fn new(scores: &[f32], labels: &[bool], threshold: f32) -> SplitReport {
        let c = Confusion::of(scores, labels, threshold);
        let with = |k: usize, n: usize, p: f64| {
            let (lo, hi) = wilson(k, n);
            (p, lo, hi)
        };
        SplitReport {
            rows: scores.len(),
            confusion: c,
            precision: with(c.true_positives, c.true_positives + c.false_positives, c.precision()),
            recall: with(c.true_positives, c.true_positives + c.false_negatives, c.recall()),
            false_positive_rate: with(c.false_positives, c.false_positives + c.true_negatives, c.false_positive_rate()),
        }
    }
}

/// Embeddings already computed, by a hash of the encoder's name and the text: embedding is
/// most of a training run's time, and a second run (other epochs, another threshold) or a run
/// killed half-way need not pay it again.
pub struct EmbeddingCache {
    path: Option<std::path::PathBuf>,
    dim: usize,
    vectors: std::collections::HashMap<u64, Vec<f32>>,
}

fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

impl EmbeddingCache {
    /// No cache.
    pub fn none(dim: usize) -> EmbeddingCache {
        EmbeddingCache { path: None, dim, vectors: Default::default() }
    }

    /// The cache in `path` (a missing or unreadable file is an empty cache).
    pub fn open(path: &Path, dim: usize) -> EmbeddingCache {
        let mut vectors = std::collections::HashMap::new();
        if let Ok(bytes) = std::fs::read(path) {
            let record = 8 + 4 * dim;
            for r in bytes.chunks_exact(record) {
                let key = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
                let v = r[8..].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
                vectors.insert(key, v);
            }
        }
        EmbeddingCache { path: Some(path.to_path_buf()), dim, vectors }
    }

    fn key(encoder: &str, text: &str) -> u64 {
        fnv(&[encoder, text])
    }

    /// Writes the cache whole (a temporary file renamed into place).
    pub fn save(&self) -> Result<(), GuardError> {
        let Some(path) = &self.path else { return Ok(()) };
        let mut bytes = Vec::with_capacity(self.vectors.len() * (8 + 4 * self.dim));
        for (k, v) in &self.vectors {
            bytes.extend_from_slice(&k.to_le_bytes());
            v.iter().for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| GuardError::io(format!("cannot create {}", dir.display()), e))?;
        }
        let tmp = path.with_extension(format!("part-{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|e| GuardError::io(format!("cannot write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, path).map_err(|e| GuardError::io(format!("cannot write {}", path.display()), e))
    }
}

/// Embeds every example (in order), fits the head on the training split, picks the threshold
/// on the validation split and measures the test split. `progress(message)` narrates.
pub fn train(
    embedder: Arc<Embedder>,
    encoder_name: &str,
    examples: &[Example],
    cache: &mut EmbeddingCache,
    opts: &TrainOptions,
    mut progress: impl FnMut(&str),
) -> Result<(GuardModel, serde_json::Value), GuardError> {
    let started = std::time::Instant::now();
    let missing: Vec<&str> = examples
        .iter()
        .map(|e| e.text.as_str())
        .filter(|t| !cache.vectors.contains_key(&EmbeddingCache::key(encoder_name, t)))
        .collect();
    if missing.len() < examples.len() {
        progress(&format!("{} of {} prompts embedded already", examples.len() - missing.len(), examples.len()));
    }
    for (i, chunk) in missing.chunks(256).enumerate() {
        for (t, v) in chunk.iter().zip(embedder.embed_all(chunk)?) {
            cache.vectors.insert(EmbeddingCache::key(encoder_name, t), v);
        }
        let done = (i * 256 + chunk.len()).min(missing.len());
        if i % 8 == 7 || done == missing.len() {
            progress(&format!("embedded {done}/{} prompts ({:.0} s)", missing.len(), started.elapsed().as_secs_f64()));
            // A run killed from here on keeps what it has embedded.
            cache.save()?;
        }
    }
    let vectors: Vec<Vec<f32>> =
        examples.iter().map(|e| cache.vectors[&EmbeddingCache::key(encoder_name, &e.text)].clone()).collect();
    let pick = |split: Split| -> (Vec<Vec<f32>>, Vec<bool>) {
        examples.iter().zip(&vectors).filter(|(e, _)| e.split == split).map(|(e, v)| (v.clone(), e.attack)).unzip()
    };
    let (train_x, train_y) = pick(Split::Train);
    let (val_x, val_y) = pick(Split::Validation);
    let (test_x, test_y) = pick(Split::Test);
    if train_y.iter().all(|&y| y) || train_y.iter().all(|&y| !y) {
        return Err(GuardError::Format("the training split needs both attacks and benign prompts".into()));
    }
    let head = fit_head(&train_x, &train_y, opts, |epoch, loss| {
        if epoch % 5 == 4 || epoch + 1 == opts.epochs {
            progress(&format!("epoch {}/{}: loss {loss:.4}", epoch + 1, opts.epochs));
        }
    });
    let score = |xs: &[Vec<f32>]| xs.iter().map(|x| head.score(x)).collect::<Vec<f32>>();
    let (val_s, test_s, train_s) = (score(&val_x), score(&test_x), score(&train_x));
    let threshold = if val_y.is_empty() {
        choose_threshold(&train_s, &train_y, opts.max_false_positive_rate)
    } else {
        choose_threshold(&val_s, &val_y, opts.max_false_positive_rate)
    };
    let mut by_source = serde_json::Map::new();
    let mut sources: Vec<&str> = examples.iter().map(|e| e.source.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    for source in sources {
        let (s, y): (Vec<f32>, Vec<bool>) = examples
            .iter()
            .zip(&vectors)
            .filter(|(e, _)| e.source == source && e.split == Split::Test)
            .map(|(e, v)| (head.score(v), e.attack))
            .unzip();
        if !s.is_empty() {
            by_source.insert(source.to_string(), serde_json::to_value(SplitReport::new(&s, &y, threshold)).unwrap());
        }
    }
    let report = serde_json::json!({
        "options": opts,
        "threshold": threshold,
        "train": SplitReport::new(&train_s, &train_y, threshold),
        "validation": SplitReport::new(&val_s, &val_y, threshold),
        "test": SplitReport::new(&test_s, &test_y, threshold),
        "test_by_source": by_source,
    });
    let model =
        GuardModel { format: FORMAT.into(), encoder: encoder_name.into(), head, threshold, report: report.clone() };
    Ok((model, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_gradient(head: &Head, x: &[f32], y: bool) -> Vec<f32> {
        let mut out = Vec::new();
        let loss = |h: &Head| {
            let z = h.logit(x) as f64;
            let yf = if y { 1.0 } else { 0.0 };
            z.max(0.0) + (-z.abs()).exp().ln_1p() - yf * z
        };
        let n = head.n_params();
        for i in 0..n {
            let mut plus = head.clone();
            let mut minus = head.clone();
            let eps = 1e-3f32;
            *plus.params_mut().nth(i).unwrap() += eps;
            *minus.params_mut().nth(i).unwrap() -= eps;
            out.push(((loss(&plus) - loss(&minus)) / (2.0 * eps as f64)) as f32);
        }
        out
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let head = Head::new(6, 5, 3);
        let x = [0.3, -0.7, 0.2, 0.9, -0.1, 0.5];
        for y in [true, false] {
            let mut grad = vec![0.0; head.n_params()];
            head.accumulate(&x, y, 1.0, &mut grad);
            let numeric = numeric_gradient(&head, &x, y);
            for (i, (a, b)) in grad.iter().zip(&numeric).enumerate() {
                assert!((a - b).abs() < 2e-3, "param {i}: analytic {a} numeric {b}");
            }
        }
    }

    #[test]
    fn fits_a_separable_problem() {
        // Two clusters that a linear cut does not separate (XOR of two coordinates).
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in 0..400 {
            let a = if i % 2 == 0 { 1.0 } else { -1.0 };
            let b = if (i / 2) % 2 == 0 { 1.0 } else { -1.0 };
            let jitter = ((i * 37 % 11) as f32 - 5.0) * 0.02;
            xs.push(vec![a + jitter, b - jitter, 0.1]);
            ys.push(a * b > 0.0);
        }
        let opts = TrainOptions { hidden: 16, epochs: 60, batch: 32, learning_rate: 1e-2, ..TrainOptions::default() };
        let head = fit_head(&xs, &ys, &opts, |_, _| {});
        let scores: Vec<f32> = xs.iter().map(|x| head.score(x)).collect();
        let c = Confusion::of(&scores, &ys, 0.5);
        assert_eq!(c.false_positives + c.false_negatives, 0, "{c:?}");
    }

    #[test]
    fn threshold_keeps_false_positives_within_the_budget() {
        let benign: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let labels = vec![false; 100];
        let t = choose_threshold(&benign, &labels, 0.05);
        let c = Confusion::of(&benign, &labels, t);
        assert_eq!(c.false_positives, 5, "threshold {t}");
        let t0 = choose_threshold(&benign, &labels, 0.0);
        assert_eq!(Confusion::of(&benign, &labels, t0).false_positives, 0);
    }

    #[test]
    fn wilson_interval_brackets_the_rate() {
        let (lo, hi) = wilson(0, 1319);
        assert!(lo == 0.0 && hi > 0.002 && hi < 0.004, "{hi}");
        let (lo, hi) = wilson(50, 100);
        assert!((lo - 0.404).abs() < 0.002 && (hi - 0.596).abs() < 0.002, "{lo} {hi}");
    }

    #[test]
    fn a_stored_guard_round_trips_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let model = GuardModel {
            format: FORMAT.into(),
            encoder: "all-minilm-l6-v2".into(),
            head: Head::new(4, 3, 1),
            threshold: 0.7,
            report: serde_json::json!({"note": 1}),
        };
        model.save(dir.path()).unwrap();
        let back = GuardModel::load(dir.path()).unwrap();
        assert_eq!(back.head, model.head);
        std::fs::write(dir.path().join(GUARD_FILE), "{\"format\":\"other\"}").unwrap();
        let err = GuardModel::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("guard.json"), "{err}");
    }
}

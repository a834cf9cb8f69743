//! One module per subcommand.

pub mod bench;
pub mod chat;
pub mod dpo;
pub mod export;
pub mod info;
pub mod ppl;
pub mod pull;
pub mod quantize;
pub mod rm;
pub mod run;
pub mod tokenizer;
pub mod train;
pub mod serve;
pub mod sft;

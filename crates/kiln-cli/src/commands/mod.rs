//! One module per subcommand.

pub mod bench;
pub mod chat;
pub mod info;
pub mod ppl;
pub mod pull;
pub mod quantize;
pub mod run;
pub mod serve;

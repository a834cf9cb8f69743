//! Parquet input (the format of FineWeb-style corpora): the `text` column of every row group.

use crate::{Result, TrainError};
use std::path::Path;

/// Hands the `text` column of every row of `path` to `sink`, in order.
#[cfg(not(feature = "parquet"))]
pub fn read_parquet(path: &Path, _sink: &mut dyn FnMut(String) -> Result<()>) -> Result<()> {
    Err(TrainError::Data(format!(
        "{}: this kiln was built without Parquet support (cargo feature `parquet` of kiln-train); \
         convert to JSONL with a \"text\" field",
        path.display()
    )))
}

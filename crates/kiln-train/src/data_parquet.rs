//! Parquet input (the format of FineWeb-style corpora): the `text` column of every row, read
//! with the `parquet` crate's row API (no Arrow: it would double the crate's build time).
//! Snappy-compressed and uncompressed files are read; other codecs get a clear error.

use crate::{Result, TrainError};
use std::path::Path;

/// Hands the `text` column of every row of `path` to `sink`, in order.
#[cfg(feature = "parquet")]
pub fn read_parquet(path: &Path, sink: &mut dyn FnMut(String) -> Result<()>) -> Result<()> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    use parquet::schema::types::Type;
    use std::sync::Arc;

    let bad = |e: &dyn std::fmt::Display| TrainError::Data(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(crate::io_err(path))?;
    let reader = SerializedFileReader::new(file).map_err(|e| bad(&e))?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let field = schema
        .root_schema()
        .get_fields()
        .iter()
        .find(|f| f.name() == "text")
        .cloned()
        .ok_or_else(|| bad(&"no column \"text\""))?;
    let projection = Type::group_type_builder(schema.root_schema().name())
        .with_fields(vec![Arc::clone(&field)])
        .build()
        .map_err(|e| bad(&e))?;
    for (i, row) in reader.get_row_iter(Some(projection)).map_err(|e| bad(&e))?.enumerate() {
        let row = row.map_err(|e| bad(&e))?;
        match row.get_string(0) {
            Ok(text) => sink(text.clone())?,
            Err(_) if row.len() == 1 => continue, // a null text: nothing to train on
            Err(e) => return Err(bad(&format!("row {}: {e}", i + 1))),
        }
    }
    Ok(())
}

/// Without the `parquet` feature: one clear error.
#[cfg(not(feature = "parquet"))]
pub fn read_parquet(path: &Path, _sink: &mut dyn FnMut(String) -> Result<()>) -> Result<()> {
    Err(TrainError::Data(format!(
        "{}: this kiln was built without Parquet support (cargo feature `parquet` of kiln-train); \
         convert to JSONL with a \"text\" field",
        path.display()
    )))
}

#[cfg(all(test, feature = "parquet"))]
mod tests {
    use super::*;
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    #[test]
    fn reads_the_text_column_of_a_snappy_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet");
        let schema =
            Arc::new(parse_message_type("message m { required int64 id; required binary text (UTF8); }").unwrap());
        let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
        let mut w = SerializedFileWriter::new(std::fs::File::create(&path).unwrap(), schema, props).unwrap();
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>().write_batch(&[1, 2], None, None).unwrap();
        col.close().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let texts = [ByteArray::from("first document"), ByteArray::from("second one")];
        col.typed::<ByteArrayType>().write_batch(&texts, None, None).unwrap();
        col.close().unwrap();
        rg.close().unwrap();
        w.close().unwrap();
        let mut got = Vec::new();
        read_parquet(&path, &mut |t| {
            got.push(t);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, ["first document", "second one"]);
        let e = read_parquet(&dir.path().join("missing.parquet"), &mut |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("missing.parquet"));
    }
}

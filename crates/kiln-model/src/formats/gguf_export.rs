//! Writing a GGUF model in another weight type (`kiln quantize`): every weight matrix is
//! dequantized to f32 with [`dequantize_row`] and quantized again with [`quantize_row`]
//! (bit-exact with ggml's `quantize_row_*_ref`), the metadata and tokenizer are copied, and the
//! file is written with [`GgufWriter`] in llama.cpp's layout, so llama.cpp loads it too.
//!
//! What each tensor becomes (after llama.cpp's `llama-quantize`, simplified):
//! * 1-D tensors (norms, biases) and tensors whose name does not end in `weight` are F32;
//! * `token_embd.weight` and `output.weight` are Q8_0 when the target has fewer than 6 bits
//!   per weight (Q4_0, Q4_1, Q5_0, Q5_1, Q2_K … Q5_K), where llama.cpp would pick Q6_K or
//!   Q8_0 for the output projection (which the embedding is, when tied), and the target type
//!   otherwise;
//! * every other matrix is the target type;
//! * a matrix whose row length is not a multiple of its type's block size falls back to Q8_0
//!   (rows of a multiple of 32) or F16, with a note in the [`ExportReport`];
//! * a tensor already of the type it should become is copied byte for byte.

use crate::quant::{dequantize_row, quantize_row};
use crate::ModelError;
use kiln_gguf::{GgmlType, GgufFile, GgufWriter, TensorData, TensorInfo, Value};
use rayon::prelude::*;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// `general.quantization_version` of the block layouts kiln writes (ggml's
/// `GGML_QNT_VERSION`).
pub const QUANTIZATION_VERSION: u32 = 2;

/// Rows quantized per rayon task: enough work to amortise scheduling, few enough to balance.
const ROWS_PER_TASK: usize = 16;

/// The weight types [`requantize_gguf`] writes, with the `general.file_type` (llama.cpp's
/// `LLAMA_FTYPE_*` in `llama.h`) a file of mostly that type carries. K types map to their
/// `_S` ("small") file types, the ones whose matrices are all of the base type.
const FILE_TYPES: &[(GgmlType, u32)] = &[
    (GgmlType::F32, 0),   // LLAMA_FTYPE_ALL_F32
    (GgmlType::F16, 1),   // LLAMA_FTYPE_MOSTLY_F16
    (GgmlType::Q4_0, 2),  // LLAMA_FTYPE_MOSTLY_Q4_0
    (GgmlType::Q4_1, 3),  // LLAMA_FTYPE_MOSTLY_Q4_1
    (GgmlType::Q8_0, 7),  // LLAMA_FTYPE_MOSTLY_Q8_0
    (GgmlType::Q5_0, 8),  // LLAMA_FTYPE_MOSTLY_Q5_0
    (GgmlType::Q5_1, 9),  // LLAMA_FTYPE_MOSTLY_Q5_1
    (GgmlType::Q2K, 10),  // LLAMA_FTYPE_MOSTLY_Q2_K
    (GgmlType::Q3K, 11),  // LLAMA_FTYPE_MOSTLY_Q3_K_S
    (GgmlType::Q4K, 14),  // LLAMA_FTYPE_MOSTLY_Q4_K_S
    (GgmlType::Q5K, 16),  // LLAMA_FTYPE_MOSTLY_Q5_K_S
    (GgmlType::Q6K, 18),  // LLAMA_FTYPE_MOSTLY_Q6_K
    (GgmlType::BF16, 32), // LLAMA_FTYPE_MOSTLY_BF16
];

/// llama.cpp's `general.file_type` for a model quantized to `target`, or `None` when `target`
/// is not a weight type (Q8_1 and Q8_K exist only as activation formats).
pub fn llama_file_type(target: GgmlType) -> Option<u32> {
    FILE_TYPES.iter().find(|(t, _)| *t == target).map(|(_, ft)| *ft)
}

/// The weight types [`requantize_gguf`] accepts as a target.
pub fn export_types() -> impl Iterator<Item = GgmlType> {
    FILE_TYPES.iter().map(|(t, _)| *t)
}

/// What happened to one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorExport {
    /// Its name.
    pub name: String,
    /// Its type in the source file.
    pub from: GgmlType,
    /// Its type in the written file.
    pub to: GgmlType,
    /// Number of weights.
    pub n_elements: u64,
    /// Whether its bytes were copied unchanged (the source already had type `to`).
    pub copied: bool,
}

/// What [`requantize_gguf`] wrote.
#[derive(Clone, Debug)]
pub struct ExportReport {
    /// The target type.
    pub target: GgmlType,
    /// The `general.file_type` written.
    pub file_type: u32,
    /// Every tensor, in file order.
    pub tensors: Vec<TensorExport>,
    /// Tensors that could not take the type the rules give them, and what they got instead.
    pub notes: Vec<String>,
    /// Size of the source file in bytes.
    pub bytes_in: u64,
    /// Size of the written file in bytes.
    pub bytes_out: u64,
}

impl ExportReport {
    /// Tensors whose values were recomputed (dequantized and quantized again).
    pub fn converted(&self) -> usize {
        self.tensors.iter().filter(|t| !t.copied).count()
    }

    /// Tensors whose bytes were copied unchanged.
    pub fn copied(&self) -> usize {
        self.tensors.iter().filter(|t| t.copied).count()
    }
}

/// Whether `ty` stores fewer than 6 bits per weight: for these, the embedding and the output
/// projection stay at Q8_0 (see the module comment).
fn is_low_bit(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q2K | Q3K | Q4K | Q5K)
}

/// The type tensor `t` gets in a `target` file, and a note when the rules had to fall back.
fn choose_type(t: &TensorInfo, target: GgmlType) -> (GgmlType, Option<String>) {
    if t.dims.len() < 2 || !t.name.ends_with("weight") {
        return (GgmlType::F32, None);
    }
    let wanted = if is_low_bit(target) && matches!(t.name.as_str(), "token_embd.weight" | "output.weight") {
        GgmlType::Q8_0
    } else {
        target
    };
    let row = t.dims[0] as usize;
    // bytes_for is None when the row is not a whole number of blocks.
    if wanted.bytes_for(row).is_some() {
        return (wanted, None);
    }
    let fallback = if GgmlType::Q8_0.bytes_for(row).is_some() { GgmlType::Q8_0 } else { GgmlType::F16 };
    let note = format!(
        "{}: row length {row} is not a multiple of the {wanted} block size {}; written as {fallback}",
        t.name,
        wanted.block_size()
    );
    (fallback, Some(note))
}

/// The bytes of `src` (`from`, whole rows of `row` values) converted to `to`, rows in parallel.
fn convert(src: &[u8], from: GgmlType, to: GgmlType, row: usize) -> Vec<u8> {
    let in_row = from.bytes_for(row).expect("the reader checked the row length");
    let out_row = to.bytes_for(row).expect("choose_type checked the row length");
    let n_rows = src.len() / in_row;
    let mut out = vec![0u8; n_rows * out_row];
    out.par_chunks_mut(out_row * ROWS_PER_TASK).zip(src.par_chunks(in_row * ROWS_PER_TASK)).for_each(|(dst, src)| {
        let mut values = vec![0f32; row];
        for (d, s) in dst.chunks_exact_mut(out_row).zip(src.chunks_exact(in_row)) {
            dequantize_row(from, s, &mut values);
            quantize_row(to, &values, d).expect("sizes come from bytes_for");
        }
    });
    out
}

/// Writes `src` as a GGUF file at `out` whose weight matrices are of type `target` (see the
/// module comment for which tensors get which type), and reports what became of each tensor.
///
/// Metadata is copied in order, tokenizer and chat template included, with
/// `general.file_type` set to llama.cpp's number for `target` ([`llama_file_type`]) and
/// `general.quantization_version` to 2; `general.alignment` is dropped, since the writer
/// aligns to GGUF's default of 32 bytes.
///
/// `progress(done, total)` is called after each tensor, counting weights. Rows are converted
/// in parallel on the current rayon pool. The output tensors are collected in memory (the
/// source stays mapped) and written to a temporary file beside `out` (`.NAME.tmpPID`), which
/// is then renamed over `out`: `out` is never half-written, a failed run removes the temporary
/// file, and only a killed one can leave it behind.
pub fn requantize_gguf(
    src: &GgufFile,
    target: GgmlType,
    out: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<ExportReport, ModelError> {
    let file_type = llama_file_type(target).ok_or_else(|| {
        ModelError::Format(format!(
            "cannot quantize to {target}: it is an activation format, not a weight type; use one of {}",
            export_types().map(|t| t.name()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let mut writer = GgufWriter::new();
    for (key, value) in &src.metadata {
        if key != "general.alignment" {
            writer.set(key, value.clone());
        }
    }
    writer.set("general.file_type", Value::U32(file_type));
    writer.set("general.quantization_version", Value::U32(QUANTIZATION_VERSION));

    let total: u64 = src.tensors.iter().map(TensorInfo::n_elements).sum();
    let mut done = 0;
    let mut tensors = Vec::with_capacity(src.tensors.len());
    let mut notes = Vec::new();
    progress(0, total);
    for info in &src.tensors {
        let (to, note) = choose_type(info, target);
        notes.extend(note);
        let bytes = src.tensor_data(info);
        let copied = info.ty == to;
        let data = if copied { bytes.to_vec() } else { convert(bytes, info.ty, to, info.dims[0] as usize) };
        writer.add_tensor(TensorData { name: info.name.clone(), dims: info.dims.clone(), ty: to, data });
        tensors.push(TensorExport {
            name: info.name.clone(),
            from: info.ty,
            to,
            n_elements: info.n_elements(),
            copied,
        });
        done += info.n_elements();
        progress(done, total);
    }

    let bytes_out = write_atomically(out, |w| writer.write(w))?;
    Ok(ExportReport { target, file_type, tensors, notes, bytes_in: src.file_len() as u64, bytes_out })
}

/// Writes a file through `write` into a temporary file in `path`'s directory, flushes it to
/// disk and renames it to `path`. Returns the size written.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<u64, ModelError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| ModelError::Io { path: p, source }
    };
    let name = path.file_name().ok_or_else(|| ModelError::Format(format!("{}: not a file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let result = (|| {
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w).map_err(io(&tmp))?;
        let file = w.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io(&tmp))?;
        let len = file.metadata().map_err(io(&tmp))?.len();
        std::fs::rename(&tmp, path).map_err(io(path))?;
        Ok(len)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, dims: &[u64]) -> TensorInfo {
        TensorInfo { name: name.into(), dims: dims.to_vec(), ty: GgmlType::F32, offset: 0 }
    }

    #[test]
    fn file_types_are_llama_cpp_numbers() {
        assert_eq!(llama_file_type(GgmlType::Q4_0), Some(2));
        assert_eq!(llama_file_type(GgmlType::Q4_1), Some(3));
        assert_eq!(llama_file_type(GgmlType::Q8_0), Some(7));
        assert_eq!(llama_file_type(GgmlType::Q4K), Some(14));
        assert_eq!(llama_file_type(GgmlType::Q6K), Some(18));
        assert_eq!(llama_file_type(GgmlType::BF16), Some(32));
        assert_eq!(llama_file_type(GgmlType::Q8K), None);
        assert_eq!(llama_file_type(GgmlType::Q8_1), None);
    }

    #[test]
    fn types_follow_the_rules() {
        let q = GgmlType::Q4_0;
        assert_eq!(choose_type(&info("blk.0.attn_norm.weight", &[64]), q), (GgmlType::F32, None));
        assert_eq!(choose_type(&info("blk.0.attn_q.weight", &[64, 64]), q), (q, None));
        assert_eq!(choose_type(&info("token_embd.weight", &[64, 300]), q), (GgmlType::Q8_0, None));
        assert_eq!(choose_type(&info("output.weight", &[64, 300]), q), (GgmlType::Q8_0, None));
        assert_eq!(choose_type(&info("token_embd.weight", &[64, 300]), GgmlType::Q6K).0, GgmlType::Q8_0);
        assert_eq!(choose_type(&info("token_embd.weight", &[256, 300]), GgmlType::Q6K).0, GgmlType::Q6K);
        let (ty, note) = choose_type(&info("blk.0.ffn_down.weight", &[96, 64]), GgmlType::Q4K);
        assert_eq!(ty, GgmlType::Q8_0);
        assert!(note.unwrap().contains("not a multiple of the Q4_K block size 256"));
        assert_eq!(choose_type(&info("blk.0.ffn_down.weight", &[40, 64]), q).0, GgmlType::F16);
    }
}

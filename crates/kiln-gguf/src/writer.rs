//! Writing GGUF v3 files.

use crate::{GgmlType, Value};
use std::io::{self, Write};

/// A tensor to be written: its bytes must already be in `ty`'s layout.
pub struct TensorData {
    /// Name, `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order (row length first).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Raw bytes.
    pub data: Vec<u8>,
}

/// Collects metadata and tensors, then writes one GGUF v3 file.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorData>,
}

const ALIGNMENT: u64 = 32;

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a metadata entry.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Adds a tensor. Panics if `data` does not hold exactly `dims` elements of `ty`:
    /// that is a bug in the caller, not bad input.
    pub fn add_tensor(&mut self, tensor: TensorData) {
        let n: u64 = tensor.dims.iter().product();
        assert_eq!(tensor.ty.bytes_for(n as usize), Some(tensor.data.len()), "tensor {}", tensor.name);
        self.tensors.push(tensor);
    }

    /// Writes the file.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut head = Vec::new();
        head.extend_from_slice(b"GGUF");
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            head.extend_from_slice(&encode_string(k));
            head.extend_from_slice(&v.type_id().to_le_bytes());
            head.extend_from_slice(&encode_value(v));
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            head.extend_from_slice(&encode_string(&t.name));
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset = align(offset + t.data.len() as u64);
        }
        head.resize(align(head.len() as u64) as usize, 0);
        w.write_all(&head)?;
        for t in &self.tensors {
            w.write_all(&t.data)?;
            let pad = align(t.data.len() as u64) as usize - t.data.len();
            w.write_all(&vec![0u8; pad])?;
        }
        Ok(())
    }
}

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn encode_string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

fn encode_value(v: &Value) -> Vec<u8> {
    match v {
        Value::U8(x) => vec![*x],
        Value::I8(x) => vec![*x as u8],
        Value::U16(x) => x.to_le_bytes().to_vec(),
        Value::I16(x) => x.to_le_bytes().to_vec(),
        Value::U32(x) => x.to_le_bytes().to_vec(),
        Value::I32(x) => x.to_le_bytes().to_vec(),
        Value::U64(x) => x.to_le_bytes().to_vec(),
        Value::I64(x) => x.to_le_bytes().to_vec(),
        Value::F32(x) => x.to_le_bytes().to_vec(),
        Value::F64(x) => x.to_le_bytes().to_vec(),
        Value::Bool(x) => vec![*x as u8],
        Value::String(s) => encode_string(s),
        Value::Array(items) => {
            // GGUF arrays are homogeneous; an empty one is written as an array of u8.
            let elem = items.first().map_or(0, Value::type_id);
            let mut b = elem.to_le_bytes().to_vec();
            b.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                b.extend_from_slice(&encode_value(it));
            }
            b
        }
    }
}

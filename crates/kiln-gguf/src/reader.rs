//! Reading GGUF files: every field checked, tensor data left in the mmap.
//!
//! Layout (llama.cpp `docs/gguf.md`): magic `GGUF`, version u32, tensor count u64, metadata
//! count u64, metadata key/values, tensor infos, padding to `general.alignment`, tensor data.
//! All integers little-endian.

use crate::{GgmlType, Value};
use memmap2::Mmap;
use std::fs::File;
use std::path::Path;

/// Why a GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file (magic bytes are {0:?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    /// Version 1 or an unknown future version.
    #[error("GGUF version {0} is not supported (kiln reads versions 2 and 3)")]
    Version(u32),
    /// The file ends before a field it announces.
    #[error("GGUF file is truncated: needed {needed} bytes at offset {offset}, file has {len}")]
    Truncated {
        /// Where the read started.
        offset: usize,
        /// How many bytes it needed.
        needed: usize,
        /// The file's length.
        len: usize,
    },
    /// A field holds a value that cannot be right.
    #[error("corrupt GGUF file: {0}")]
    Corrupt(String),
    /// A tensor of a type kiln does not implement.
    #[error("tensor {name:?} has ggml type id {id}, which kiln does not support")]
    UnknownTensorType {
        /// The tensor.
        name: String,
        /// Its type id.
        id: u32,
    },
}

type Result<T> = std::result::Result<T, GgufError>;

/// A tensor's description: where its bytes lie in the data section.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Name as stored, `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the contiguous (row) length.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of data.
    pub fn n_bytes(&self) -> usize {
        self.ty.bytes_for(self.n_elements() as usize).expect("checked when the file was read")
    }
}

enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

/// An open GGUF file. Tensor data is borrowed from the mmap, never copied.
pub struct GgufFile {
    bytes: Bytes,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// The alignment of tensor data.
    pub alignment: u64,
    data_offset: usize,
}

impl GgufFile {
    /// Maps and checks the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let io = |source| GgufError::Io { path: path.display().to_string(), source };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; kiln never writes to a model file while it is open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(Bytes::Mapped(mmap))
    }

    /// Checks a GGUF image held in memory (tests, fuzzing).
    pub fn from_vec(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::parse(Bytes::Owned(bytes))
    }

    fn parse(bytes: Bytes) -> Result<GgufFile> {
        let data: &[u8] = match &bytes {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        };
        let mut r = Cursor { data, pos: 0 };
        let magic: [u8; 4] = r.take(4)?.try_into().unwrap();
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic(magic));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        // Each entry takes at least 8 bytes, so a count beyond that is a lie, not a big file.
        let limit = (data.len() / 8) as u64;
        if n_tensors > limit || n_kv > limit {
            return Err(GgufError::Corrupt(format!(
                "header announces {n_tensors} tensors and {n_kv} metadata entries in a {}-byte file",
                data.len()
            )));
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            metadata.push((key, value));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => 32,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(GgufError::Corrupt(format!("general.alignment is {}", v.summary()))),
            },
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims == 0 || n_dims > 4 {
                return Err(GgufError::Corrupt(format!("tensor {name:?} has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64()?);
            }
            let id = r.u32()?;
            let ty = GgmlType::from_id(id).ok_or_else(|| GgufError::UnknownTensorType { name: name.clone(), id })?;
            let offset = r.u64()?;
            tensors.push(TensorInfo { name, dims, ty, offset });
        }
        let data_offset = align(r.pos as u64, alignment) as usize;
        let data_len = data.len().saturating_sub(data_offset);
        for t in &tensors {
            let n = t.dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
            let n = n.filter(|&n| n > 0 && n < (1 << 40)).ok_or_else(|| {
                GgufError::Corrupt(format!("tensor {:?} has impossible dimensions {:?}", t.name, t.dims))
            })?;
            if t.dims[0] % t.ty.block_size() as u64 != 0 {
                return Err(GgufError::Corrupt(format!(
                    "tensor {:?}: row length {} is not a multiple of the {} block size {}",
                    t.name,
                    t.dims[0],
                    t.ty,
                    t.ty.block_size()
                )));
            }
            let size = t.ty.bytes_for(n as usize).unwrap() as u64;
            if t.offset % alignment != 0 {
                return Err(GgufError::Corrupt(format!("tensor {:?} offset {} is not aligned", t.name, t.offset)));
            }
            let end = t.offset.saturating_add(size);
            if end > data_len as u64 {
                return Err(GgufError::Truncated {
                    offset: data_offset + t.offset as usize,
                    needed: size as usize,
                    len: data.len(),
                });
            }
        }
        Ok(GgufFile { bytes, version, metadata, tensors, alignment, data_offset })
    }

    fn data(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a tensor of this file.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_offset + info.offset as usize;
        &self.data()[start..start + info.n_bytes()]
    }

    /// Where a tensor's bytes start, counted from the start of the file.
    pub fn tensor_file_offset(&self, info: &TensorInfo) -> usize {
        self.data_offset + info.offset as usize
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.data()
    }

    /// Lets the kernel drop the resident pages of file bytes `range` (they were copied
    /// elsewhere); reading them again brings them back from the file. Does nothing for an
    /// image held in memory.
    pub fn release(&self, range: std::ops::Range<usize>) {
        if let Bytes::Mapped(m) = &self.bytes {
            release_pages(m, range);
        }
    }

    /// Size of the whole file in bytes.
    pub fn file_len(&self) -> usize {
        self.data().len()
    }
}

/// `madvise(DONTNEED)` on `range` of a read-only file map: its pages leave the process's
/// resident set and come back from the file if read again. A failure only leaves them resident.
pub fn release_pages(map: &Mmap, range: std::ops::Range<usize>) {
    let end = range.end.min(map.len());
    if range.start < end {
        // SAFETY: the map is read-only and file-backed, so dropped pages read back the same
        // bytes from the file; nothing is lost.
        #[cfg(unix)]
        let _ =
            unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, end - range.start) };
    }
}

fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or(GgufError::Truncated { offset: self.pos, needed: n, len: self.data.len() })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().unwrap())
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn len(&mut self) -> Result<usize> {
        let n = self.u64()?;
        if n > (self.data.len() - self.pos) as u64 {
            return Err(GgufError::Truncated { offset: self.pos, needed: n as usize, len: self.data.len() });
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> Result<String> {
        let n = self.len()?;
        let b = self.take(n)?;
        // Some converters wrote token pieces that are not valid UTF-8; keep them readable.
        Ok(String::from_utf8_lossy(b).into_owned())
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>()?[0]),
            1 => Value::I8(self.array::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(GgufError::Corrupt(format!("boolean value {b}"))),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(GgufError::Corrupt("arrays nested too deeply".into()));
                }
                let elem = self.u32()?;
                let n = self.len()?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            t => return Err(GgufError::Corrupt(format!("unknown metadata value type {t} at offset {}", self.pos))),
        })
    }
}

//! Weight tensors as the forward pass sees them: matrices left in their stored (often
//! quantized) form inside the mapped file, small vectors (norms, biases) as f32.

use crate::quant;
use crate::quant::packed::{self, PackedRows};
use kiln_gguf::{GgmlType, GgufFile};
use memmap2::Mmap;
use std::sync::{Arc, OnceLock};

/// Bytes that weights point into: a whole mapped file, or memory for converted tensors.
pub enum Backing {
    /// A GGUF file (mapped).
    Gguf(GgufFile),
    /// Any other mapped file (safetensors, llama2.c).
    Mapped(Mmap),
    /// Tensors converted or created in memory.
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Gguf(f) => f.bytes(),
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }

    /// Lets go of the resident pages of `range` where the bytes come from a file (they are
    /// read back from it if needed again); memory we own stays.
    fn release(&self, range: std::ops::Range<usize>) {
        match self {
            Backing::Gguf(f) => f.release(range),
            Backing::Mapped(m) => kiln_gguf::release_pages(m, range),
            Backing::Owned(_) => {}
        }
    }
}

/// A `rows × cols` weight matrix, row-major, each row `cols` elements of `ty`.
/// In ggml's words: `ne0 = cols`, `ne1 = rows`; `y = W·x` maps `cols` inputs to `rows` outputs.
#[derive(Clone)]
pub struct QMatrix {
    /// Storage type of the elements.
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    backing: Arc<Backing>,
    offset: usize,
    /// The whole groups of eight rows repacked for decoding, made on the first product and
    /// shared by clones (see `quant::packed`).
    packed: Arc<OnceLock<Option<PackedRows>>>,
}

impl QMatrix {
    /// A matrix over `backing` starting at byte `offset`. The caller has checked the bounds.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, backing: Arc<Backing>, offset: usize) -> QMatrix {
        let m = QMatrix { ty, rows, cols, backing, offset, packed: Arc::default() };
        assert!(m.offset + m.rows * m.row_bytes() <= m.backing.bytes().len(), "matrix outside its backing");
        m
    }

    /// A matrix that owns its bytes.
    pub fn from_bytes(ty: GgmlType, rows: usize, cols: usize, bytes: Vec<u8>) -> QMatrix {
        QMatrix::new(ty, rows, cols, Arc::new(Backing::Owned(bytes)), 0)
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.ty.bytes_for(self.cols).expect("row length is a whole number of blocks")
    }

    /// All rows.
    pub fn data(&self) -> &[u8] {
        &self.backing.bytes()[self.offset..self.offset + self.rows * self.row_bytes()]
    }

    /// The leading whole groups of eight rows in the packed layout of the decoding kernels,
    /// where this CPU has them for the type (`None` otherwise). Packed on the first call; the
    /// file pages the rows came from are then released, so the copy does not add to the
    /// resident memory (rows read through [`QMatrix::data`] later come back from the file).
    pub fn packed(&self) -> Option<&PackedRows> {
        self.packed
            .get_or_init(|| {
                let packable = packed::enabled() && packed::packable(self.ty) && self.rows >= quant::tile::TILE_ROWS;
                packable.then(|| {
                    PackedRows::pack(self.ty, self.data(), self.rows, self.row_bytes(), |range| {
                        self.backing.release(self.offset + range.start..self.offset + range.end)
                    })
                })
            })
            .as_ref()
    }

    /// Row `r` in stored form.
    pub fn row(&self, r: usize) -> &[u8] {
        let n = self.row_bytes();
        &self.data()[r * n..(r + 1) * n]
    }

    /// Row `r` as f32 (embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        // From the packed copy where there is one: reading the file would map its released
        // pages back (and their neighbours with them), counting the matrix twice.
        if let Some(Some(packed)) = self.packed.get() {
            if r < packed.groups * quant::tile::TILE_ROWS {
                return packed.dequantize_row(r, &mut out[..self.cols]);
            }
        }
        quant::dequantize_row(self.ty, self.row(r), &mut out[..self.cols]);
    }

    /// The whole matrix as f32 (tests, conversion).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, chunk) in out.chunks_mut(self.cols).enumerate() {
            self.dequantize_row(r, chunk);
        }
        out
    }
}

/// One transformer block's weights. Shapes use `d = dim`, `q = n_heads·head_dim`,
/// `kv = n_kv_heads·head_dim`, `f = ffn_dim`, `h = head_dim`.
pub struct LayerWeights {
    /// `[d]` RMSNorm before attention.
    pub attn_norm: Vec<f32>,
    /// `q × d`
    pub wq: QMatrix,
    /// `kv × d`
    pub wk: QMatrix,
    /// `kv × d`
    pub wv: QMatrix,
    /// `d × q`
    pub wo: QMatrix,
    /// `[q]`, `[kv]`, `[kv]` projection biases (Qwen2).
    pub bq: Option<Vec<f32>>,
    /// See `bq`.
    pub bk: Option<Vec<f32>>,
    /// See `bq`.
    pub bv: Option<Vec<f32>>,
    /// `[h]` per-head RMSNorm of queries and keys (Qwen3, Gemma 3).
    pub q_norm: Option<Vec<f32>>,
    /// See `q_norm`.
    pub k_norm: Option<Vec<f32>>,
    /// `[d]` RMSNorm of the attention output before the residual add (Gemma 3).
    pub post_attn_norm: Option<Vec<f32>>,
    /// `[d]` RMSNorm before the feed-forward block.
    pub ffn_norm: Vec<f32>,
    /// `f × d`
    pub w_gate: QMatrix,
    /// `f × d`
    pub w_up: QMatrix,
    /// `d × f`
    pub w_down: QMatrix,
    /// `[d]` RMSNorm of the feed-forward output before the residual add (Gemma 3).
    pub post_ffn_norm: Option<Vec<f32>>,
}

/// All weights of a model.
pub struct Weights {
    /// `vocab × d` token embeddings.
    pub token_embd: QMatrix,
    /// The blocks, in order.
    pub layers: Vec<LayerWeights>,
    /// `[d]` final RMSNorm.
    pub output_norm: Vec<f32>,
    /// `vocab × d` output projection (often the embedding matrix itself).
    pub output: QMatrix,
    /// `[rope_dim/2]` per-frequency divisors (Llama 3.1 long-context RoPE), if any.
    pub rope_freqs: Option<Vec<f32>>,
}

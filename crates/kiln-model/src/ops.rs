//! The element-wise and reduction operations of the forward pass, in f32, written to give
//! the same numbers as ggml's CPU backend (accumulation order and precision included), so
//! that greedy outputs match llama.cpp token for token.

use crate::quant;
use crate::weights::QMatrix;
use half::f16;
use rayon::prelude::*;
use std::sync::OnceLock;

/// `out = x / rms(x) * weight`, for each row of `x` (`weight.len()` wide).
/// ggml sums the squares in f64 and multiplies by the weight in a separate step.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = (v * scale) * w;
        }
    }
}

/// [`rms_norm`] in place.
pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let n = weight.len();
    for xr in x.chunks_exact_mut(n) {
        let sum: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, &w) in xr.iter_mut().zip(weight) {
            *v = (*v * scale) * w;
        }
    }
}

/// Cosines and sines of RoPE for one position: `cos[i], sin[i]` rotate pair `i`.
/// θ_i = pos · base^(−2i/n) is built by repeated multiplication in f32, as ggml does.
pub fn rope_angles(pos: usize, base: f32, rope_dim: usize, freq_divisors: Option<&[f32]>, cos: &mut [f32], sin: &mut [f32]) {
    let theta_scale = base.powf(-2.0 / rope_dim as f32);
    let mut theta = pos as f32;
    for i in 0..rope_dim / 2 {
        let t = match freq_divisors {
            Some(f) => theta / f[i],
            None => theta,
        };
        cos[i] = t.cos();
        sin[i] = t.sin();
        theta *= theta_scale;
    }
}

/// Rotates every head of `x` (`head_dim` wide) by the angles of one position.
pub fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = cos.len();
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos[i] - x1 * sin[i];
            head[b] = x0 * sin[i] + x1 * cos[i];
        }
    }
}

pub use crate::math::swiglu;

fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// GELU of every f16 value, rounded to f16: ggml evaluates GELU through this table.
fn gelu_table() -> &'static [f16] {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(|b| f16::from_f32(gelu_tanh(f16::from_bits(b).to_f32()))).collect())
}

/// `gate = gelu(gate) * up`, with ggml's f16-table GELU.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            table[f16::from_f32(x).to_bits() as usize].to_f32() * u
        };
    }
}

/// Converts `n_rows` rows of `x` into the activation format `w` multiplies with.
pub fn prepare_activations(w: &QMatrix, x: &[f32], n_rows: usize, buf: &mut Vec<u8>) {
    let ty = quant::vec_dot_type(w.ty);
    let row_bytes = ty.bytes_for(w.cols).expect("activation row is whole blocks");
    buf.resize(row_bytes * n_rows, 0);
    for (xr, br) in x.chunks_exact(w.cols).zip(buf.chunks_exact_mut(row_bytes)).take(n_rows) {
        quant::quantize_activations(ty, xr, br).expect("every vec_dot type can be quantized to");
    }
}

struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `out[t][r] = W[r] · x[t]` for `n_rows` activation rows prepared by [`prepare_activations`].
/// Rows of W are split across threads; each weight row is read once for all activation rows.
/// Every output row is bit-identical to a one-row product, whatever `n_rows` is: batching
/// requests together or splitting a prompt differently never changes a result.
pub fn matmul_prepared(w: &QMatrix, acts: &[u8], n_rows: usize, out: &mut [f32]) {
    assert!(out.len() >= n_rows * w.rows);
    let kernel = quant::RowDot::new(w.ty, w.cols);
    let act_bytes = kernel.act_bytes();
    assert!(acts.len() >= n_rows * act_bytes);
    if quant::tile::supported(w.ty) {
        return matmul_eight_rows(w, acts, act_bytes, n_rows, out);
    }
    let data = w.data();
    let row_bytes = w.row_bytes();
    let out_ptr = SendPtr(out.as_mut_ptr());
    let out_ref = &out_ptr;
    for_chunks(w.rows, |r0, r1, _: &mut ()| {
        for r in r0..r1 {
            let wr = &data[r * row_bytes..(r + 1) * row_bytes];
            // SAFETY (both writers): each (t, r) is written by exactly one task; `out` outlives
            // the loop.
            let write = |t: usize, v: f32| unsafe { *out_ref.0.add(t * w.rows + r) = v };
            let act = |t: usize| &acts[t * act_bytes..];
            // Four activation rows per weight row where there are four (the same bits as one
            // at a time: batches do not change answers).
            let mut t = 0;
            while n_rows - t >= 4 {
                let v = kernel.dot_rows::<4>(wr, [act(t), act(t + 1), act(t + 2), act(t + 3)]);
                v.iter().enumerate().for_each(|(k, &v)| write(t + k, v));
                t += 4;
            }
            for t in t..n_rows {
                write(t, kernel.dot(wr, act(t)));
            }
        }
    });
}

/// Splits `0..n` into a few contiguous chunks per thread (evening out the load without paying
/// for many tiny tasks) and runs `f(start, end, per-task state)` on each in parallel.
fn for_chunks<S: Default>(n: usize, f: impl Fn(usize, usize, &mut S) + Sync + Send) {
    let n_chunks = (rayon::current_num_threads() * 4).min(n).max(1);
    let chunk = n.div_ceil(n_chunks);
    (0..n.div_ceil(chunk)).into_par_iter().for_each_init(S::default, |state, c| {
        f(c * chunk, ((c + 1) * chunk).min(n), state);
    });
}

/// From this many activation rows on, unpacking weights into a tile pays for itself.
const UNPACK_MIN_ROWS: usize = 8;

thread_local! {
    /// Activation block sums for the packed kernels, kept between products (decoding does
    /// not allocate).
    static ACTIVATION_SUMS: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`matmul_prepared`] eight weight rows at a time ([`quant::tile`]): unpacked into a tile
/// when several activation rows share it, read in place otherwise (both give the same bits).
/// Rows the matrix keeps packed ([`QMatrix::packed`]) are read from there: by the packed
/// kernels for few activation rows, unpacked back into tiles for many (the same bits again).
fn matmul_eight_rows(w: &QMatrix, acts: &[u8], act_bytes: usize, n_rows: usize, out: &mut [f32]) {
    let packed = w.packed();
    if packed.is_none() || n_rows >= UNPACK_MIN_ROWS {
        return eight_rows_with_sums(w, packed, acts, act_bytes, n_rows, &[], out);
    }
    // Taken out rather than borrowed: while this thread waits for the product's tasks, rayon
    // may hand it another product (of another model or request) that wants the buffer too.
    let mut sums = ACTIVATION_SUMS.take();
    sums.clear();
    for t in 0..n_rows {
        quant::packed::activation_sums(&acts[t * act_bytes..(t + 1) * act_bytes], &mut sums);
    }
    eight_rows_with_sums(w, packed, acts, act_bytes, n_rows, &sums, out);
    ACTIVATION_SUMS.set(sums);
}

fn eight_rows_with_sums(w: &QMatrix, packed: Option<&quant::packed::PackedRows>, acts: &[u8], act_bytes: usize, n_rows: usize, sums: &[i32], out: &mut [f32]) {
    use quant::tile::{dot_in_place, Tile, TILE_ROWS};
    let data = w.data();
    let row_bytes = w.row_bytes();
    let groups = packed.map_or(0, |p| p.groups);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let out_ref = &out_ptr;
    let prepared = (n_rows >= UNPACK_MIN_ROWS).then(|| quant::tile::Activations::new(w.ty, acts, act_bytes, n_rows));
    for_chunks(w.rows.div_ceil(TILE_ROWS), |t0, t1, tile: &mut Tile| {
        for i in t0..t1 {
            let r0 = i * TILE_ROWS;
            let r1 = (r0 + TILE_ROWS).min(w.rows);
            // SAFETY (both writers): each (t, r) is written by exactly one task; `out`
            // outlives the loop.
            let write = |t: usize, v: &[f32; TILE_ROWS]| {
                for (k, &x) in v[..r1 - r0].iter().enumerate() {
                    unsafe { *out_ref.0.add(t * w.rows + r0 + k) = x };
                }
            };
            if let Some(packed) = packed.filter(|_| i < groups) {
                let next = if i + 1 < t1 && i + 1 < groups { packed.group(i + 1) } else { &[] };
                if n_rows >= UNPACK_MIN_ROWS {
                    tile.load_packed(w.ty, packed.group(i), row_bytes);
                    quant::prefetch(next);
                    tile.dot_many(prepared.as_ref().expect("prepared for tiles"), write);
                } else {
                    let blocks = packed.blocks;
                    for t in 0..n_rows {
                        let act = &acts[t * act_bytes..(t + 1) * act_bytes];
                        let v = quant::packed::dot_group(packed, i, act, &sums[t * blocks..(t + 1) * blocks], if t == 0 { next } else { &[] });
                        write(t, &v);
                    }
                }
                continue;
            }
            let mut rows: [&[u8]; TILE_ROWS] = [&[]; TILE_ROWS];
            for (slot, r) in rows.iter_mut().zip(r0..r1) {
                *slot = &data[r * row_bytes..(r + 1) * row_bytes];
            }
            let rows = &rows[..r1 - r0];
            // The next eight rows lie right after these: fetched while these are computed.
            let next_end = if i + 1 < t1 { (r1 + TILE_ROWS).min(w.rows) } else { r1 };
            let next = &data[r1 * row_bytes..next_end * row_bytes];
            if i == t0 {
                quant::prefetch(&data[r0 * row_bytes..r1 * row_bytes]);
            }
            if n_rows >= UNPACK_MIN_ROWS {
                tile.load(w.ty, rows);
                // Many dot products follow: time enough for the next rows to arrive.
                quant::prefetch(next);
                tile.dot_many(prepared.as_ref().expect("prepared for tiles"), write);
            } else {
                for t in 0..n_rows {
                    let act = &acts[t * act_bytes..(t + 1) * act_bytes];
                    write(t, &dot_in_place(w.ty, rows, act, if t == 0 { next } else { &[] }));
                }
            }
        }
    });
}

/// `out = W·x` for `n_rows` rows of `x`, using `buf` for the converted activations.
pub fn matmul(w: &QMatrix, x: &[f32], n_rows: usize, buf: &mut Vec<u8>, out: &mut [f32]) {
    prepare_activations(w, x, n_rows, buf);
    matmul_prepared(w, buf, n_rows, out);
}

/// Whether activations prepared for `a` can be reused for `b` (same format and width).
pub fn same_activations(a: &QMatrix, b: &QMatrix) -> bool {
    quant::vec_dot_type(a.ty) == quant::vec_dot_type(b.ty) && a.cols == b.cols
}

/// Adds `bias` to every row of `x`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// `x += y`.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_definition() {
        let x = [1.0f32, -2.0, 3.0, 0.5];
        let w = [1.0f32, 2.0, 0.5, 1.0];
        let mut out = [0.0; 4];
        rms_norm(&x, &w, 1e-6, &mut out);
        let rms = ((1.0 + 4.0 + 9.0 + 0.25) / 4.0f32 + 1e-6).sqrt();
        for i in 0..4 {
            assert!((out[i] - x[i] / rms * w[i]).abs() < 1e-6);
        }
    }

    #[test]
    fn rope_is_a_rotation_and_position_zero_is_identity() {
        let mut cos = [0.0; 4];
        let mut sin = [0.0; 4];
        rope_angles(0, 10000.0, 8, None, &mut cos, &mut sin);
        let orig: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let mut x = orig.clone();
        rope(&mut x, 8, &cos, &sin, true);
        assert_eq!(x, orig);
        rope_angles(17, 10000.0, 8, None, &mut cos, &mut sin);
        for interleaved in [true, false] {
            let mut x = orig.clone();
            rope(&mut x, 8, &cos, &sin, interleaved);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = x.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-4);
            assert_ne!(x, orig);
        }
    }

    #[test]
    fn geglu_table_is_close_to_exact_gelu() {
        for i in -300..300 {
            let x = i as f32 * 0.03;
            let mut g = [x];
            geglu(&mut g, &[1.0]);
            assert!((g[0] - gelu_tanh(x)).abs() < 1e-2 * (1.0 + x.abs()), "{x}");
        }
    }

    /// Batching must never change a result: each row of a many-row product equals the same
    /// row computed alone, bit for bit, for every weight format and across the row counts
    /// where the kernels switch (in place below UNPACK_MIN_ROWS, unpacked tiles from it on).
    #[test]
    fn matmul_rows_do_not_depend_on_the_batch() {
        use kiln_gguf::GgmlType;
        // 256 columns: one K-quant super-block.
        let (rows, cols) = (37, 256);
        let mut seed = 12345u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed % 2000) as f32 / 1000.0 - 1.0
        };
        // Up to 13 rows: the unpacked-tile kernels' passes of eight, four and one all run.
        const MOST: usize = 13;
        let x: Vec<f32> = (0..MOST * cols).map(|_| next()).collect();
        let w_f32: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K, GgmlType::F32] {
            let row_bytes = ty.bytes_for(cols).unwrap();
            let mut bytes = vec![0u8; rows * row_bytes];
            for (src, dst) in w_f32.chunks(cols).zip(bytes.chunks_mut(row_bytes)) {
                quant::quantize_row(ty, src, dst).unwrap();
            }
            let w = QMatrix::from_bytes(ty, rows, cols, bytes);
            let mut buf = Vec::new();
            let mut alone = vec![0f32; MOST * rows];
            for t in 0..MOST {
                matmul(&w, &x[t * cols..(t + 1) * cols], 1, &mut buf, &mut alone[t * rows..(t + 1) * rows]);
            }
            for n in [2, 3, 7, 8, 9, 12, MOST] {
                let mut together = vec![0f32; n * rows];
                matmul(&w, &x[..n * cols], n, &mut buf, &mut together);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&together), bits(&alone[..n * rows]), "{ty}, {n} rows");
            }
        }
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = [1.0f32, 2.0, 3.0, -1000.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0]);
    }
}

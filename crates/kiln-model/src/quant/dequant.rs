//! Dequantization of every ggml weight format to f32, bit-exact with ggml's `dequantize_row_*`
//! (ggml-quants.c): the same integer unpacking and the same f32 operations in the same order
//! (no fused multiply-adds), so a weight reads the same here as in llama.cpp.

use super::blocks::*;

/// F16 → f32 (exact).
pub fn f16(src: &[u8], dst: &mut [f32]) {
    for (o, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *o = F16Le([b[0], b[1]]).to_f32();
    }
}

/// BF16 → f32 (exact: the 16 bits become the high half of the f32).
pub fn bf16(src: &[u8], dst: &mut [f32]) {
    for (o, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
    }
}

/// F32 (little-endian bytes) → f32.
pub fn f32(src: &[u8], dst: &mut [f32]) {
    for (o, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Q4_0: `(q - 8) * d`.
pub fn q4_0(src: &[BlockQ4_0], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for j in 0..QK / 2 {
            y[j] = ((b.qs[j] & 0xF) as i32 - 8) as f32 * d;
            y[j + QK / 2] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Q4_1: `q * d + m`.
pub fn q4_1(src: &[BlockQ4_1], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for j in 0..QK / 2 {
            y[j] = (b.qs[j] & 0xF) as f32 * d + m;
            y[j + QK / 2] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// The 5-bit quant j (0..32) of a Q5_0 / Q5_1 block.
#[inline(always)]
fn q5(qs: &[u8; 16], qh: u32, j: usize) -> i32 {
    let low = if j < 16 { qs[j] & 0xF } else { qs[j - 16] >> 4 };
    (low as i32) | ((((qh >> j) & 1) as i32) << 4)
}

/// Q5_0: `(q - 16) * d`.
pub fn q5_0(src: &[BlockQ5_0], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let qh = u32::from_le_bytes(b.qh);
        for (j, o) in y.iter_mut().enumerate() {
            *o = (q5(&b.qs, qh, j) - 16) as f32 * d;
        }
    }
}

/// Q5_1: `q * d + m`.
pub fn q5_1(src: &[BlockQ5_1], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        let qh = u32::from_le_bytes(b.qh);
        for (j, o) in y.iter_mut().enumerate() {
            *o = q5(&b.qs, qh, j) as f32 * d + m;
        }
    }
}

/// Q8_0: `q * d`.
pub fn q8_0(src: &[BlockQ8_0], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

/// Q8_1: `q * d` (the stored sum is not needed; ggml has no dequantizer for Q8_1, this is the
/// obvious one).
pub fn q8_1(src: &[BlockQ8_1], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

/// Q2_K: `d * sc * q - dmin * m` per 16-weight group.
pub fn q2k(src: &[BlockQ2K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        // Group g (0..16) covers weights 16 * g ..; it reads chunk g / 8 of `qs`, bytes
        // 16 * (g % 2) .. + 16, at bit shift 2 * ((g % 8) / 2).
        for (g, out) in y.chunks_exact_mut(16).enumerate() {
            let sc = b.scales[g];
            let dl = d * (sc & 0xF) as f32;
            let ml = min * (sc >> 4) as f32;
            let q = &b.qs[32 * (g / 8) + 16 * (g % 2)..][..16];
            let shift = 2 * ((g % 8) / 2);
            for (o, &qb) in out.iter_mut().zip(q) {
                *o = dl * ((qb >> shift) & 3) as f32 - ml;
            }
        }
    }
}

/// Q3_K: `d * (sc - 32) * (q - 4 * !hbit)` per 16-weight group.
pub fn q3k(src: &[BlockQ3K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d_all = b.d.to_f32();
        let scales = q3k_scales(&b.scales);
        // Group g reads low bits as in Q2_K and high bits from bit g / 2 of `hmask`
        // bytes 16 * (g % 2) .. + 16.
        for (g, out) in y.chunks_exact_mut(16).enumerate() {
            let dl = d_all * (scales[g] as i32 - 32) as f32;
            let off = 16 * (g % 2);
            let q = &b.qs[32 * (g / 8) + off..][..16];
            let hm = &b.hmask[off..][..16];
            let shift = 2 * ((g % 8) / 2);
            let bit = 1u8 << (g / 2);
            for l in 0..16 {
                let low = ((q[l] >> shift) & 3) as i32;
                let v = low - if hm[l] & bit != 0 { 0 } else { 4 };
                out[l] = dl * v as f32;
            }
        }
    }
}

/// Q4_K: `d * sc * q - dmin * m` per 32-weight group.
pub fn q4k(src: &[BlockQ4K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        for (c, out) in y.chunks_exact_mut(64).enumerate() {
            let q = &b.qs[32 * c..][..32];
            let (sc1, m1) = scale_min_k4(2 * c, &b.scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, &b.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            for l in 0..32 {
                out[l] = d1 * (q[l] & 0xF) as f32 - m1;
                out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// Q5_K: `d * sc * q - dmin * m` per 32-weight group, q with a fifth bit from `qh`.
pub fn q5k(src: &[BlockQ5K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        for (c, out) in y.chunks_exact_mut(64).enumerate() {
            let ql = &b.qs[32 * c..][..32];
            let (sc1, m1) = scale_min_k4(2 * c, &b.scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, &b.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for l in 0..32 {
                let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
                out[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
                out[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
            }
        }
    }
}

/// Q6_K: `d * sc * (q - 32)` per 16-weight group.
pub fn q6k(src: &[BlockQ6K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (h, out) in y.chunks_exact_mut(128).enumerate() {
            let ql = &b.ql[64 * h..][..64];
            let qh = &b.qh[32 * h..][..32];
            let sc = &b.scales[8 * h..][..8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                out[l] = d * sc[is] as f32 * q1 as f32;
                out[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                out[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                out[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

/// Q8_K: `d * q` with an f32 scale.
pub fn q8k(src: &[BlockQ8K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = b.d();
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = d * q as f32;
        }
    }
}

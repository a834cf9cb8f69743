//! Single-thread timing of one activation row against a weight matrix: the one-row kernel
//! row by row, against the eight-row in-place kernel (`quant::tile::dot_in_place`) that
//! decoding uses, and the packed kernel (`quant::packed`: Q4_0, Q4_1, Q5_0, Q8_0). Not a test; numbers go to docs/LOG.md.
//!
//! `TY=q4_0|q4_1|q5_0|q8_0 ROWS=N REPS=K cargo run --release -p kiln-model --example eight_rows_bench`
//! (ROWS=160000 REPS=1 streams ~57 MB from memory; ROWS=1600 REPS=100 stays in cache;
//! AHEAD=K prefetches the rows K tiles ahead, default 1 as in `ops::matmul`).
use kiln_gguf::GgmlType;
use kiln_model::quant::{self, tile};
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    let ty = match std::env::var("TY").as_deref() {
        Ok("q4_0") => GgmlType::Q4_0,
        Ok("q5_0") => GgmlType::Q5_0,
        Ok("q8_0") => GgmlType::Q8_0,
        _ => GgmlType::Q4_1,
    };
    let (rows, reps, cols) = (env("ROWS", 160_000) / 8 * 8, env("REPS", 1), 576);
    let mut seed = 1u32;
    let values: Vec<f32> = (0..rows * cols)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let row_bytes = ty.bytes_for(cols).unwrap();
    let mut weights = vec![0u8; row_bytes * rows];
    for (src, dst) in values.chunks(cols).zip(weights.chunks_mut(row_bytes)) {
        quant::quantize_row(ty, src, dst).unwrap();
    }
    let act_ty = quant::vec_dot_type(ty);
    let mut act = vec![0u8; act_ty.bytes_for(cols).unwrap()];
    quant::quantize_activations(act_ty, &values[..cols], &mut act).unwrap();
    let kernel = quant::RowDot::new(ty, cols);
    let mut out = vec![0f32; rows];
    let row = |r: usize| &weights[r * row_bytes..(r + 1) * row_bytes];
    let ahead_tiles = env("AHEAD", 1);
    for rep in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            for (r, o) in out.iter_mut().enumerate() {
                *o = kernel.dot(row(r), &act);
            }
        }
        let one_row = t.elapsed();
        let t = Instant::now();
        for _ in 0..reps {
            for (i, o) in out.chunks_exact_mut(8).enumerate() {
                let rows: [&[u8]; 8] = std::array::from_fn(|k| row(8 * i + k));
                let ahead = |k: usize| ((8 * i + 8 * k) * row_bytes).min(weights.len());
                let next = &weights[ahead(ahead_tiles)..ahead(ahead_tiles + 1)];
                o.copy_from_slice(&tile::dot_in_place(ty, &rows, &act, next));
            }
        }
        let in_place = t.elapsed();
        // Decoding on a packed matrix (Q4_0, Q4_1, Q5_0, Q8_0): one stream per eight rows.
        let packed =
            quant::packed::packable(ty).then(|| quant::packed::PackedRows::pack(ty, &weights, rows, row_bytes, |_| {}));
        let mut sums = Vec::new();
        if quant::packed::wants_sums(ty) {
            quant::packed::activation_sums(&act, &mut sums);
        }
        let t = Instant::now();
        if let Some(p) = &packed {
            for _ in 0..reps {
                for (g, o) in out.chunks_exact_mut(8).enumerate() {
                    let next = if g + 1 < p.groups { p.group(g + 1) } else { &[] };
                    o.copy_from_slice(&quant::packed::dot_group(p, g, &act, &sums, next));
                }
            }
        }
        let packed_time = t.elapsed();
        // Prompt processing: each unpacked tile meets 64 activation rows (timed per row pair).
        let t = Instant::now();
        let mut tile = tile::Tile::default();
        for _ in 0..reps.div_ceil(64) {
            for (i, o) in out.chunks_exact_mut(8).enumerate() {
                let rows: [&[u8]; 8] = std::array::from_fn(|k| row(8 * i + k));
                tile.load(ty, &rows);
                for _ in 0..64 {
                    o.copy_from_slice(&tile.dot(&act));
                }
            }
        }
        let unpacked = t.elapsed().mul_f64(reps as f64 / (reps.div_ceil(64) * 64) as f64);
        println!("{ty} rep {rep}: one row at a time {one_row:?}, eight in place {in_place:?}, packed {packed_time:?}, unpacked tile x64 {unpacked:?} (per as many products)");
    }
}

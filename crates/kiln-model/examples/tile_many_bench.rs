//! Timing of prompt processing's weight product for one 64-token chunk: every eight-row tile
//! unpacked once and met by the 64 activation rows (`Tile::dot_many`), and the whole
//! `ops::matmul_prepared` (same, in parallel, with tile loading). Not a test; numbers go to
//! docs/LOG.md.
//!
//! `TY=q4_0|q4_1|q8_0 ROWS=N COLS=K REPS=R RAYON_NUM_THREADS=1 cargo run --release -p kiln-model --example tile_many_bench`
use kiln_gguf::GgmlType;
use kiln_model::quant::{self, tile};
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    let ty = match std::env::var("TY").as_deref() {
        Ok("q4_1") => GgmlType::Q4_1,
        Ok("q8_0") => GgmlType::Q8_0,
        _ => GgmlType::Q4_0,
    };
    let (rows, cols, reps, acts_rows) = (env("ROWS", 1536) / 8 * 8, env("COLS", 576), env("REPS", 20), 64);
    let mut seed = 1u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed % 2000) as f32 / 1000.0 - 1.0
    };
    let values: Vec<f32> = (0..rows.max(acts_rows) * cols).map(|_| next()).collect();
    let row_bytes = ty.bytes_for(cols).unwrap();
    let mut weights = vec![0u8; row_bytes * rows];
    for (src, dst) in values.chunks(cols).zip(weights.chunks_mut(row_bytes)) {
        quant::quantize_row(ty, src, dst).unwrap();
    }
    let act_ty = quant::vec_dot_type(ty);
    let act_bytes = act_ty.bytes_for(cols).unwrap();
    let mut acts = vec![0u8; act_bytes * acts_rows];
    for (src, dst) in values.chunks(cols).zip(acts.chunks_mut(act_bytes)) {
        quant::quantize_activations(act_ty, src, dst).unwrap();
    }
    let prepared = tile::Activations::new(ty, &acts, act_bytes, acts_rows);
    let mut out = vec![0f32; rows * acts_rows];
    let mut tile = tile::Tile::default();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        for (i, chunk) in weights.chunks_exact(8 * row_bytes).enumerate() {
            let tile_rows: [&[u8]; 8] = std::array::from_fn(|k| &chunk[k * row_bytes..(k + 1) * row_bytes]);
            tile.load(ty, &tile_rows);
            tile.dot_many(&prepared, |t, v| out[t * rows + 8 * i..][..8].copy_from_slice(v));
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let macs = (rows * cols * acts_rows) as f64;
    println!(
        "{ty} {rows}x{cols} x {acts_rows} rows, dot_many: best {:.1} us, {:.1} GMAC/s, checksum {:.3}",
        best * 1e6,
        macs / best / 1e9,
        out.iter().sum::<f32>()
    );
    let w = kiln_model::weights::QMatrix::from_bytes(ty, rows, cols, weights.clone());
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        kiln_model::ops::matmul_prepared(&w, &acts, acts_rows, &mut out);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{ty} {rows}x{cols} x {acts_rows} rows, matmul_prepared: best {:.1} us, {:.1} GMAC/s, checksum {:.3}",
        best * 1e6,
        macs / best / 1e9,
        out.iter().sum::<f32>()
    );
}

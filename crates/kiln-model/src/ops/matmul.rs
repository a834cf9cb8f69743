//! Weight matrices times activation rows, most of the time of a forward pass. Rows of the
//! weights are split across the worker threads; each weight row is read once for all
//! activation rows. Every output row is bit-identical to a one-row product, whatever the
//! number of rows and whichever path a matrix takes (packed, in place, unpacked tiles, row
//! by row): batching requests together or splitting a prompt differently never changes a
//! result.

use crate::quant::{self, packed::PackedRows, tile::Tile, tile::TILE_ROWS};
use crate::weights::QMatrix;
use rayon::prelude::*;

/// Converts `n_rows` rows of `x` into the activation format `w` multiplies with.
pub fn prepare_activations(w: &QMatrix, x: &[f32], n_rows: usize, buf: &mut Vec<u8>) {
    let ty = quant::vec_dot_type(w.ty);
    let row_bytes = ty.bytes_for(w.cols).expect("activation row is whole blocks");
    buf.resize(row_bytes * n_rows, 0);
    for (xr, br) in x.chunks_exact(w.cols).zip(buf.chunks_exact_mut(row_bytes)).take(n_rows) {
        quant::quantize_activations(ty, xr, br).expect("every vec_dot type can be quantized to");
    }
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

/// `out[t][r] = W[r] · x[t]` for `n_rows` activation rows prepared by [`prepare_activations`].
pub fn matmul_prepared(w: &QMatrix, acts: &[u8], n_rows: usize, out: &mut [f32]) {
    matmul_prepared_fused([w], acts, n_rows, [out]);
}

/// [`matmul_prepared`] for several matrices that take the same activations (queries, keys
/// and values; gate and up), in one parallel pass: a decoding step, a few microseconds of
/// work per matrix, then waits for its threads once rather than once per matrix. Each output
/// has the bits of its own `matmul_prepared`. Needs [`same_activations`] for every pair.
pub fn matmul_prepared_fused<const N: usize>(ws: [&QMatrix; N], acts: &[u8], n_rows: usize, outs: [&mut [f32]; N]) {
    let act_bytes = quant::RowDot::new(ws[0].ty, ws[0].cols).act_bytes();
    assert!(acts.len() >= n_rows * act_bytes);
    assert!(ws.iter().all(|w| same_activations(w, ws[0])), "fused products share their activations");
    let products: [Product; N] = std::array::from_fn(|k| {
        assert!(outs[k].len() >= n_rows * ws[k].rows);
        Product::new(ws[k], acts, act_bytes, n_rows)
    });
    let outs = outs.map(|o| SendPtr(o.as_mut_ptr()));
    // Activation block sums, for the packed kernels (the same for every product).
    let wants_sums = products.iter().any(Product::wants_sums);
    let mut sums = if wants_sums { ACTIVATION_SUMS.take() } else { Vec::new() };
    if wants_sums {
        sums.clear();
        for t in 0..n_rows {
            quant::packed::activation_sums(&acts[t * act_bytes..(t + 1) * act_bytes], &mut sums);
        }
    }
    let mut starts = [0; N];
    let mut total = 0;
    for (start, p) in starts.iter_mut().zip(&products) {
        *start = total;
        total += p.units;
    }
    for_chunks(total, |u0, u1, tile| {
        for (k, p) in products.iter().enumerate() {
            let (a, b) = (u0.max(starts[k]), u1.min(starts[k] + p.units));
            if a < b {
                p.run(a - starts[k], b - starts[k], &sums, &outs[k], tile);
            }
        }
    });
    if wants_sums {
        // Taken out rather than borrowed: while this thread waits for the tasks, rayon may
        // hand it another product (of another model or request) that wants the buffer too.
        ACTIVATION_SUMS.set(sums);
    }
}

thread_local! {
    /// Activation block sums for the packed kernels, kept between products.
    static ACTIVATION_SUMS: std::cell::Cell<Vec<i32>> = const { std::cell::Cell::new(Vec::new()) };
}

struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// From this many activation rows on, unpacking weights into a tile pays for itself.
const UNPACK_MIN_ROWS: usize = 8;

/// Up to this many activation rows, packed matrices with a several-row kernel
/// ([`quant::packed::several_rows_kernel`]) stay packed: four rows sharing one unpacking beat
/// unpacking into a tile that only 8–16 rows meet (a speculative check, a batch of requests;
/// at 16 rows 1.15–1.2× faster on SmolLM2 and a 1B model, `examples/check_cost`).
const PACKED_MAX_ROWS: usize = 16;

/// One matrix of a (fused) product and how its rows are computed; `units` are tiles of eight
/// rows for the tile types, single rows otherwise.
struct Product<'a> {
    w: &'a QMatrix,
    acts: &'a [u8],
    act_bytes: usize,
    n_rows: usize,
    units: usize,
    path: Path<'a>,
}

enum Path<'a> {
    /// Eight rows at a time ([`quant::tile`]): the whole groups read packed where the matrix
    /// keeps them so, and unpacked into tiles when many activation rows share them.
    Tiles { packed: Option<&'a PackedRows>, prepared: Option<quant::tile::Activations<'a>> },
    /// Row by row (K-quants, floats), four activation rows per pass.
    Rows(quant::RowDot),
}

impl<'a> Product<'a> {
    fn new(w: &'a QMatrix, acts: &'a [u8], act_bytes: usize, n_rows: usize) -> Product<'a> {
        let (units, path) = if quant::tile::supported(w.ty) {
            let unpack_from = if w.packed().is_some() && quant::packed::several_rows_kernel(w.ty) {
                PACKED_MAX_ROWS + 1
            } else {
                UNPACK_MIN_ROWS
            };
            let prepared =
                (n_rows >= unpack_from).then(|| quant::tile::Activations::new(w.ty, acts, act_bytes, n_rows));
            (w.rows.div_ceil(TILE_ROWS), Path::Tiles { packed: w.packed(), prepared })
        } else {
            (w.rows, Path::Rows(quant::RowDot::new(w.ty, w.cols)))
        };
        Product { w, acts, act_bytes, n_rows, units, path }
    }

    /// Whether the packed kernels run (they take activation block sums).
    fn wants_sums(&self) -> bool {
        matches!(self.path, Path::Tiles { packed: Some(_), prepared: None }) && quant::packed::wants_sums(self.w.ty)
    }

    fn act(&self, t: usize) -> &'a [u8] {
        &self.acts[t * self.act_bytes..(t + 1) * self.act_bytes]
    }

    /// Units `a..b` into `out`.
    fn run(&self, a: usize, b: usize, sums: &[i32], out: &SendPtr, tile: &mut Tile) {
        let w = self.w;
        // SAFETY (every writer): each (t, r) is written by exactly one task; `out` holds
        // `n_rows · w.rows` values and outlives the pass.
        let write = |t: usize, r: usize, v: f32| unsafe { *out.0.add(t * w.rows + r) = v };
        match &self.path {
            Path::Rows(kernel) => {
                let (data, row_bytes) = (w.data(), w.row_bytes());
                for r in a..b {
                    let wr = &data[r * row_bytes..(r + 1) * row_bytes];
                    let mut t = 0;
                    while self.n_rows - t >= 4 {
                        let v =
                            kernel.dot_rows::<4>(wr, [self.act(t), self.act(t + 1), self.act(t + 2), self.act(t + 3)]);
                        v.iter().enumerate().for_each(|(k, &v)| write(t + k, r, v));
                        t += 4;
                    }
                    for t in t..self.n_rows {
                        write(t, r, kernel.dot(wr, self.act(t)));
                    }
                }
            }
            Path::Tiles { packed, prepared } => {
                for i in a..b {
                    let r0 = i * TILE_ROWS;
                    let r1 = (r0 + TILE_ROWS).min(w.rows);
                    // One copy of up to eight values (a single store for a whole tile).
                    // SAFETY: as `write`; rows r0..r1 of output row t.
                    let write_tile = |t: usize, v: &[f32; TILE_ROWS]| unsafe {
                        let dst = out.0.add(t * w.rows + r0);
                        if r1 - r0 == TILE_ROWS {
                            dst.cast::<[f32; TILE_ROWS]>().write_unaligned(*v);
                        } else {
                            std::ptr::copy_nonoverlapping(v.as_ptr(), dst, r1 - r0);
                        }
                    };
                    let more = i + 1 < b;
                    match packed.filter(|p| i < p.groups) {
                        Some(p) => self.packed_tile(p, i, more, sums, prepared.as_ref(), tile, write_tile),
                        None => self.in_place_tile(r0, r1, more, i == a, prepared.as_ref(), tile, write_tile),
                    }
                }
            }
        }
    }

    /// Tile `i` of a packed matrix.
    #[allow(clippy::too_many_arguments)]
    fn packed_tile(
        &self,
        p: &PackedRows,
        i: usize,
        more: bool,
        sums: &[i32],
        prepared: Option<&quant::tile::Activations>,
        tile: &mut Tile,
        write: impl FnMut(usize, &[f32; TILE_ROWS]),
    ) {
        let next = if more && i + 1 < p.groups { p.group(i + 1) } else { &[] };
        match prepared {
            Some(acts) => {
                tile.load_packed(self.w.ty, p.group(i), self.w.row_bytes());
                quant::prefetch(next);
                tile.dot_many(acts, write);
            }
            None => {
                let sums = if self.wants_sums() { &sums[..self.n_rows * p.blocks] } else { &[] };
                // No software prefetch of the next group here: a packed matrix is one stream,
                // which the hardware prefetcher follows, and fetching ahead in the kernel
                // measured slower (decoding a 1B Q4_0 model 31 → 38 tok/s without it, SmolLM2
                // 191 → 214, four alternated rounds each).
                quant::packed::dot_group_rows(p, i, self.acts, self.act_bytes, self.n_rows, sums, &[], write);
            }
        }
    }

    /// Rows `r0..r1` read where they lie in the file.
    #[allow(clippy::too_many_arguments)]
    fn in_place_tile(
        &self,
        r0: usize,
        r1: usize,
        more: bool,
        first: bool,
        prepared: Option<&quant::tile::Activations>,
        tile: &mut Tile,
        write: impl FnMut(usize, &[f32; TILE_ROWS]),
    ) {
        let w = self.w;
        let (data, row_bytes) = (w.data(), w.row_bytes());
        let mut rows: [&[u8]; TILE_ROWS] = [&[]; TILE_ROWS];
        for (slot, r) in rows.iter_mut().zip(r0..r1) {
            *slot = &data[r * row_bytes..(r + 1) * row_bytes];
        }
        let rows = &rows[..r1 - r0];
        // The next eight rows lie right after these: fetched while these are computed.
        let next_end = if more { (r1 + TILE_ROWS).min(w.rows) } else { r1 };
        let next = &data[r1 * row_bytes..next_end * row_bytes];
        if first {
            quant::prefetch(&data[r0 * row_bytes..r1 * row_bytes]);
        }
        match prepared {
            Some(acts) => {
                tile.load(w.ty, rows);
                // Many dot products follow: time enough for the next rows to arrive.
                quant::prefetch(next);
                tile.dot_many(acts, write);
            }
            None => {
                let mut write = write;
                for t in 0..self.n_rows {
                    write(t, &quant::tile::dot_in_place(w.ty, rows, self.act(t), if t == 0 { next } else { &[] }));
                }
            }
        }
    }
}

/// Splits `0..n` into a few contiguous chunks per thread (evening out the load without paying
/// for many tiny tasks) and runs `f(start, end, tile)` on each in parallel, with the worker
/// thread's own [`Tile`] (kept from product to product: a fresh one per task cost 5 % of a
/// prompt in allocating and filling).
fn for_chunks(n: usize, f: impl Fn(usize, usize, &mut Tile) + Sync + Send) {
    thread_local! {
        static TILE: std::cell::Cell<Tile> = std::cell::Cell::new(Tile::default());
    }
    let n_chunks = (rayon::current_num_threads() * 4).min(n).max(1);
    let chunk = n.div_ceil(n_chunks);
    (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
        // Taken, not borrowed, for the same reason as the activation sums.
        let mut tile = TILE.take();
        f(c * chunk, ((c + 1) * chunk).min(n), &mut tile);
        TILE.set(tile);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_gguf::GgmlType;

    use crate::test_values as values;

    fn matrix(ty: GgmlType, rows: usize, cols: usize, seed: u32) -> QMatrix {
        let row_bytes = ty.bytes_for(cols).unwrap();
        let mut bytes = vec![0u8; rows * row_bytes];
        for (src, dst) in values(seed, rows * cols).chunks(cols).zip(bytes.chunks_mut(row_bytes)) {
            quant::quantize_row(ty, src, dst).unwrap();
        }
        QMatrix::from_bytes(ty, rows, cols, bytes)
    }

    #[test]
    fn matmul_rows_do_not_depend_on_the_batch() {
        // 256 columns: one K-quant super-block.
        let (rows, cols) = (37, 256);
        // Up to 21 rows: the packed kernels' passes of four, two and one (up to 16 rows), and
        // the unpacked-tile kernels' passes of eight, four and one (from 17, and from 8 for the
        // types without several-row packed kernels) all run.
        const MOST: usize = 21;
        let x = values(12345, MOST * cols);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4K,
            GgmlType::Q6K,
            GgmlType::F32,
        ] {
            let w = matrix(ty, rows, cols, 54321);
            let mut buf = Vec::new();
            let mut alone = vec![0f32; MOST * rows];
            for t in 0..MOST {
                matmul(&w, &x[t * cols..(t + 1) * cols], 1, &mut buf, &mut alone[t * rows..(t + 1) * rows]);
            }
            for n in [2, 3, 4, 5, 7, 8, 9, 12, 16, 17, MOST] {
                let mut together = vec![0f32; n * rows];
                matmul(&w, &x[..n * cols], n, &mut buf, &mut together);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&together), bits(&alone[..n * rows]), "{ty}, {n} rows");
            }
        }
    }

    #[test]
    fn fused_products_give_each_matrix_its_own_bits() {
        let cols = 256;
        // Packed groups with tails, and the row-by-row path: (types of the three matrices).
        for tys in [
            [GgmlType::Q4_0, GgmlType::Q4_0, GgmlType::Q8_0],
            [GgmlType::Q4K, GgmlType::Q4K, GgmlType::Q6K],
            [GgmlType::Q4_1; 3],
        ] {
            let ws = [matrix(tys[0], 37, cols, 1), matrix(tys[1], 16, cols, 2), matrix(tys[2], 21, cols, 3)];
            for n in [1, 3, 8, 13] {
                let x = values(99, n * cols);
                let mut acts = Vec::new();
                prepare_activations(&ws[0], &x, n, &mut acts);
                let mut alone: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; n * w.rows]).collect();
                for (w, out) in ws.iter().zip(alone.iter_mut()) {
                    matmul_prepared(w, &acts, n, out);
                }
                let (mut a, mut b, mut c) = (vec![0f32; n * 37], vec![0f32; n * 16], vec![0f32; n * 21]);
                matmul_prepared_fused([&ws[0], &ws[1], &ws[2]], &acts, n, [&mut a, &mut b, &mut c]);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                for (fused, alone) in [a, b, c].iter().zip(&alone) {
                    assert_eq!(bits(fused), bits(alone), "{tys:?}, {n} rows");
                }
            }
        }
    }
}
